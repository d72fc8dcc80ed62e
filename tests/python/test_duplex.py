"""A Connection is full-duplex: one thread receives while another sends on
the same Connection, and neither ever waits for the other.

* A million messages go out on one thread while another receives their echo
  (tcpchat's own ``Server.serve_echo``), in every framing, in batches
  (``send_many``/``recv_many``): none lost, doubled or reordered, no deadlock;
  then 200,000 with one ``send()`` and one ``recv()`` per message.
* ``try_recv`` returns at once while another thread's ``send`` is blocked on
  a peer that does not read; ``try_send``/``try_flush`` return at once while
  another thread is blocked in ``recv``.
* A blocked ``recv`` and a blocked ``send`` on one connection are both woken
  by ``cancel()`` and by the server's ``shutdown()`` (CancelledError), and by
  ``close()`` from a third thread (ClosedError).
* Two receivers (two senders) at once: the second waits at most its own
  timeout.
* ``fileno()`` stays level-triggered while another thread sends.

Ctrl-C is in test_duplex_signals.py. Every wait is bounded; nothing sleeps
to synchronise (threads are proven blocked by reading /proc).
"""

from __future__ import annotations

import os
import platform
import select
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from conftest import WAIT, Background, close_pair

import tcpchat

#: Messages per stress run ("one thread sends 1,000,000 messages while
#: another receives them"); TCPCHAT_DUPLEX_N overrides it.
STRESS = int(os.environ.get("TCPCHAT_DUPLEX_N", "1000000"))
#: A call that must not wait returns within this (loose: a noisy machine;
#: the bug this guards against took seconds).
AT_ONCE = 0.5

_SYSCALLS = {
    "x86_64": {"poll": {"7", "271"}, "futex": {"202"}},
    "aarch64": {"poll": {"73"}, "futex": {"98"}},
}.get(platform.machine(), {})


def wait_thread_in(tid: int, kind: str) -> None:
    """Wait (bounded; polling /proc, an observable state) until thread
    ``tid`` of this process sleeps in poll() (inside a tcpchat call) or in a
    futex (waiting for a lock)."""
    path = f"/proc/self/task/{tid}/syscall"
    wanted = _SYSCALLS.get(kind)
    if not wanted or not os.access(path, os.R_OK):
        return
    deadline = time.monotonic() + WAIT
    nr = "?"
    while time.monotonic() < deadline:
        with open(path) as f:
            nr = f.read().split(" ", 1)[0]
        if nr in wanted:
            return
        time.sleep(0.001)  # polling an observable state, bounded
    raise AssertionError(f"thread {tid} never waited in {kind} (last syscall {nr})")


class Blocked:
    """Run ``fn`` on a thread and wait until it is blocked in ``kind``
    (poll: inside a tcpchat call; futex: waiting for a lock)."""

    def __init__(self, fn: Callable[[], Any], kind: str = "poll", name: str = "blocked") -> None:
        self._tid: "list[int]" = []
        started = threading.Event()

        def run() -> Any:
            self._tid.append(threading.get_native_id())
            started.set()
            try:
                return fn()
            finally:
                self.returned_at = time.monotonic()

        self.returned_at = 0.0
        self.bg = Background(run, name=name)
        assert started.wait(WAIT)
        wait_thread_in(self._tid[0], kind)

    @property
    def tid(self) -> int:
        return self._tid[0]

    def alive(self) -> bool:
        return self.bg._thread.is_alive()

    def still_blocked(self, kind: str = "poll") -> None:
        assert self.alive()
        wait_thread_in(self.tid, kind)

    def result(self, timeout: float = WAIT) -> Any:
        return self.bg.result(timeout)

    def error(self, timeout: float = WAIT) -> BaseException:
        try:
            value = self.bg.result(timeout)
        except BaseException as e:  # the exception is the result
            return e
        raise AssertionError(f"returned {value!r} instead of raising")


def fill(conn: tcpchat.Connection) -> int:
    """Fill the socket (the peer does not read) until output stays queued:
    any later send blocks. Returns how many 64 KiB messages were accepted."""
    chunk = b"f" * 65536
    for n in range(10_000):
        try:
            conn.try_send(chunk)
        except tcpchat.WouldBlockError:
            return n
    raise AssertionError("the socket never filled up")


