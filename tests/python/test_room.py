"""tcpchat.Room over loopback: broadcast with names, order and no loss with
several senders, the commands and notices, limits, a room driven from Python
event handlers (including one that posts and one that raises), posts and
shutdown from other threads, Ctrl-C in run(), garbage collection, and the
chat_room example programs (Python, Rust, C) seen by raw socket and nc
clients.

Clients are plain sockets read line by line, every read bounded by WAIT;
nothing sleeps to synchronise: a test waits for a line, a queue, a thread or
a process.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import (
    C_EXAMPLES,
    FAST_CLOSE,
    PY_EXAMPLES,
    REPO,
    RUST_EXAMPLES,
    WAIT,
    Background,
    LineReader,
    default_sigint,
    env_for_children,
    start_server_process,
)

import tcpchat
from tcpchat import LeaveReason, RoomEvent, RoomEventKind

WELCOME = "* welcome, you are {} (commands: /nick NAME, /who, /quit)"
CLOSING = "* server shutting down"


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


class Member:
    """One client of a room: a plain socket (as nc would be), read line by
    line; every read waits at most WAIT."""

    def __init__(self, port: int, join: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.name = ""
        self._lines: Deque[bytes] = collections.deque()
        self._partial = b""
        self._eof = False
        if join:
            welcome = self.line()
            prefix = "* welcome, you are "
            assert welcome.startswith(prefix), welcome
            self.name = welcome[len(prefix):].split(" ", 1)[0]
            assert welcome == WELCOME.format(self.name)

    @property
    def address(self) -> tcpchat.Address:
        host, port = self.sock.getsockname()[:2]
        return tcpchat.Address(host, port)

    def send(self, line: str) -> None:
        self.send_bytes(line.encode("utf-8") + b"\n")

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read once more; False at end of stream (a reset counts too)."""
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self._eof = True
            return False
        parts = (self._partial + chunk).split(b"\n")
        self._partial = parts.pop()
        self._lines.extend(parts)
        return True

    def line(self) -> str:
        """The next line, without its newline."""
        while not self._lines:
            if self._eof or not self._fill():
                raise AssertionError(f"{self.name}: end of stream (partial line {self._partial!r})")
        return self._lines.popleft().decode("utf-8")

    def expect(self, want: str) -> None:
        got = self.line()
        assert got == want, f"{self.name} got {got!r}, expected {want!r}"

    def until_eof(self) -> List[str]:
        """Every line until the room closes the connection."""
        while not self._eof and self._fill():
            pass
        out = [line.decode("utf-8") for line in self._lines]
        self._lines.clear()
        if self._partial:
            out.append(self._partial.decode("utf-8", "replace") + " (no newline)")
        return out

    def close(self) -> None:
        self.sock.close()


def members(port: int, n: int) -> List[Member]:
    """``n`` members, each having seen the joins of those after it, so that
    every stream is at a known point."""
    out: List[Member] = []
    for _ in range(n):
        m = Member(port)
        for earlier in out:
            earlier.expect(f"* {m.name} joined")
        out.append(m)
    return out


@contextmanager
def started_room(handler: Any = None, **options: Any) -> Iterator[tcpchat.Room]:
    """A room on 127.0.0.1 (any free port) served on its own thread."""
    options.setdefault("close_timeout", FAST_CLOSE)
    room = tcpchat.Room(**options)
    try:
        if handler is not None:
            room.on_event(handler)
        room.start()
        yield room
    finally:
        room.close()


def event_queue(room: tcpchat.Room) -> "queue.Queue[RoomEvent]":
    """Install a handler putting every event on a queue."""
    q: "queue.Queue[RoomEvent]" = queue.Queue()
    room.on_event(q.put)
    return q


def next_event(q: "queue.Queue[RoomEvent]") -> RoomEvent:
    try:
        return q.get(timeout=WAIT)
    except queue.Empty:
        raise AssertionError(f"no event within {WAIT} s") from None


# The waits the room's event loop blocks in (epoll_wait and friends, poll).
_WAIT_SYSCALLS = {
    "x86_64": {"7", "232", "271", "281", "441"},
    "aarch64": {"22", "73", "441"},
}.get(platform.machine(), set())


def wait_until_waiting(pid: int) -> None:
    """Wait (bounded) until the process's main thread sleeps in the event
    loop's wait, so that a signal sent next interrupts it (a signal landing
    just before the wait is handled only when the wait ends: see
    conftest.wait_until_blocked). Reads /proc; without it, does nothing."""
    path = f"/proc/{pid}/syscall"
    if not _WAIT_SYSCALLS or not os.access(path, os.R_OK):
        return
    deadline = time.monotonic() + WAIT
    nr = "?"
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                nr = f.read().split(" ", 1)[0]
        except OSError:
            return
        if nr in _WAIT_SYSCALLS:
            return
        time.sleep(0.002)  # polling an observable state, bounded
    raise AssertionError(f"the child never waited in the event loop (last syscall {nr})")


