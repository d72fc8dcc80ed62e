"""tcpchat.aio: the asyncio API (connect, start_server, Connection, Server).

Every test runs under the default asyncio loop and, when it is installed,
under uvloop. Every wait is bounded (each test's coroutine runs under a
timeout); nothing sleeps to synchronise: tests wait on messages, events,
tasks, or on ticks of a ticker task (progress of the loop itself).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, TypeVar

import pytest

from conftest import FAST_CLOSE, WAIT

import tcpchat
import tcpchat.aio as aio

T = TypeVar("T")
Runner = Callable[..., Any]


# ----- running a test under each event loop ---------------------------------


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: Any) -> Runner:
    """``run(main)`` runs the coroutine function ``main`` on a fresh loop of
    the parameter's kind, bounded by ``timeout``, and fails on anything the
    loop reports to its exception handler (a task's exception never
    retrieved, a callback that raised)."""
    factory = _loop_factory(request.param)

    def runner(main: Callable[[], Awaitable[T]], timeout: float = 3 * WAIT) -> T:
        loop = factory()
        asyncio.set_event_loop(loop)
        problems: List[Dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, ctx: problems.append(ctx))
        try:
            result = loop.run_until_complete(asyncio.wait_for(main(), timeout))
        finally:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()
        assert not problems, problems
        return result

    return runner


class Ticker:
    """A task ticking every ``period`` seconds: counts the ticks, records
    the longest gap between two (how long the loop was blocked), and lets a
    test wait for a number of ticks or for a condition to hold over ticks."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.ticks = 0
        self.max_gap = 0.0
        self._tick = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now
            self.ticks += 1
            self._tick.set()
            self._tick = asyncio.Event()

    async def wait_ticks(self, n: int) -> None:
        target = self.ticks + n
        while self.ticks < target:
            await self._tick.wait()

    async def until_steady(self, probe: Callable[[], object], ticks: int = 20) -> None:
        """Wait until ``probe()`` returns the same value over ``ticks``
        consecutive ticks (e.g. a sender's count while it is blocked)."""
        value, same = probe(), 0
        while same < ticks:
            await self.wait_ticks(1)
            now = probe()
            same = same + 1 if now == value else 0
            value = now

    def reset_gap(self) -> None:
        self.max_gap = 0.0

    def stop(self) -> None:
        self._task.cancel()


async def echo(conn: aio.Connection) -> None:
    async for msg in conn:
        await conn.send(msg)


Handler = Callable[[aio.Connection], Awaitable[object]]


async def served_pair(
    handler: Handler, **settings: Any
) -> Tuple[aio.Server, aio.Connection]:
    """A server running ``handler`` and a client connected to it."""
    settings.setdefault("close_timeout", WAIT)
    server = await aio.start_server(handler, **settings)
    client = await aio.connect("127.0.0.1", server.port, **settings)
    return server, client


async def accepted_pair(**settings: Any) -> Tuple[aio.Server, aio.Connection, aio.Connection]:
    """A server and a (client, accepted) pair, the accepted connection
    handed out of its handler (which then waits until the server closes)."""
    got: "asyncio.Queue[aio.Connection]" = asyncio.Queue()
    done = asyncio.Event()

    async def hand_over(conn: aio.Connection) -> None:
        await got.put(conn)
        await done.wait()

    settings.setdefault("close_timeout", WAIT)
    server = await aio.start_server(hand_over, **settings)
    client = await aio.connect("127.0.0.1", server.port, **settings)
    peer = await got.get()
    server._test_done = done  # type: ignore[attr-defined]
    return server, client, peer


async def finish(server: aio.Server, *conns: aio.Connection) -> None:
    """Close connections (the peers in this loop close too), then the server."""
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    done: Optional[asyncio.Event] = getattr(server, "_test_done", None)
    if done is not None:
        done.set()
    server.close()
    await server.wait_closed()


# ----- basics ----------------------------------------------------------------