def drain(conn: tcpchat.Connection, count: int) -> None:
    """Receive ``count`` messages (the filler and what the blocked send sent)."""
    for i in range(count):
        assert conn.recv() is not None, f"end of stream at message {i} of {count}"


@pytest.fixture
def pair() -> Iterator[Tuple[tcpchat.Connection, tcpchat.Connection]]:
    """(client, peer), replacing conftest's pair: the client's waits are
    unbounded unless a test sets them (the test ends each call it blocks),
    the peer's are bounded."""
    with tcpchat.Server("127.0.0.1", 0, read_timeout=WAIT, close_timeout=WAIT) as srv:
        client = tcpchat.connect("127.0.0.1", srv.port, read_timeout=None, write_timeout=None, close_timeout=WAIT)
        peer = srv.accept(timeout=WAIT)
    try:
        yield client, peer
    finally:
        try:
            client.cancel()  # whatever a failed test left blocked
        finally:
            close_pair(client, peer)


# ----- 1. a million messages each way at once ------------------------------------


def message(i: int) -> bytes:
    """Message ``i``: its sequence number, then 0 to 10 filler bytes."""
    return b"%07d|%s" % (i, b"abcdefghij"[: i % 11])


@pytest.mark.parametrize("framing", ["raw", "line", "frame"])
def test_a_million_messages_each_way_on_one_connection(framing: str) -> None:
    n = STRESS
    batch = 4096
    msgs = [message(i) for i in range(n)]
    with tcpchat.Server(framing=framing, read_timeout=WAIT, write_timeout=WAIT, close_timeout=WAIT) as srv:
        service = Background(srv.serve_echo, name="serve_echo")
        conn = tcpchat.connect(
            "127.0.0.1", srv.port, framing=framing, read_timeout=WAIT, write_timeout=WAIT, close_timeout=WAIT
        )

        def sender() -> int:
            for i in range(0, n, batch):
                conn.send_many(msgs[i : i + batch])
            conn.shutdown_write()  # the echo service echoes the rest, then closes
            return n

        def receiver() -> int:
            got = 0
            if framing == "raw":
                # No boundaries: compare the byte stream.
                stream = b"".join(msgs)
                pos = 0
                while True:
                    chunks = conn.recv_many(max=256)
                    if not chunks:
                        break
                    data = b"".join(chunks)
                    if stream[pos : pos + len(data)] != data:
                        raise AssertionError(f"the echoed byte stream differs after byte {pos}: {data[:40]!r}")
                    pos += len(data)
                assert pos == len(stream), f"{pos} of {len(stream)} bytes came back"
                return n
            while True:
                got_now = conn.recv_many(max=4096)
                if not got_now:
                    break
                if got_now != msgs[got : got + len(got_now)]:
                    k = next(k for k, m in enumerate(got_now) if got + k >= n or m != msgs[got + k])
                    raise AssertionError(
                        f"message {got + k} is {got_now[k]!r}, expected "
                        f"{msgs[got + k] if got + k < n else None!r} (lost, doubled or reordered)"
                    )
                got += len(got_now)
            assert got == n, f"{got} of {n} messages came back"
            return got

        t0 = time.monotonic()
        rx = Background(receiver, name="receiver")
        tx = Background(sender, name="sender")
        assert tx.result(timeout=60) == n
        assert rx.result(timeout=60) == n
        took = time.monotonic() - t0
        print(f"{framing}: {n} messages sent and echoed back on one Connection in {took:.2f} s")
        conn.close()
        srv.shutdown()
        stats = service.result()
    if framing != "raw":
        assert stats.messages == n
    assert stats.clients == 1 and stats.errors == 0


#: Messages of the one-call-per-message run (Python's per-call cost makes a
#: million take minutes; the batched run above carries the million).
PER_CALL = int(os.environ.get("TCPCHAT_DUPLEX_PER_CALL_N", "200000"))