# ----------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------


def test_every_line_reaches_every_other_client_with_the_senders_name() -> None:
    with started_room() as room:
        p = members(room.port, 3)
        assert [m.name for m in p] == ["guest1", "guest2", "guest3"]
        p[0].send("hello room")
        p[1].expect("guest1: hello room")
        p[2].expect("guest1: hello room")
        p[2].send("héllo ☃")
        p[0].expect("guest3: héllo ☃")
        p[1].expect("guest3: héllo ☃")
        # The senders got nothing back: their next line answers their /who.
        for m in (p[0], p[2]):
            m.send("/who")
            m.expect("* 3 online: guest1, guest2, guest3")
        assert room.stats() == tcpchat.RoomStats(joined=3, refused=0, messages=2, dropped=0, online=3)


def test_lines_from_several_senders_arrive_in_order_none_lost_none_doubled() -> None:
    clients, lines = 8, 300
    with started_room() as room:
        peers = members(room.port, clients)
        names = [m.name for m in peers]

        def talk(m: Member) -> Dict[str, int]:
            m.send_bytes(b"".join(f"line {i} from {m.name}\n".encode() for i in range(lines)))
            nxt: Dict[str, int] = {}
            for _ in range((clients - 1) * lines):
                sender, _, text = m.line().partition(": ")
                assert sender != m.name, "a sender got its own line back"
                n = nxt.get(sender, 0)
                assert text == f"line {n} from {sender}", f"{m.name}: out of order"
                nxt[sender] = n + 1
            return nxt

        workers = [Background(lambda m=m: talk(m), name=f"client {m.name}") for m in peers]
        for m, w in zip(peers, workers):
            assert w.result() == {n: lines for n in names if n != m.name}
        # Nothing more (no doubles) was queued: each client's next line is
        # the answer to its own /who.
        for m in peers:
            m.send("/who")
            m.expect(f"* {clients} online: " + ", ".join(names))
        assert room.stats().messages == clients * lines


def test_nick_ok_taken_invalid() -> None:
    with started_room() as room:
        p = members(room.port, 3)
        p[0].send("/nick alice")
        p[0].expect("* you are now known as alice")
        p[1].expect("* guest1 is now known as alice")
        p[2].expect("* guest1 is now known as alice")
        # Refusals go to the asker alone.
        p[1].send("/nick ALICE")
        p[1].expect("error: the name ALICE is taken")
        p[1].send("/nick bad name!")
        p[1].expect('error: invalid name "bad name!": use 1 to 32 letters, digits, _ or -')
        p[1].send("/nick " + "x" * 33)
        p[1].expect(f'error: invalid name "{"x" * 33}": use 1 to 32 letters, digits, _ or -')
        p[1].send("/nick")
        p[1].expect("error: usage: /nick NAME")
        p[1].send("/nick Bob_2-x")
        p[1].expect("* you are now known as Bob_2-x")
        p[1].send("/nick Bob_2-x")
        p[1].expect("* you are already known as Bob_2-x")
        # The others saw only the rename, then the next message.
        p[1].send("after")
        for m in (p[0], p[2]):
            m.expect("* guest2 is now known as Bob_2-x")
            m.expect("Bob_2-x: after")


def test_who_quit_help_unknown_and_notices() -> None:
    with started_room() as room:
        p = members(room.port, 3)
        p[2].send("/who")
        p[2].expect("* 3 online: guest1, guest2, guest3")
        p[2].send("/help")
        assert p[2].line().startswith("* commands: /nick NAME, /who, /quit")
        p[2].send("/frob it")
        p[2].expect("error: unknown command /frob (commands: /nick NAME, /who, /quit)")
        # An empty line is ignored; // escapes a leading slash.
        p[2].send("")
        p[2].send("//slash")
        p[0].expect("guest3: /slash")
        p[1].expect("guest3: /slash")
        p[2].send("/quit")
        p[2].expect("* bye")
        assert p[2].until_eof() == []
        p[0].expect("* guest3 left")
        p[1].expect("* guest3 left")
        # A member that just closes: the others are told too.
        p[1].close()
        p[0].expect("* guest2 left")
        p[0].send("/who")
        p[0].expect("* 1 online: guest1")