def test_echo_through_start_server(run: Runner) -> None:
    async def main() -> None:
        server, client = await served_pair(echo)
        assert server.is_serving() and server.port > 0
        assert server.address.port == server.port
        assert client.peer_address == server.address
        assert client.framing is tcpchat.Framing.LINE
        await client.send("hello")
        await client.send(b"bytes too")
        await client.send_many(["one", b"two", bytearray(b"three")])
        assert await client.recv() == b"hello"
        assert await client.recv_text() == "bytes too"
        assert [await client.recv() for _ in range(3)] == [b"one", b"two", b"three"]
        await client.shutdown_write()
        assert await client.recv() is None  # the handler ended, its connection closed
        assert await client.recv() is None  # and stays at end of stream
        await finish(server, client)
        assert not server.is_serving()

    run(main)


@pytest.mark.parametrize("framing", ["line", "frame", "raw"])
def test_every_framing(run: Runner, framing: str) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair(framing=framing)
        await client.send_many([b"ab", b"cd"])
        await client.send(b"ef")
        await client.shutdown_write()
        got = [m async for m in peer]
        if framing == "raw":
            assert b"".join(got) == b"abcdef"
        else:
            assert got == [b"ab", b"cd", b"ef"]
        await finish(server, client, peer)

    run(main)


def test_iteration_ends_when_the_peer_closes(run: Runner) -> None:
    async def main() -> None:
        async def talk(conn: aio.Connection) -> None:
            await conn.send_many([f"line {i}" for i in range(100)])

        server, client = await served_pair(talk)
        got = [m async for m in client]
        assert got == [f"line {i}".encode() for i in range(100)]
        await finish(server, client)

    run(main)


def test_connect_refused(run: Runner) -> None:
    with tcpchat.Server() as srv:
        port = srv.port  # nothing listens there once the block ends

    async def main() -> None:
        with pytest.raises(tcpchat.RefusedError):
            await aio.connect("127.0.0.1", port)

    run(main)