@pytest.mark.parametrize("framing", ["raw", "line", "frame"])
def test_one_call_per_message_each_way_on_one_connection(framing: str) -> None:
    """The same with one send() and one recv() per message: every call takes
    its side's lock while the other thread is inside a call on the other side."""
    n = PER_CALL
    msgs = [message(i) for i in range(n)]
    with tcpchat.Server(framing=framing, read_timeout=WAIT, write_timeout=WAIT, close_timeout=WAIT) as srv:
        service = Background(srv.serve_echo, name="serve_echo")
        conn = tcpchat.connect(
            "127.0.0.1", srv.port, framing=framing, read_timeout=WAIT, write_timeout=WAIT, close_timeout=WAIT
        )

        def sender() -> None:
            for m in msgs:
                conn.send(m)
            conn.shutdown_write()

        def receiver() -> None:
            if framing == "raw":
                got = b"".join(iter(conn.recv, None))
                stream = b"".join(msgs)
                if got != stream:
                    at = next((k for k in range(min(len(got), len(stream))) if got[k] != stream[k]), None)
                    raise AssertionError(f"{len(got)} of {len(stream)} bytes came back; first difference at {at}")
                return
            for i, m in enumerate(msgs):
                got_one = conn.recv()
                assert got_one == m, f"message {i} is {got_one!r}, expected {m!r}"
            assert conn.recv() is None, "more messages than were sent"

        t0 = time.monotonic()
        rx = Background(receiver, name="receiver")
        tx = Background(sender, name="sender")
        tx.result(timeout=60)
        rx.result(timeout=60)
        print(f"{framing}: {n} messages, one call each, sent and echoed back in {time.monotonic() - t0:.2f} s")
        conn.close()
        srv.shutdown()
        stats = service.result()
    if framing != "raw":
        assert stats.messages == n
    assert stats.clients == 1 and stats.errors == 0


# ----- 2. neither side waits for the other ------------------------------------------