def test_invalid_utf8_is_refused_with_a_notice_to_the_sender_alone() -> None:
    with started_room() as room:
        p = members(room.port, 2)
        p[0].send_bytes(b"caf\xc3\x28 \xff\n")
        p[0].expect("error: your line is not valid UTF-8; it was not sent")
        p[0].send("still here")
        p[1].expect("guest1: still here")
        # \r\n line ends are fine.
        p[0].send_bytes("crlf ü\r\n".encode())
        p[1].expect("guest1: crlf ü")


def test_a_client_over_max_clients_gets_one_line_and_the_room_goes_on() -> None:
    with started_room(max_clients=2) as room:
        p = members(room.port, 2)
        extra = Member(room.port, join=False)
        assert extra.until_eof() == ["error: server full (2 clients); try again later"]
        p[0].send("still serving")
        p[1].expect("guest1: still serving")
        p[1].send("/quit")
        p[1].expect("* bye")
        p[0].expect("* guest2 left")
        c = Member(room.port)  # a place is free again
        p[0].expect(f"* {c.name} joined")
        stats = room.stats()
        assert (stats.refused, stats.online, stats.joined) == (1, 2, 3)


def test_settings_reach_the_room_line_length_and_idle_timeout() -> None:
    with started_room(max_message_size=64) as room:
        p = members(room.port, 2)
        # A line too long: a notice, then its sender is closed.
        p[1].send("x" * 65)
        assert p[1].until_eof() == ["error: line longer than 64 bytes; closing"]
        p[0].expect("* guest2 was dropped (line too long)")
        assert room.stats().dropped == 1
    with started_room(idle_timeout=0.2) as room:
        # A member that only reads stays; half a line is dropped after the
        # idle timeout.
        reader, talker = members(room.port, 2)
        a = Member(room.port)
        reader.expect(f"* {a.name} joined")
        talker.expect(f"* {a.name} joined")
        a.send_bytes(b"half a li")
        assert a.until_eof() == ["error: no complete line for 200ms; closing"]
        reader.expect(f"* {a.name} was dropped (unfinished line for too long)")
        talker.expect(f"* {a.name} was dropped (unfinished line for too long)")
        talker.send("still there?")
        reader.expect(f"{talker.name}: still there?")
        assert (room.stats().dropped, room.stats().online) == (1, 2)


def test_the_rate_settings_reach_the_room_and_a_flooder_is_dropped() -> None:
    with started_room(lines_per_second=1, line_burst=5, flood_timeout=0.3) as room:
        reader, flooder = members(room.port, 2)
        flooder.send_bytes(b"".join(b"line %d\n" % i for i in range(50)))
        assert flooder.until_eof() == ["error: excess flood"]
        got = []
        while True:
            line = reader.line()
            if line == f"* {flooder.name} was dropped (excess flood)":
                break
            got.append(line)
        # The burst and a line a second, never the 50.
        assert 5 <= len(got) <= 8, got
        assert got[:5] == [f"{flooder.name}: line {i}" for i in range(5)]
        assert room.stats().dropped == 1
    for bad in ({"line_burst": 0}, {"byte_burst": 0}, {"lines_per_second": -1}):
        with pytest.raises(tcpchat.InvalidArgumentError):
            tcpchat.Room(**bad)
    with pytest.raises(TypeError):
        tcpchat.Room(lines_per_second=1.5)  # type: ignore[arg-type]
    assert str(tcpchat.LeaveReason.FLOOD) == "flood"


def test_a_reader_that_stalls_is_dropped_past_queue_limit() -> None:
    # No rate: the sender goes as fast as it can (a test of the queue limit).
    with tcpchat.Room(
        queue_limit=16 * 1024, close_timeout=FAST_CLOSE, lines_per_second=0, bytes_per_second=0
    ) as room:
        events = event_queue(room)
        room.start()
        p = members(room.port, 2)
        # Joins last and never reads; a small receive buffer fills fast.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(WAIT)
        stalled.connect(("127.0.0.1", room.port))
        for m in p:
            m.expect("* guest3 joined")
        line = "y" * 1000
        dropped = False
        for i in range(20000):
            p[0].send(f"{i} {line}")
            got = p[1].line()
            if got == "* guest3 was dropped (too slow to read)":
                dropped = True
                break
            assert got == f"guest1: {i} {line}"
        assert dropped, "the stalled reader was never dropped"
        while True:
            ev = next_event(events)
            if ev.kind is RoomEventKind.LEAVE:
                break
        assert ev == RoomEvent(RoomEventKind.LEAVE, 3, "guest3", reason=LeaveReason.SLOW_READER)
        assert str(ev.reason) == "slow_reader"  # as the library's logs say it
        stalled.close()
        assert room.queue_limit == 16 * 1024