def test_refusals_send_nothing(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair(max_message_size=100)
        with pytest.raises(tcpchat.MessageTooLargeError):
            await client.send(b"x" * 101)
        with pytest.raises(tcpchat.InvalidArgumentError):
            await client.send("two\nlines")
        with pytest.raises(tcpchat.InvalidArgumentError, match="message 1"):
            await client.send_many([b"fine", b"not\nfine", b"fine too"])
        with pytest.raises(tcpchat.MessageTooLargeError):
            await client.send_many([b"fine", b"y" * 101])
        with pytest.raises(TypeError):
            await client.send(42)  # type: ignore[arg-type]
        await client.send(b"x" * 100)  # the limit itself is fine
        await client.send("after")
        await client.shutdown_write()
        # The refused calls sent nothing, not even the good messages of a batch.
        assert [m async for m in peer] == [b"x" * 100, b"after"]
        await finish(server, client, peer)

    run(main)


def test_the_same_refusals_as_the_blocking_api(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair(max_message_size=10)
        for bad in (b"x" * 11, b"a\nb"):
            with pytest.raises(tcpchat.Error) as from_aio:
                await client.send(bad)
            with pytest.raises(tcpchat.Error) as from_sync:
                client.sync.send(bad)  # refused before anything is sent: never blocks
            assert type(from_aio.value) is type(from_sync.value)
        await finish(server, client, peer)

    run(main)


def test_recv_timeout_leaves_the_connection_usable(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair()
        client.read_timeout = 0.05
        started = time.monotonic()
        with pytest.raises(tcpchat.TimeoutError):
            await client.recv()
        assert time.monotonic() - started >= 0.04
        await peer.send("late")
        client.read_timeout = WAIT
        assert await client.recv() == b"late"
        await finish(server, client, peer)

    run(main)


def test_wrapping_needs_a_connection(run: Runner) -> None:
    async def main() -> None:
        with pytest.raises(TypeError):
            aio.Connection(object())  # type: ignore[arg-type]

    run(main)


# ----- full duplex, several tasks, cancellation --------------------------------

N_DUPLEX = 20_000


def test_a_recv_task_and_a_send_task_at_once(run: Runner) -> None:
    # 20,000 messages of ~200 bytes each way: 4 MB, far more than the
    # sockets' buffers. If a blocked send held up the receive on the same
    # connection, both ends would stop with full buffers (and time out).
    pad = "p" * 190

    async def pump(conn: aio.Connection, tag: str) -> List[bytes]:
        async def sender() -> None:
            for i in range(N_DUPLEX):
                await conn.send(f"{tag} {i} {pad}")
            await conn.shutdown_write()

        async def receiver() -> List[bytes]:
            return [m async for m in conn]

        _, got = await asyncio.gather(sender(), receiver())
        return got

    async def main() -> None:
        from_client: "asyncio.Future[List[bytes]]" = asyncio.get_running_loop().create_future()

        async def handler(conn: aio.Connection) -> None:
            from_client.set_result(await pump(conn, "server"))

        server, client = await served_pair(handler)
        from_server = await pump(client, "client")
        assert from_server == [f"server {i} {pad}".encode() for i in range(N_DUPLEX)]
        assert await from_client == [f"client {i} {pad}".encode() for i in range(N_DUPLEX)]
        await finish(server, client)

    run(main, timeout=6 * WAIT)


def test_several_receivers_get_distinct_messages_in_turn(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair()
        tasks = [asyncio.ensure_future(client.recv()) for _ in range(3)]
        await asyncio.sleep(0)  # let all three start waiting
        await peer.send_many(["a", "b", "c"])
        assert await asyncio.gather(*tasks) == [b"a", b"b", b"c"]  # in the order they called
        # Many more receivers than messages at a time: none lost, none twice.
        tasks = [asyncio.ensure_future(client.recv()) for _ in range(50)]
        for i in range(50):
            await peer.send(str(i))
        got = await asyncio.gather(*tasks)
        assert sorted(got, key=int) == [str(i).encode() for i in range(50)]
        await finish(server, client, peer)

    run(main)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cancelled_recv_loses_no_message(run: Runner, seed: int) -> None:
    # The peer streams messages while receives are cancelled at random
    # moments (while waiting for the lock, while waiting for readiness, just
    # after being woken). Every message must still arrive once, in order.
    total = 5000
    rng = random.Random(seed)

    async def main() -> None:
        server, client, peer = await accepted_pair()

        async def stream() -> None:
            for i in range(0, total, 10):
                await peer.send_many([str(n) for n in range(i, i + 10)])
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
            await peer.shutdown_write()

        streaming = asyncio.ensure_future(stream())
        got: List[bytes] = []
        cancelled = 0
        while True:
            # Two receivers at once now and then: one waits on the lock.
            tasks = [asyncio.ensure_future(client.recv()) for _ in range(rng.choice([1, 1, 2]))]
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            for t in tasks:
                if rng.random() < 0.6 and t.cancel():
                    cancelled += 1
            results = await asyncio.gather(*tasks, return_exceptions=True)
            ended = False
            for r in results:
                if isinstance(r, asyncio.CancelledError):
                    continue
                assert not isinstance(r, BaseException), r
                if r is None:
                    ended = True
                else:
                    got.append(r)
            if ended:
                break
        await streaming
        assert cancelled > 100  # the test did cancel, a lot
        # Two receivers may complete in either order within one round, so
        # compare as a set and a count first, then the order of each round.
        assert len(got) == total
        assert sorted(got, key=int) == [str(i).encode() for i in range(total)]
        await finish(server, client, peer)

    run(main, timeout=6 * WAIT)


def test_single_receiver_cancelled_at_random_keeps_order(run: Runner) -> None:
    total = 5000
    rng = random.Random(7)

    async def main() -> None:
        server, client, peer = await accepted_pair()

        async def stream() -> None:
            for i in range(total):
                await peer.send(str(i))
                if i % 7 == 0:
                    await asyncio.sleep(0)
            await peer.shutdown_write()

        streaming = asyncio.ensure_future(stream())
        got: List[bytes] = []
        while True:
            task = asyncio.ensure_future(client.recv())
            for _ in range(rng.randint(0, 2)):
                await asyncio.sleep(0)
            task.cancel()
            try:
                msg = await task
            except asyncio.CancelledError:
                continue
            if msg is None:
                break
            got.append(msg)
        await streaming
        assert got == [str(i).encode() for i in range(total)]
        await finish(server, client, peer)

    run(main, timeout=6 * WAIT)


def test_cancelled_sends_deliver_whole_messages_or_nothing(run: Runner) -> None:
    # Big messages, so that sends really wait for the peer; each cancelled
    # at a random moment. The peer must see whole messages, in order, every
    # one whose send returned, and no other than those started.
    rng = random.Random(11)
    big = 300_000

    async def main() -> None:
        server, client, peer = await accepted_pair(max_message_size=2 * big)
        received: List[bytes] = []

        async def reader() -> None:
            async for m in peer:
                received.append(m)

        reading = asyncio.ensure_future(reader())
        completed: List[int] = []
        for i in range(60):
            msg = str(i).encode().ljust(big, b".")
            task = asyncio.ensure_future(client.send(msg))
            for _ in range(rng.randint(0, 4)):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
                completed.append(i)
            except asyncio.CancelledError:
                pass
        await client.send("end")
        await client.shutdown_write()
        await reading
        assert received[-1] == b"end"
        numbers = []
        for m in received[:-1]:
            assert len(m) == big and m.rstrip(b".").isdigit(), m[:20]
            numbers.append(int(m.rstrip(b".")))
        assert numbers == sorted(set(numbers))  # in order, none twice
        assert set(completed) <= set(numbers)  # every completed send arrived
        await finish(server, client, peer)

    run(main, timeout=6 * WAIT)


# ----- backpressure, closing ---------------------------------------------------


def test_send_waits_for_a_peer_that_does_not_read(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair(max_message_size=1 << 20)
        ticker = Ticker()
        chunk = b"z" * (256 * 1024)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await client.send(chunk)
                # send returned: the kernel has all of it, nothing is queued.
                assert client.sync.try_flush()
                sent += 1

        flooding = asyncio.ensure_future(flood())
        # The sender stops (the buffers are full) while the loop goes on.
        await ticker.until_steady(lambda: sent, ticks=20)
        assert not flooding.done()
        stuck_at = sent
        ticks = ticker.ticks
        await ticker.wait_ticks(10)
        assert ticker.ticks >= ticks + 10 and sent == stuck_at
        # Once the peer reads, the sender moves again.
        got = 0
        while sent < stuck_at + 5:
            msg = await peer.recv()
            assert msg == chunk
            got += 1
        flooding.cancel()
        ticker.stop()
        client.abort()
        await finish(server, client, peer)

    run(main)


def test_write_timeout_leaves_the_message_queued(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair(max_message_size=32 << 20)
        client.write_timeout = 0.2
        big = b"w" * (16 << 20)  # far more than the sockets hold
        started = time.monotonic()
        with pytest.raises(tcpchat.TimeoutError):
            await client.send(big)
        assert time.monotonic() - started >= 0.15
        # The message was accepted: it still goes out, whole, once the peer reads.
        assert await peer.recv() == big
        await client.send("next")
        assert await peer.recv() == b"next"
        await finish(server, client, peer)

    run(main)


def test_close_wakes_every_waiting_task(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair(max_message_size=1 << 20)
        ticker = Ticker()
        chunk = b"c" * (256 * 1024)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while True:
                await client.send(chunk)
                sent += 1

        receivers = [asyncio.ensure_future(client.recv()) for _ in range(2)]
        sender = asyncio.ensure_future(flood())
        await ticker.until_steady(lambda: sent, ticks=10)  # the sender is stuck
        assert not any(t.done() for t in receivers + [sender])

        # The peer reads once the close has begun, so the close can deliver
        # what is queued and then see the peer's end of stream.
        async def drain_peer() -> List[bytes]:
            got = [m async for m in peer]
            await peer.close()
            return got

        closing = asyncio.ensure_future(client.close())
        for t in receivers + [sender]:
            with pytest.raises(tcpchat.ClosedError):
                await t
        assert not closing.done()  # still flushing to a peer that does not read
        delivered = await drain_peer()
        await closing
        assert client.closed
        # Whole messages only: the ones whose send returned, plus at most the
        # one being sent when the close came (it had been accepted).
        assert all(m == chunk for m in delivered)
        assert sent <= len(delivered) <= sent + 1
        with pytest.raises(tcpchat.ClosedError):
            await client.recv()
        with pytest.raises(tcpchat.ClosedError):
            await client.send("after")
        ticker.stop()
        await finish(server, client, peer)

    run(main)


def test_close_after_the_peer_closed_and_close_twice(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair()
        await peer.send("bye")
        peer_closing = asyncio.ensure_future(peer.close())  # waits for the client's close
        assert await client.recv() == b"bye"
        assert await client.recv() is None
        assert not peer_closing.done()
        await asyncio.gather(client.close(), client.close())
        assert client.closed
        await client.close()
        client.abort()
        await peer_closing
        await finish(server, client, peer)

    run(main)


def test_close_drops_unread_messages_and_waits_for_the_peer(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair()
        await peer.send_many([f"unread {i}" for i in range(1000)])
        closing = asyncio.ensure_future(client.close())
        # The client shut down its write half: the peer sees end of stream
        # (the client never read the peer's messages: the close drops them).
        assert await peer.recv() is None
        assert not closing.done()  # waiting for the peer to close too
        await peer.close()
        await closing
        await finish(server, client, peer)

    run(main)


def test_close_gives_up_after_close_timeout(run: Runner) -> None:
    async def main() -> None:
        # The peer's handler never closes: the close waits close_timeout.
        hold = asyncio.Event()

        async def handler(conn: aio.Connection) -> None:
            await hold.wait()

        server = await aio.start_server(handler, close_timeout=0.2)
        conn = await aio.connect("127.0.0.1", server.port, close_timeout=0.2)
        started = time.monotonic()
        await conn.close()
        assert 0.15 <= time.monotonic() - started < WAIT
        hold.set()
        server.close()
        await server.wait_closed()

    run(main)


def test_a_cancelled_close_closes_at_once(run: Runner) -> None:
    async def main() -> None:
        server, client, peer = await accepted_pair()  # close_timeout=WAIT
        closing = asyncio.ensure_future(client.close())
        assert await peer.recv() is None  # the close has shut down the write half
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert client.closed
        # The peer sees the connection gone (end of stream then nothing).
        await peer.close()
        await finish(server, client, peer)

    run(main)


def test_send_completes_while_unread_input_waits(run: Runner) -> None:
    # The peer has sent messages nobody receives (and then shut down its
    # write half), so the descriptor stays readable; a send to the peer
    # that must wait for it to read still completes once it does.
    async def main() -> None:
        server, client, peer = await accepted_pair(max_message_size=64 << 20)
        await peer.send_many(["unread"] * 10)
        await peer.shutdown_write()
        ticker = Ticker()
        big = b"b" * (16 << 20)
        sending = asyncio.ensure_future(client.send(big))
        await ticker.wait_ticks(20)
        assert not sending.done()
        cpu, wall = time.process_time(), time.monotonic()
        await ticker.wait_ticks(20)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        assert cpu < 0.5 * wall + 0.05, f"spinning: {cpu:.3f} s CPU in {wall:.3f} s"
        assert await peer.recv() == big
        await sending
        ticker.stop()
        await finish(server, client, peer)

    run(main)


# ----- the loop is never blocked -------------------------------------------------


def test_connect_runs_off_the_loop_and_a_cancelled_connect_leaks_nothing(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    threads: List[int] = []
    made: List[tcpchat.Connection] = []  # kept alive: only a close can end it
    real_connect = tcpchat.connect

    def slow_connect(*args: Any, **kwargs: Any) -> tcpchat.Connection:
        threads.append(threading.get_ident())
        assert release.wait(WAIT)
        made.append(real_connect(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(aio, "_sync_connect", slow_connect)

    with tcpchat.Server(read_timeout=WAIT, close_timeout=FAST_CLOSE) as srv:

        async def main() -> None:
            ticker = Ticker()
            task = asyncio.ensure_future(aio.connect("127.0.0.1", srv.port))
            await ticker.wait_ticks(10)  # the loop ticks while the connect waits
            assert not task.done()
            assert threads and threads[0] != threading.get_ident()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()  # the connect now completes, for nobody
            accepted = await asyncio.get_running_loop().run_in_executor(
                None, lambda: srv.accept(timeout=WAIT)
            )
            # It was closed as soon as it came: the server sees end of stream.
            got = await asyncio.get_running_loop().run_in_executor(None, accepted.recv)
            assert got is None
            assert made[0].closed
            accepted.close()
            ticker.stop()

        run(main)


class SlowCloser:
    """A blocking peer on a thread: accepts one client and closes it only
    when told to (``release``)."""

    def __init__(self) -> None:
        self.server = tcpchat.Server(read_timeout=WAIT, close_timeout=FAST_CLOSE)
        self.release = threading.Event()
        self.saw_eof = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self.server.accept(timeout=WAIT) as conn:
            for _ in conn:
                pass
            self.saw_eof.set()
            assert self.release.wait(WAIT)

    def join(self) -> None:
        self._thread.join(WAIT)
        self.server.close()


def test_the_loop_keeps_running_during_connect_and_a_slow_close(run: Runner) -> None:
    peer = SlowCloser()

    async def main() -> None:
        ticker = Ticker()
        await ticker.wait_ticks(2)
        ticker.reset_gap()
        conn = await aio.connect("127.0.0.1", peer.server.port, close_timeout=WAIT)
        await conn.send("hello")
        closing = asyncio.ensure_future(conn.close())
        await ticker.wait_ticks(30)  # 0.3 s with the peer not closing
        assert not closing.done()
        assert peer.saw_eof.is_set()
        peer.release.set()
        await closing
        await ticker.wait_ticks(2)
        ticker.stop()
        assert ticker.max_gap < 0.5, f"the loop was blocked for {ticker.max_gap:.3f} s"

    try:
        run(main)
    finally:
        peer.release.set()
        peer.join()


# ----- the server ------------------------------------------------------------------


def test_server_close_and_wait_closed(run: Runner) -> None:
    async def main() -> None:
        release = asyncio.Event()
        started = asyncio.Event()

        async def handler(conn: aio.Connection) -> None:
            started.set()
            await release.wait()
            await conn.send("released")

        server, client = await served_pair(handler)
        await started.wait()
        port = server.port
        server.close()
        server.close()  # idempotent
        assert not server.is_serving()
        with pytest.raises(tcpchat.RefusedError):
            await aio.connect("127.0.0.1", port)
        waiting = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0)
        assert not waiting.done()  # the handler is still running
        assert server.clients == 1
        # The handler still works after close(): its client is served.
        release.set()
        assert await client.recv() == b"released"
        assert await client.recv() is None  # closed when the handler returned
        assert not waiting.done()  # the handler's close waits for the client's
        await client.close()
        await asyncio.wait_for(waiting, WAIT)
        assert server.clients == 0

    run(main)


def test_serve_forever_returns_after_close(run: Runner) -> None:
    async def main() -> None:
        server = await aio.start_server(echo)
        serving = asyncio.ensure_future(server.serve_forever())
        async with await aio.connect("127.0.0.1", server.port) as client:
            await client.send("x")
            assert await client.recv() == b"x"
        assert not serving.done()
        server.close()
        await asyncio.wait_for(serving, WAIT)

    run(main)


def test_cancelling_serve_forever_closes_the_server(run: Runner) -> None:
    async def main() -> None:
        server = await aio.start_server(echo)
        serving = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert not server.is_serving()
        with pytest.raises(tcpchat.RefusedError):
            await aio.connect("127.0.0.1", server.port)
        await server.wait_closed()

    run(main)


def test_async_with_server_waits_for_handlers(run: Runner) -> None:
    async def main() -> None:
        finished: List[str] = []

        async def handler(conn: aio.Connection) -> None:
            await conn.send(await conn.recv() or b"")
            assert await conn.recv() is None  # until the client closes
            finished.append("handler")

        async with await aio.start_server(handler, close_timeout=WAIT) as server:
            client = await aio.connect("127.0.0.1", server.port, close_timeout=WAIT)
            await client.send("go")
            assert await client.recv() == b"go"
            closing = asyncio.ensure_future(client.close())
            assert finished == []
        # Leaving the block waited for the handler (which needed the client's
        # close to go on meanwhile).
        assert finished == ["handler"]
        await closing

    run(main)


def test_leaving_async_with_by_an_exception_closes_the_clients(run: Runner) -> None:
    async def main() -> None:
        outcome: "asyncio.Future[BaseException]" = asyncio.get_running_loop().create_future()
        started = asyncio.Event()

        async def handler(conn: aio.Connection) -> None:
            started.set()
            try:
                await conn.recv()  # never comes
            except BaseException as e:
                outcome.set_result(e)
                raise

        async def client_side(port: int) -> List[bytes]:
            async with await aio.connect("127.0.0.1", port, close_timeout=WAIT) as client:
                return [m async for m in client]

        with pytest.raises(RuntimeError):
            async with await aio.start_server(handler, close_timeout=WAIT) as server:
                talking = asyncio.ensure_future(client_side(server.port))
                await started.wait()
                raise RuntimeError("boom")
        # The handler's recv was woken by the close of its connection, and
        # the client saw the end of the stream.
        assert isinstance(await outcome, tcpchat.ClosedError)
        assert await talking == []

    run(main)


def test_a_failing_handler_is_logged_and_its_client_closed(
    run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async def handler(conn: aio.Connection) -> None:
            await conn.send("before")
            raise ValueError("handler bug")

        with caplog.at_level(logging.ERROR, logger="tcpchat.aio"):
            server, client = await served_pair(handler)
            assert await client.recv() == b"before"
            assert await client.recv() is None
            # The server goes on serving others.
            other = await aio.connect("127.0.0.1", server.port)
            assert await other.recv() == b"before"
            await finish(server, client, other)
        failures = [r for r in caplog.records if r.name == "tcpchat.aio"]
        assert len(failures) == 2
        assert failures[0].exc_info is not None and "handler bug" in str(failures[0].exc_info[1])

    run(main)


def test_many_clients_at_once(run: Runner) -> None:
    async def main() -> None:
        server = await aio.start_server(echo, close_timeout=WAIT)

        async def client(i: int) -> List[bytes]:
            async with await aio.connect("127.0.0.1", server.port) as conn:
                await conn.send_many([f"{i}-{n}" for n in range(50)])
                return [await conn.recv() or b"" for _ in range(50)]

        results = await asyncio.gather(*(client(i) for i in range(100)))
        for i, got in enumerate(results):
            assert got == [f"{i}-{n}".encode() for n in range(50)]
        server.close()
        await server.wait_closed()

    run(main)


def test_start_server_refuses_a_taken_port(run: Runner) -> None:
    async def main() -> None:
        async with await aio.start_server(echo) as server:
            with pytest.raises(tcpchat.AddressInUseError):
                await aio.start_server(echo, port=server.port)
            with pytest.raises(TypeError):
                await aio.start_server(None)  # type: ignore[arg-type]

    run(main)
