"""Bounded transcripts: each chat_room example (Rust, C, Python) queues at
most 1,000 lines (and 1 MiB) for stdout. When stdout cannot keep up (a pipe
nobody reads, a paused terminal) further lines are dropped and counted, and
`* N lines not shown` is printed where they would have been once the printer
catches up. The room's event handler never waits for stdout, so the room
keeps serving; the program's memory stays bounded; SIGTERM still stops it.

Every wait is bounded and waits for something: a reply from the room, a
line on a pipe, a process exit. Needs the examples built
(`cargo build --release --examples`, `make -C examples/c`); a language whose
build is missing is skipped.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from typing import List, Tuple

import pytest
from conftest import FAST_CLOSE, WAIT, LineReader, start_server_process
from test_examples import program

import tcpchat

LANGS = ["rust", "c", "python"]

#: Lines the sender floods the room with, in batches of BATCH.
LINES = 200_000
BATCH = 2_000
#: Each line's text after its number: long enough that keeping every line
#: would cost the program far more than the bound below.
PAYLOAD = "x" * 200
#: Bounds on the program's resident memory while its stdout is blocked.
MAX_RSS_MIB = 64
MAX_GROWTH_MIB = 8
#: How soon a line must reach another member after the flood.
PROMPT = 5.0

FIRST = "hello \x1b[2J room"  # escaped in the transcript, as always
FIRST_SHOWN = "guest1: hello \\x1b[2J room"
NOTICE = re.compile(r"\* (\d+) lines not shown\n")
LINE = re.compile(r"guest1: line (\d+) " + PAYLOAD + "\n")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def member(port: int) -> tcpchat.Connection:
    conn = tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=FAST_CLOSE)
    welcome = conn.recv_text()
    assert welcome is not None and welcome.startswith("* welcome"), welcome
    return conn


class Flood:
    """guest1 (the sender) and guest2 (the watcher) in a room; the sender
    says numbered lines in batches, each batch awaited at the watcher (so
    the watcher, reading as fast as it can, is never dropped as slow)."""

    def __init__(self, port: int) -> None:
        self.sender = member(port)
        self.watcher = member(port)
        assert self.sender.recv() == b"* guest2 joined"
        self.sent = 0  # lines said, FIRST and the probe included
        self.next = 0  # the number of the next numbered line

    def say(self, text: str) -> float:
        """Say one line; the seconds it took to reach the watcher."""
        started = time.monotonic()
        self.sender.send(text)
        # The room relays it escaped, as the transcript shows it.
        assert self.watcher.recv_text() == f"guest1: {tcpchat.escape_text(text.encode())}"
        self.sent += 1
        return time.monotonic() - started

    def lines(self, count: int) -> None:
        while count > 0:
            n = min(BATCH, count)
            msgs = [f"line {i} {PAYLOAD}" for i in range(self.next, self.next + n)]
            self.sender.send_many(msgs)
            got: List[bytes] = []
            while len(got) < n:
                more = self.watcher.recv_many(max=n - len(got))
                assert more, "the room closed the watcher"
                got.extend(more)
            assert got[0] == f"guest1: {msgs[0]}".encode() and got[-1] == f"guest1: {msgs[-1]}".encode()
            self.next += n
            self.sent += n
            count -= n

    def handled(self) -> None:
        """Wait until the room has handled every line said so far: it
        answers the sender's /who after them, and hands each line to the
        program's event handler before reading the next."""
        self.sender.send("/who")
        assert self.sender.recv() == b"* 2 online: guest1, guest2"

    def close(self) -> None:
        for c in (self.sender, self.watcher):
            try:
                c.close()
            except tcpchat.Error:
                pass