def iter_events(q: "queue.Queue[RoomEvent]") -> List[RoomEvent]:
    """The events queued so far."""
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


# ----------------------------------------------------------------------------
# Python event handlers
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["run", "start"])
def test_events_reach_the_handler_with_the_right_fields(mode: str) -> None:
    room = tcpchat.Room(close_timeout=FAST_CLOSE)
    events = event_queue(room)
    runner = Background(room.run, name="room") if mode == "run" else None
    if runner is None:
        room.start()
    try:
        a = Member(room.port)
        assert next_event(events) == RoomEvent(RoomEventKind.JOIN, 1, "guest1", address=a.address)
        b = Member(room.port)
        a.expect("* guest2 joined")
        assert next_event(events) == RoomEvent(RoomEventKind.JOIN, 2, "guest2", address=b.address)
        a.send("hi ☃")
        b.expect("guest1: hi ☃")
        assert next_event(events) == RoomEvent(RoomEventKind.MESSAGE, 1, "guest1", text="hi ☃")
        # A NUL inside a line is UTF-8 too: the event has the whole text,
        # the other members see it escaped (never a raw control).
        a.send_bytes(b"a\0b\n")
        b.expect("guest1: a\\x00b")
        assert next_event(events).text == "a\0b"
        a.send("/nick alice")
        a.expect("* you are now known as alice")
        ev = next_event(events)
        assert ev == RoomEvent(RoomEventKind.RENAME, 1, "alice", old_name="guest1")
        b.expect("* guest1 is now known as alice")
        b.send("/quit")
        b.expect("* bye")
        assert next_event(events) == RoomEvent(RoomEventKind.LEAVE, 2, "guest2", reason=LeaveReason.QUIT)
        a.expect("* guest2 left")
        c = Member(room.port)
        a.expect(f"* {c.name} joined")
        assert next_event(events).client_id == 3  # ids are never reused
        c.close()
        a.expect(f"* {c.name} left")
        assert next_event(events) == RoomEvent(RoomEventKind.LEAVE, 3, c.name, reason=LeaveReason.CLOSED)
        # Commands and refused lines are no events.
        a.send("/who")
        a.expect("* 1 online: alice")
        room.shutdown()
        assert a.until_eof() == [CLOSING]
        assert next_event(events) == RoomEvent(RoomEventKind.LEAVE, 1, "alice", reason=LeaveReason.SHUTDOWN)
        assert iter_events(events) == []
        if runner is not None:
            assert runner.result() == tcpchat.RoomStats(joined=3, refused=0, messages=2, dropped=0, online=0)
        with pytest.raises(dataclasses.FrozenInstanceError):
            ev.name = "x"  # type: ignore[misc]
    finally:
        room.close()


def test_the_handler_can_post_and_shut_the_room_down() -> None:
    room = tcpchat.Room(close_timeout=FAST_CLOSE)
    threads = set()

    @room.on_event
    def handler(ev: RoomEvent) -> None:
        threads.add(threading.get_ident())
        if ev.kind is RoomEventKind.MESSAGE and ev.text == "!ping":
            room.post(f"pong for {ev.name}")
        elif ev.kind is RoomEventKind.MESSAGE and ev.text == "!stop":
            room.shutdown()  # from the handler: returns at once

    runner = Background(room.run, name="room")
    try:
        p = members(room.port, 2)
        p[0].send("!ping")
        p[1].expect("guest1: !ping")
        p[1].expect("* pong for guest1")
        p[0].expect("* pong for guest1")
        p[1].send("!stop")
        p[0].expect("guest2: !stop")
        assert p[0].until_eof() == [CLOSING]
        assert p[1].until_eof() == [CLOSING]
        stats = runner.result()
        assert (stats.messages, stats.online) == (2, 0)
        assert len(threads) == 1 and threading.get_ident() not in threads
    finally:
        room.close()