def test_try_recv_returns_at_once_while_a_send_is_blocked(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    client, peer = pair
    filled = fill(client)
    sending = Blocked(lambda: client.send(b"blocked send"), name="sender")  # the peer does not read

    t0 = time.monotonic()
    with pytest.raises(tcpchat.WouldBlockError):
        client.try_recv()
    took = time.monotonic() - t0
    assert took < AT_ONCE, f"try_recv took {took:.3f} s while a send was blocked"
    print(f"try_recv while a send is blocked: {took * 1000:.2f} ms")
    sending.still_blocked()

    # Messages from the peer arrive while the send stays blocked.
    peer.send("while your send waits")
    deadline = time.monotonic() + WAIT
    while True:
        try:
            msg = client.try_recv()
            break
        except tcpchat.WouldBlockError:
            assert time.monotonic() < deadline, "the message never came"
            time.sleep(0.001)  # polling an observable state, bounded
    assert msg == b"while your send waits"
    peer.send("and a blocking recv")
    assert client.recv() == b"and a blocking recv"
    sending.still_blocked()

    # The peer reads: the send completes.
    drain(peer, filled)
    assert peer.recv() == b"blocked send"
    assert sending.result() is None


def test_try_send_and_try_flush_return_at_once_while_a_recv_is_blocked(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    client, peer = pair
    receiving = Blocked(client.recv, name="receiver")  # the peer sends nothing

    t0 = time.monotonic()
    client.try_send("ping")
    assert client.try_flush() is True
    client.send("pong")
    took = time.monotonic() - t0
    assert took < AT_ONCE, f"the sending side took {took:.3f} s while a recv was blocked"
    print(f"try_send, try_flush, send while a recv is blocked: {took * 1000:.2f} ms")
    assert peer.recv() == b"ping"
    assert peer.recv() == b"pong"
    receiving.still_blocked()

    # While another thread is in a receive, try_recv refuses at once.
    t0 = time.monotonic()
    with pytest.raises(tcpchat.WouldBlockError, match="another thread"):
        client.try_recv()
    assert time.monotonic() - t0 < AT_ONCE

    # This side is done sending: the peer sees the end of the stream while
    # the receive goes on waiting for its answer.
    client.shutdown_write()
    assert peer.recv() is None
    receiving.still_blocked()

    peer.send("wake")
    assert receiving.result() == b"wake"


def test_try_send_and_try_flush_refuse_at_once_while_another_send_is_blocked(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    client, peer = pair
    filled = fill(client)
    sending = Blocked(lambda: client.send(b"blocked send"), name="sender")
    t0 = time.monotonic()
    with pytest.raises(tcpchat.WouldBlockError, match="another thread"):
        client.try_send("refused")
    assert client.try_flush() is False
    assert time.monotonic() - t0 < AT_ONCE
    drain(peer, filled)
    assert peer.recv() == b"blocked send"
    assert sending.result() is None
    client.send("next")
    assert peer.recv() == b"next"  # the refused message never went


# ----- 3. cancel, server shutdown and close wake both sides ---------------------


def block_both(conn: tcpchat.Connection) -> Tuple[Blocked, Blocked, int]:
    """A recv blocked (the peer sends nothing) and a send blocked (the peer
    reads nothing) on ``conn``, each on its own thread."""
    receiving = Blocked(conn.recv, name="receiver")
    filled = fill(conn)
    sending = Blocked(lambda: conn.send(b"blocked send"), name="sender")
    return receiving, sending, filled


def both_raise(receiving: Blocked, sending: Blocked, error: type, t0: float, what: str) -> None:
    r, s = receiving.error(), sending.error()
    assert isinstance(r, error), f"the recv: {r!r}"
    assert isinstance(s, error), f"the send: {s!r}"
    rd, sd = receiving.returned_at - t0, sending.returned_at - t0
    print(f"{what}: the blocked recv raised {type(r).__name__} after {rd * 1000:.1f} ms, the send after {sd * 1000:.1f} ms")
    assert rd < 1.0 and sd < 1.0, (rd, sd)


def test_cancel_wakes_a_blocked_recv_and_a_blocked_send(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    client, _ = pair
    receiving, sending, _ = block_both(client)
    t0 = time.monotonic()
    client.cancel()
    both_raise(receiving, sending, tcpchat.CancelledError, t0, "cancel")
    with pytest.raises(tcpchat.CancelledError):
        client.recv()  # sticky


def test_server_shutdown_wakes_both_sides_of_an_accepted_connection() -> None:
    with tcpchat.Server(read_timeout=None, write_timeout=None, close_timeout=WAIT) as srv:
        client = tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT, close_timeout=WAIT)
        accepted = srv.accept(timeout=WAIT)
        receiving, sending, _ = block_both(accepted)
        t0 = time.monotonic()
        srv.shutdown()
        both_raise(receiving, sending, tcpchat.CancelledError, t0, "server shutdown")
        t0 = time.monotonic()
        try:
            accepted.close()  # cancelled: does not wait for the client
        except tcpchat.CancelledError:
            pass  # the final flush of what was queued was cancelled too, and says so
        assert time.monotonic() - t0 < 1.0
        client.close()


def test_close_from_a_third_thread_wakes_both_sides_then_closes_gracefully(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    client, peer = pair
    receiving, sending, filled = block_both(client)
    t0 = time.monotonic()
    closing = Background(client.close, name="closer")
    both_raise(receiving, sending, tcpchat.ClosedError, t0, "close from a third thread")
    # The close delivers what was queued (the filler, and the part of the
    # interrupted send not yet written), then the end of the stream.
    for i in range(filled):
        assert peer.recv() == b"f" * 65536, f"filler message {i}"
    assert peer.recv() == b"blocked send"
    assert peer.recv() is None
    peer.shutdown_write()  # the close's wait for our end is over
    assert closing.result() is None
    assert client.closed
    with pytest.raises(tcpchat.ClosedError):
        client.recv()


# ----- 4. two receivers (two senders): the second waits at most its own timeout --


def test_a_second_receiver_waits_at_most_its_read_timeout(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    client, peer = pair
    client.read_timeout = None
    first = Blocked(client.recv, name="first receiver")
    client.read_timeout = 0.2
    t0 = time.monotonic()
    with pytest.raises(tcpchat.TimeoutError, match="another thread"):
        client.recv()
    took = time.monotonic() - t0
    print(f"a second receiver timed out after {took:.3f} s (read_timeout 0.2 s)")
    assert 0.1 <= took < 5.0
    first.still_blocked()  # the first waits on, unbounded
    peer.send("for the first")
    assert first.result() == b"for the first"


def test_a_second_sender_waits_at_most_its_write_timeout(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    client, peer = pair
    filled = fill(client)
    client.write_timeout = None
    first = Blocked(lambda: client.send(b"first"), name="first sender")
    client.write_timeout = 0.2
    t0 = time.monotonic()
    with pytest.raises(tcpchat.TimeoutError, match="another thread"):
        client.send("second")
    took = time.monotonic() - t0
    print(f"a second sender timed out after {took:.3f} s (write_timeout 0.2 s)")
    assert 0.1 <= took < 5.0
    first.still_blocked()
    drain(peer, filled)
    assert peer.recv() == b"first"
    assert first.result() is None
    client.send("second, again")
    assert peer.recv() == b"second, again"  # the timed-out one never went


def test_a_receiver_waiting_behind_another_is_woken_by_close(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    client, peer = pair
    first = Blocked(client.recv, name="first receiver")
    second = Blocked(client.recv, kind="futex", name="second receiver")
    t0 = time.monotonic()
    closing = Background(client.close, name="closer")
    for who in (first, second):
        e = who.error()
        assert isinstance(e, tcpchat.ClosedError), repr(e)
        assert who.returned_at - t0 < 1.0
    assert peer.recv() is None
    peer.shutdown_write()
    assert closing.result() is None


# ----- 5. the pollable descriptor with both sides in use ---------------------------


def test_fileno_stays_level_triggered_while_another_thread_sends() -> None:
    n = 100_000
    with tcpchat.Server(read_timeout=WAIT, close_timeout=WAIT) as srv:
        service = Background(srv.serve_echo, name="serve_echo")
        conn = tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT, write_timeout=WAIT, close_timeout=WAIT)
        fd = conn.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)

        def sender() -> None:
            for i in range(n):
                conn.send(message(i))

        t0 = time.monotonic()
        sending = Background(sender, name="sender")
        got = wakeups = empty = 0
        while got < n:
            assert poller.poll(WAIT * 1000), f"the descriptor stayed unreadable with {got} of {n} messages in"
            wakeups += 1
            drain_all = wakeups % 2 == 0  # else take one: the rest keeps it readable
            took_any = False
            while True:
                try:
                    msg = conn.try_recv()
                except tcpchat.WouldBlockError:
                    break
                assert msg == message(got), f"message {got} is {msg!r}"
                got += 1
                took_any = True
                if not drain_all:
                    break
            if not took_any:
                empty += 1
        sending.result()
        print(
            f"fileno: {n} messages in {time.monotonic() - t0:.2f} s, {wakeups} wake-ups "
            f"({empty} found nothing complete yet)"
        )

        # Exactly: 100 messages in one write; the descriptor announces each
        # until it is taken, then goes quiet.
        batch = [message(i) for i in range(100)]
        conn.send_many(batch)
        taken: List[bytes] = []
        while len(taken) < 100:
            assert poller.poll(WAIT * 1000), f"unreadable with {len(taken)} of 100 taken"
            try:
                taken.append(conn.try_recv())  # type: ignore[arg-type]
            except tcpchat.WouldBlockError:
                continue  # the rest of a message still on its way
        assert taken == batch
        assert poller.poll(0) == [], "readable with nothing pending"
        conn.shutdown_write()
        assert poller.poll(WAIT * 1000), "the end of the stream never made it readable"
        assert conn.try_recv() is None
        conn.close()
        srv.shutdown()
        service.result()


def test_a_receiver_behind_another_is_bounded_by_one_timeout_in_all(
    pair: Tuple[tcpchat.Connection, tcpchat.Connection],
) -> None:
    # Nobody sends: the first receiver times out after 2 s, the second,
    # which waited behind it, must not wait a further full timeout for data.
    client, _peer = pair
    client.read_timeout = 2.0
    results: Dict[str, float] = {}

    def receive(name: str) -> None:
        started = time.monotonic()
        with pytest.raises(tcpchat.TimeoutError):
            client.recv()
        results[name] = time.monotonic() - started

    first = threading.Thread(target=receive, args=("first",))
    first.start()
    while not client._recv_lock.locked():  # the first is in its receive
        time.sleep(0.001)
    second = threading.Thread(target=receive, args=("second",))
    second.start()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()
    assert results["second"] < 3.2, f"the second receiver waited {results['second']:.2f} s in all"
    assert client.read_timeout == 2.0
