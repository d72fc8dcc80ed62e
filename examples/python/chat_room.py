#!/usr/bin/env python3
"""A chat room: every line a client sends reaches every other client, as
`NAME: TEXT`. Clients speak plain lines, so `nc` and `telnet` can join;
`/nick NAME`, `/who` and `/quit` are the commands. The transcript of
messages goes to stdout, logs (joins, leaves, drops) to stderr. Ctrl-C
(SIGINT) or SIGTERM closes every client gracefully and stops.

The transcript waits for stdout in a bounded queue: at most 1,000 lines and
1 MiB. When stdout cannot keep up (a pipe nobody reads, a paused terminal),
the lines that do not fit are dropped and counted, and `* N lines not shown`
is printed where they were once stdout takes the lines before them; the room
itself never waits for stdout. When the room stops, what is still queued is
written if stdout takes it within 2 seconds. The same in the Rust and C
versions.

    python3 examples/python/chat_room.py --port 9000
    nc 127.0.0.1 9000        # in as many terminals as you like
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
import threading
from typing import Any, Deque, Dict, Optional

from _common import _whole_number, die, eprint, parser, printable, server_config, stderr_logger, tcpchat, warn_if_open

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}

#: The most lines, and bytes of them, waiting for stdout; the same in the
#: Rust and C versions.
TRANSCRIPT_LINES = 1000
TRANSCRIPT_BYTES = 1 << 20
#: How long a stopped room waits for stdout to take the rest of the transcript.
FINISH_WAIT = 2.0

EPILOG = """The transcript (NAME: TEXT) goes to stdout through a queue of at most 1000 lines
and 1 MiB; lines stdout cannot take in time are dropped and counted (`* N lines
not shown`). Logs go to stderr."""


class Queued:
    """A line of the transcript, waiting for stdout."""

    __slots__ = ("line", "dropped_after")

    def __init__(self, line: bytes) -> None:
        self.line = line  # `NAME: TEXT` as the member typed it
        self.dropped_after = 0  # lines dropped right after this one: the queue was full


class Transcript:
    """The transcript's queue to stdout, bounded. The room's event handler
    adds to it without ever waiting for stdout; the printer thread takes
    from it."""

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._lines: Deque[Queued] = collections.deque()
        self._bytes = 0
        self._done = False  # the room has stopped: no more lines

    def add(self, line: bytes) -> None:
        """Queue ``NAME: TEXT``, or, when the queue is full, count it as
        dropped after the last line queued. Never waits for the printer."""
        with self._ready:
            lines = self._lines
            # An empty queue takes any line, so that a long one is shown too.
            if not lines or (len(lines) < TRANSCRIPT_LINES and self._bytes + len(line) <= TRANSCRIPT_BYTES):
                lines.append(Queued(line))
                self._bytes += len(line)
                self._ready.notify()
            else:
                lines[-1].dropped_after += 1

    def next(self) -> Optional[Queued]:
        """The next line to print; ``None`` once the room has stopped and
        every line has been taken."""
        with self._ready:
            while not self._lines and not self._done:
                self._ready.wait()
            if not self._lines:
                return None
            entry = self._lines.popleft()
            self._bytes -= len(entry.line)
            return entry

    def finish(self) -> None:
        with self._ready:
            self._done = True
            self._ready.notify()


def print_transcript(transcript: Transcript) -> None:
    """Print the transcript until it ends, with os.write on descriptor 1
    rather than sys.stdout: a printer blocked on a stdout nobody reads then
    holds no lock that the interpreter's exit would wait for. Once stdout
    fails (closed), lines are taken and dropped: the queue never stops
    draining."""
    ok = True
    while True:
        entry = transcript.next()
        if entry is None:
            return
        if not ok:
            continue
        line, dropped_after = entry.line, entry.dropped_after
        # Names and text as members typed them: made safe for the terminal;
        # UTF-8 bytes, as the Rust and C examples print, whatever the locale.
        data = f"{printable(line)}\n".encode()
        if dropped_after:
            data += f"* {dropped_after} lines not shown\n".encode()
        try:
            while data:
                data = data[os.write(1, data):]
        except OSError:  # stdout closed: keep serving
            ok = False


def raise_fd_limit() -> None:
    """A room holds one descriptor per client: lift the soft limit on open
    files to the hard limit (often 1024 soft), as servers do."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main() -> int:
    flags = parser(
        "chat_room", "A chat room: every line a client sends reaches every other client.",
        listen=True, max_clients=True, framing=False,
        max_clients_help="clients in the room at once; one more is told the room is full"
        " (default 1024)",
    )
    flags.add_argument("--line-rate", type=_whole_number, metavar="N", default=None,
                       help="lines a second each member may send, in bursts of 10 N; 0 = no rate"
                       " (default 50)")
    flags.epilog = EPILOG
    flags.formatter_class = argparse.RawDescriptionHelpFormatter  # the epilog as written, as in Rust and C
    args = flags.parse_args()
    config = server_config(flags, args)

    # Block SIGINT and SIGTERM in this thread before any other starts, so
    # every thread inherits the mask and the signals wait for sigwait below
    # instead of interrupting the room.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    raise_fd_limit()

    try:
        rate: Dict[str, Any] = {}
        if args.line_rate == 0:
            rate = {"lines_per_second": 0, "bytes_per_second": 0, "flood_timeout": None}
        elif args.line_rate is not None:
            rate = {"lines_per_second": args.line_rate, "line_burst": 10 * args.line_rate}
        room = tcpchat.Room(args.host, args.port, config=config, **rate)
    except tcpchat.Error as e:
        die("chat_room", e)
    # The first line on stderr, with the real port: scripts and tests read it.
    eprint(f"listening on {room.address}")
    warn_if_open(room.address, config)
    tcpchat.set_log_handler(stderr_logger, tcpchat.LogLevel.INFO)

    # The handler runs on the room's loop, which must never wait for a slow
    # stdout: it hands the transcript to a printer thread through a bounded
    # queue.
    transcript = Transcript()

    @room.on_event
    def on_event(event: tcpchat.RoomEvent) -> None:
        if event.kind is tcpchat.RoomEventKind.MESSAGE:
            transcript.add(f"{event.name}: {event.text}".encode())

    # A daemon: one blocked on a stdout nobody reads must not keep the
    # program from exiting.
    printer = threading.Thread(target=print_transcript, args=(transcript,), name="transcript", daemon=True)
    printer.start()

    def wait_for_signal() -> None:
        signum = signal.sigwait(STOP_SIGNALS)
        eprint(f"chat_room: got signal {int(signum)}, closing the room")
        room.shutdown()  # thread-safe: run() below returns once every client is closed

    threading.Thread(target=wait_for_signal, name="signals", daemon=True).start()

    try:
        with room:
            stats = room.run()  # the signals are blocked here: never interrupted
    except tcpchat.Error as e:
        die("chat_room", e)
    finally:
        # The printer writes what is left, if stdout takes it soon.
        transcript.finish()
        printer.join(FINISH_WAIT)
    eprint(
        f"chat_room: stopped; {stats.joined} joined, {stats.refused} refused, "
        f"{stats.messages} messages, {stats.dropped} dropped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