@pytest.mark.parametrize("exc_type", [ValueError, KeyboardInterrupt])
def test_a_handler_that_raises_in_run_shuts_the_room_down_and_run_raises(exc_type: type) -> None:
    room = tcpchat.Room(close_timeout=FAST_CLOSE)
    calls: List[RoomEvent] = []

    def failing_handler(ev: RoomEvent) -> None:
        calls.append(ev)
        if ev.kind is RoomEventKind.MESSAGE:
            raise exc_type("from the handler")

    room.on_event(failing_handler)
    runner = Background(room.run, name="room")
    try:
        p = members(room.port, 2)
        p[0].send("boom")
        p[1].expect("guest1: boom")
        for m in p:
            assert m.until_eof() == [CLOSING]
        with pytest.raises(exc_type, match="from the handler") as info:
            runner.result()
        # The original traceback: the handler's frame is in it.
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert "failing_handler" in frames and "run" in frames
        # Not called again once it failed (no leave events for the shutdown).
        assert [e.kind for e in calls] == [RoomEventKind.JOIN, RoomEventKind.JOIN, RoomEventKind.MESSAGE]
        # Raised once: shutdown() and close() do not raise it again.
        room.shutdown()
        with pytest.raises(tcpchat.CancelledError) as cancelled:
            room.post("too late")
        assert isinstance(cancelled.value.__cause__, exc_type)
    finally:
        room.close()


def test_a_handler_that_raises_on_the_rooms_thread_is_reported_and_reraised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: "queue.Queue[Any]" = queue.Queue()
    monkeypatch.setattr(sys, "unraisablehook", reported.put)
    room = tcpchat.Room(close_timeout=FAST_CLOSE)

    def failing_handler(ev: RoomEvent) -> None:
        if ev.kind is RoomEventKind.MESSAGE:
            raise ValueError(f"cannot handle {ev.text!r}")

    room.on_event(failing_handler)
    room.start()
    try:
        p = members(room.port, 2)
        p[0].send("boom")
        p[1].expect("guest1: boom")
        # The room shut down: every client got the closing line.
        for m in p:
            assert m.until_eof() == [CLOSING]
        # Reported at once (before the room went on to close the clients).
        args = reported.get_nowait()
        assert isinstance(args.exc_value, ValueError)
        assert "tcpchat.Room event handler" in repr(args.object)
        # And raised by the next shutdown(), with the handler's traceback.
        with pytest.raises(ValueError, match="cannot handle 'boom'") as info:
            room.shutdown()
        assert "failing_handler" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        room.shutdown()  # once only
        room.close()
        assert reported.empty()
    finally:
        room.close()


def test_close_raises_the_handlers_exception_when_shutdown_did_not() -> None:
    room = tcpchat.Room(close_timeout=FAST_CLOSE)
    seen = threading.Event()

    def handler(ev: RoomEvent) -> None:
        seen.set()
        raise RuntimeError("in the handler")

    room.on_event(handler)
    hook = sys.unraisablehook
    sys.unraisablehook = lambda args: None
    try:
        room.start()
        a = Member(room.port)
        assert a.until_eof() == [CLOSING]
        assert seen.is_set()
    finally:
        sys.unraisablehook = hook
    with pytest.raises(RuntimeError, match="in the handler"):
        room.close()
    assert room.closed
    room.close()  # idempotent, and quiet now


def test_the_handler_can_close_its_room_from_the_rooms_own_thread() -> None:
    room = tcpchat.Room(close_timeout=FAST_CLOSE)
    leaves: "queue.Queue[RoomEvent]" = queue.Queue()

    @room.on_event
    def handler(ev: RoomEvent) -> None:
        if ev.text == "!close":
            room.close()  # frees the room while its loop is inside this call
            gc.collect()
        elif ev.kind is RoomEventKind.LEAVE:
            leaves.put(ev)

    room.start()
    p = members(room.port, 2)
    p[0].send("!close")
    p[1].expect("guest1: !close")
    for m in p:
        assert m.until_eof() == [CLOSING]
    assert room.closed
    # The loop finished the shutdown after the handler returned, without
    # calling it again: no call after tcpchat_room_free() returns.
    assert leaves.empty()


def test_post_from_another_thread_reaches_everyone() -> None:
    with started_room(max_message_size=64) as room:
        p = members(room.port, 3)
        Background(lambda: room.post("from a thread ☃"), name="poster").result()
        for m in p:
            m.expect("* from a thread ☃")
        with pytest.raises(tcpchat.InvalidArgumentError, match="newline"):
            room.post("two\nlines")
        with pytest.raises(tcpchat.InvalidArgumentError, match="NUL"):
            room.post("a\0b")
        with pytest.raises(tcpchat.MessageTooLargeError):
            room.post("z" * 65)
        with pytest.raises(TypeError):
            room.post(b"bytes")  # type: ignore[arg-type]
        room.post("z" * 64)
        for m in p:
            m.expect("* " + "z" * 64)
        room.shutdown()
        with pytest.raises(tcpchat.CancelledError):
            room.post("after the shutdown")
    with pytest.raises(tcpchat.ClosedError):
        room.post("after the close")