def check_transcript(lines: List[str], said: int) -> int:
    """The transcript: FIRST, then numbered lines in order, each gap marked
    by one `* N lines not shown` saying exactly how many are missing there.
    Returns the lines not shown."""
    assert lines and lines[0] == FIRST_SHOWN + "\n", lines[:3]
    expected = 0  # the next numbered line
    shown, not_shown, notices = 1, 0, 0
    after_line = True
    for line in lines[1:]:
        notice = NOTICE.fullmatch(line)
        if notice:
            n = int(notice.group(1))
            assert n > 0 and after_line, (line, expected)
            expected += n
            not_shown += n
            notices += 1
            after_line = False
            continue
        m = LINE.fullmatch(line)
        if m is None:
            assert line == "guest1: probe\n", line  # the last line said
            assert expected == said - 2, (expected, said)
        else:
            assert int(m.group(1)) == expected, (line, expected)
        expected += 1
        shown += 1
        after_line = True
    assert notices > 0, "no `* N lines not shown`"
    assert shown + not_shown == said, (shown, not_shown, said)
    return not_shown


def stop(proc: "subprocess.Popen[str]") -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(WAIT)


@pytest.mark.parametrize("lang", LANGS)
def test_blocked_stdout_keeps_the_room_serving_in_bounded_memory(lang: str) -> None:
    proc, err, port = start_server_process(program(lang, "chat_room") + ["--port", "0", "--line-rate", "0"])
    flood = None
    try:
        flood = Flood(port)
        flood.say(FIRST)
        # Enough to fill the pipe and the program's queue: from here on,
        # lines are dropped.
        flood.lines(10_000)
        flood.handled()
        rss: List[Tuple[int, float]] = [(flood.sent, rss_mib(proc.pid))]
        for _ in range(4):
            flood.lines((LINES - 10_000) // 4)
            flood.handled()
            rss.append((flood.sent, rss_mib(proc.pid)))
        # The room still serves, promptly, while stdout is blocked.
        took = flood.say("probe")
        assert took < PROMPT, f"a line took {took:.1f} s to reach the other member"
        figures = ", ".join(f"{mib:.1f} MiB after {n} lines" for n, mib in rss)
        print(f"{lang} chat_room, stdout blocked: {figures}")
        assert max(mib for _, mib in rss) < MAX_RSS_MIB, figures
        assert rss[-1][1] - rss[0][1] < MAX_GROWTH_MIB, figures

        # Start reading: the printer catches up and says what it left out.
        assert proc.stdout is not None
        out = LineReader(proc.stdout)
        while not NOTICE.fullmatch(out.next()):
            pass
        proc.send_signal(signal.SIGTERM)
        for c in (flood.sender, flood.watcher):
            assert c.recv() == b"* server shutting down"
        flood.close()  # the room's graceful close waits for ours
        out.rest()  # to the end, into out.seen
        code = proc.wait(WAIT)
    finally:
        if flood is not None:
            flood.close()
        stop(proc)
    log = err.rest()
    assert code == 0, log
    lines = out.seen
    not_shown = check_transcript(lines, flood.sent)
    assert 0 < not_shown < flood.sent
    assert f"chat_room: stopped; 2 joined, 0 refused, {flood.sent} messages, 0 dropped" in log


@pytest.mark.parametrize("lang", LANGS)
def test_sigterm_stops_the_room_while_stdout_is_blocked(lang: str) -> None:
    """What is still queued when the room stops is written if stdout takes
    it within 2 seconds; a stdout that never drains cannot hold the program."""
    proc, err, port = start_server_process(program(lang, "chat_room") + ["--port", "0", "--line-rate", "0"])
    flood = None
    try:
        flood = Flood(port)
        flood.lines(5_000)  # the pipe and the queue are full
        flood.handled()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for c in (flood.sender, flood.watcher):
            assert c.recv() == b"* server shutting down"
        flood.close()  # the room's graceful close waits for ours
        code = proc.wait(WAIT)
        took = time.monotonic() - started
    finally:
        if flood is not None:
            flood.close()
        stop(proc)
    log = err.rest()
    assert code == 0, log
    assert took < 2 + 3, f"stopping took {took:.1f} s"
    assert "chat_room: stopped; 2 joined, 0 refused, 5000 messages, 0 dropped" in log