@pytest.mark.parametrize("mode", ["run", "start"])
def test_shutdown_from_another_thread_closes_every_client(mode: str) -> None:
    # The default close timeout: the shutdown waits for the clients to close.
    room = tcpchat.Room()
    runner = Background(room.run, name="room") if mode == "run" else None
    if runner is None:
        room.start()
    try:
        p = members(room.port, 3)
        p[0].send("before")
        for m in p[1:]:
            m.expect("guest1: before")
        stopper = Background(room.shutdown, name="stopper")
        for m in p:
            assert m.until_eof() == [CLOSING]  # the closing line, then end of stream
            m.close()
        stopper.result()  # returned once the room stopped
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", room.port), timeout=WAIT)
        stats = room.stats()
        assert (stats.joined, stats.online) == (3, 0)
        if runner is not None:
            assert runner.result() == stats
        room.shutdown()  # idempotent
        assert room.run() == stats  # returns at once once shut down
        with pytest.raises(tcpchat.CancelledError):
            room.start()
    finally:
        room.close()


def test_misuse_is_refused_with_clear_errors() -> None:
    with pytest.raises(tcpchat.InvalidArgumentError, match="line"):
        tcpchat.Room(framing="frame")
    with pytest.raises(tcpchat.InvalidArgumentError):
        tcpchat.Room(queue_limit=0)
    with pytest.raises(TypeError):
        tcpchat.Room(queue_limit="big")  # type: ignore[arg-type]
    with pytest.raises(tcpchat.InvalidArgumentError):
        tcpchat.Room(port=70000)
    with tcpchat.Room(close_timeout=FAST_CLOSE) as room:
        with pytest.raises(tcpchat.AddressInUseError):
            tcpchat.Room(port=room.port)
        with pytest.raises(TypeError):
            room.on_event(42)  # type: ignore[call-overload]
        room.start()
        with pytest.raises(tcpchat.InvalidArgumentError, match="running"):
            room.run()
        with pytest.raises(tcpchat.InvalidArgumentError, match="running"):
            room.start()
        with pytest.raises(tcpchat.InvalidArgumentError):
            room.on_event(print)
        assert repr(room) == f"<tcpchat.Room on {room.address}>"
        assert str(room.address) == f"127.0.0.1:{room.port}"
    assert room.closed and repr(room) == "<tcpchat.Room closed>"
    for call in (room.run, room.start, room.stats, lambda: room.on_event(None)):
        with pytest.raises(tcpchat.ClosedError):
            call()
    room.shutdown()  # a no-op once closed
    room.close()


# ----------------------------------------------------------------------------
# Signals
# ----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import signal, sys
    import tcpchat

    room = tcpchat.Room(close_timeout=0.1)
    resume = "--resume" in sys.argv
    signal.signal(signal.SIGUSR1, lambda signum, frame: print("usr1", flush=True))

    @room.on_event
    def handler(ev):
        if ev.text == "stop":
            room.shutdown()

    print(f"ready {room.port}", flush=True)
    try:
        room.run()
    except KeyboardInterrupt:
        if not resume:
            raise
        print("interrupted", flush=True)
        stats = room.run()  # goes on serving the same clients
        print(f"stopped {stats.messages}", flush=True)
    """
)


def start_child(*args: str) -> Tuple[subprocess.Popen, LineReader, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for_children(),
        preexec_fn=default_sigint,
    )
    out = LineReader(proc.stdout)
    try:
        first = out.next()
    except AssertionError:
        proc.kill()
        raise AssertionError(f"child failed: {proc.communicate(timeout=WAIT)[1]}") from None
    assert first.startswith("ready "), first
    return proc, out, int(first.split()[1])


def test_ctrl_c_stops_run_with_keyboard_interrupt_at_once() -> None:
    proc, _, port = start_child()
    try:
        a = Member(port)
        wait_until_waiting(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert "KeyboardInterrupt" in err, err
    assert proc.returncode != 0
    assert elapsed < 1.5, f"took {elapsed:.2f} s"
    # The room was closed on the way out: its client was told.
    assert a.until_eof() == [CLOSING]


def test_run_resumes_after_a_signal_handler_and_after_ctrl_c() -> None:
    proc, out, port = start_child("--resume")
    try:
        p = members(port, 2)
        # A handler that returns normally: the room serves on (PEP 475).
        wait_until_waiting(proc.pid)
        proc.send_signal(signal.SIGUSR1)
        assert out.next() == "usr1\n"
        p[0].send("after usr1")
        p[1].expect("guest1: after usr1")
        # Ctrl-C: run() raises KeyboardInterrupt; calling it again goes on
        # serving the same clients, nothing lost.
        wait_until_waiting(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert out.next() == "interrupted\n"
        p[1].send("after ctrl-c")
        p[0].expect("guest2: after ctrl-c")
        p[0].send("stop")
        for m in p:
            assert CLOSING in m.until_eof()
        assert out.next() == "stopped 3\n"
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0


EXIT_CHILD = textwrap.dedent(
    """
    import sys, threading
    import tcpchat

    mode = sys.argv[1]
    room = tcpchat.Room(close_timeout=2)

    @room.on_event
    def handler(ev):
        if ev.kind is tcpchat.RoomEventKind.JOIN:
            print(f"joined {ev.name}", flush=True)
        elif ev.reason is tcpchat.LeaveReason.SHUTDOWN:
            print("left at exit", flush=True)
            if mode == "raise":
                raise RuntimeError("raised at exit")

    if mode == "daemon":
        threading.Thread(target=room.run, daemon=True).start()
    else:
        room.start()
    print(f"ready {room.port}", flush=True)
    sys.stdin.readline()  # then exit, the room still open
    """
)


@pytest.mark.parametrize("mode", ["daemon", "start", "raise"])
def test_a_room_still_open_at_exit_is_shut_down(mode: str) -> None:
    """Served by run() on a daemon thread or by start(): at exit every
    client gets the closing line while Python still runs the handler; an
    exception the handler raises then is reported on stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", EXIT_CHILD, mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_for_children(),
    )
    try:
        out = LineReader(proc.stdout)
        first = out.next()
        assert first.startswith("ready "), first
        a = Member(int(first.split()[1]))
        assert out.next() == "joined guest1\n"
        assert proc.stdin is not None
        proc.stdin.close()  # the child exits
        assert a.until_eof() == [CLOSING]
        a.close()  # the graceful close ends at once
        proc.wait(WAIT)
        assert out.next() == "left at exit\n"
        assert proc.stderr is not None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0, err
    if mode == "raise":
        assert "RuntimeError: raised at exit" in err and "tcpchat.Room event handler" in err
    else:
        assert err == ""


# ----------------------------------------------------------------------------
# Garbage collection
# ----------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_dropped_room_is_shut_down_and_freed() -> None:
    gc.collect()
    baseline = open_fds()
    room = tcpchat.Room(close_timeout=FAST_CLOSE)
    events = event_queue(room)
    room.start()
    port = room.port
    a = Member(port)
    assert next_event(events).kind is RoomEventKind.JOIN
    ref = weakref.ref(room)
    del room  # no close(): the finalizer shuts it down and frees it
    assert ref() is None
    assert a.until_eof() == [CLOSING]
    a.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    gc.collect()
    assert open_fds() == baseline


def test_a_room_referenced_by_its_own_handler_is_still_collected() -> None:
    gc.collect()
    baseline = open_fds()
    room = tcpchat.Room(close_timeout=FAST_CLOSE)
    seen: List[str] = []

    @room.on_event
    def handler(ev: RoomEvent) -> None:  # refers to the room: a cycle
        seen.append(ev.name)
        if ev.kind is RoomEventKind.MESSAGE:
            room.post(f"seen {ev.text}")

    room.start()
    port = room.port
    a = Member(port)
    a.send("x")
    a.expect("* seen x")
    ref = weakref.ref(room)
    del room, handler
    gc.collect()
    assert ref() is None
    assert a.until_eof() == [CLOSING]
    a.close()
    gc.collect()
    assert open_fds() == baseline


def test_many_rooms_leave_no_descriptor_behind() -> None:
    gc.collect()
    baseline = open_fds()
    for i in range(50):
        room = tcpchat.Room(close_timeout=FAST_CLOSE)
        room.on_event(lambda ev: None)
        if i % 2:
            room.start()
            Member(room.port).close()
        del room
    gc.collect()
    assert open_fds() == baseline


# ----------------------------------------------------------------------------
# The chat_room examples
# ----------------------------------------------------------------------------


def room_program(lang: str) -> List[str]:
    if lang == "python":
        return [sys.executable, str(PY_EXAMPLES / "chat_room.py")]
    path: Path = {"rust": RUST_EXAMPLES, "c": C_EXAMPLES}[lang] / "chat_room"
    if not path.exists():
        how = {"rust": "cargo build --release --examples", "c": "make -C examples/c"}[lang]
        pytest.skip(f"the {lang} example {path.relative_to(REPO)} is not built (run `{how}`)")
    return [str(path)]


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)


def conversation(port: int) -> Tuple[List[str], List[Member]]:
    """One scripted session with raw socket clients, each line checked as it
    comes; returns the lines seen by the clients that left, the names, and
    the two members still in the room."""
    seen: List[str] = []
    a, b = members(port, 2)
    a.send("hello room")
    b.expect("guest1: hello room")
    b.send("/nick bob")
    b.expect("* you are now known as bob")
    a.expect("* guest2 is now known as bob")
    a.send("/who")
    a.expect("* 2 online: guest1, bob")
    b.send_bytes(b"\xff\xfe\n")
    b.expect("error: your line is not valid UTF-8; it was not sent")
    c = Member(port)
    for m in (a, b):
        m.expect("* guest3 joined")
    refused = Member(port, join=False)
    seen += ["refused: " + line for line in refused.until_eof()]
    c.send("/quit")
    c.expect("* bye")
    seen += ["c: " + line for line in c.until_eof()]
    for m in (a, b):
        m.expect("* guest3 left")
    b.send("bye all")
    a.expect("bob: bye all")
    seen += [a.name, b.name, c.name]
    return seen, [a, b]


@pytest.mark.parametrize("lang", ["python", "rust", "c"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_chat_room_examples_speak_the_same_lines(lang: str, sig: int) -> None:
    proc, err, port = start_server_process(room_program(lang) + ["--port", "0", "--max-clients", "3"])
    try:
        seen, clients = conversation(port)
        assert seen == ["refused: error: server full (3 clients); try again later", "guest1", "guest2", "guest3"]
        proc.send_signal(sig)
        for m in clients:
            assert m.until_eof() == [CLOSING]  # the closing line, then end of stream
            m.close()
        assert proc.stdout is not None
        transcript = proc.stdout.read()
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    log = err.rest()
    assert proc.returncode == 0, log
    assert transcript == "guest1: hello room\nbob: bye all\n"
    assert f"chat_room: got signal {int(sig)}, closing the room" in log
    assert "chat_room: stopped; 3 joined, 1 refused, 2 messages, 0 dropped" in log


def test_nc_joins_the_python_chat_room() -> None:
    if shutil.which("nc") is None:
        assert "CI" not in os.environ, "nc is not installed"
        pytest.skip("nc is not installed (apt-get install netcat-openbsd)")
    proc, err, port = start_server_process(room_program("python") + ["--port", "0"])
    try:
        a = Member(port)
        nc = subprocess.Popen(
            ["nc", "-N", "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert nc.stdin is not None and nc.stdout is not None
            a.expect("* guest2 joined")
            nc.stdin.write(b"hello from nc\n")
            nc.stdin.flush()
            a.expect("guest2: hello from nc")
            a.send("hello nc")
            assert nc.stdout.readline() == WELCOME.format("guest2").encode() + b"\n"
            assert nc.stdout.readline() == b"guest1: hello nc\n"
            nc.stdin.write(b"/quit\n")
            nc.stdin.close()
            a.expect("* guest2 left")
            assert nc.stdout.read() == b"* bye\n"
            assert nc.wait(WAIT) == 0
        finally:
            if nc.poll() is None:
                nc.kill()
                nc.wait(WAIT)
        proc.send_signal(signal.SIGTERM)
        assert a.until_eof() == [CLOSING]
        a.close()
        proc.wait(WAIT)
        assert proc.stdout is not None
        assert proc.stdout.read() == "guest2: hello from nc\nguest1: hello nc\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0, err.rest()


@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["--framing", "line"], ["--port", "99999"], ["--port", "x"], ["--max-clients", "0"],
     ["--port"], ["--deny", "10.0.0.0/99"]],
)
def test_chat_room_example_bad_flags_exit_2(args: List[str]) -> None:
    result = subprocess.run(
        room_program("python") + args, capture_output=True, text=True, timeout=WAIT,
        env=env_for_children(),
    )
    assert result.returncode == 2, result.stderr
    assert "usage: chat_room" in result.stderr and result.stdout == ""


def test_chat_room_example_help_and_fresh_clone(tmp_path: Path) -> None:
    """--help lists exactly the Rust example's flags, and runs as from a
    fresh clone: nothing installed, no PYTHONPATH, from elsewhere."""
    env: Dict[str, str] = {k: v for k, v in env_for_children().items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-S", str(PY_EXAMPLES / "chat_room.py"), "--help"],
        capture_output=True, text=True, timeout=WAIT, env=env, cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    flags = {w.strip("[],") for w in result.stdout.split() if w.startswith(("--", "[--"))}
    assert flags == {
        "--host", "--port", "--max-clients", "--allow", "--deny", "--help",
        "--idle-timeout", "--max-per-address", "--max-message-size", "--line-rate",
    }
