"""The non-blocking calls and descriptors, for programs with their own event
loop (selectors here; asyncio's loop.add_reader works the same way)."""

from __future__ import annotations

import asyncio
import selectors
import time

import pytest
from conftest import WAIT, close_pair, make_pair

import tcpchat


def test_try_accept_and_try_recv_with_selectors() -> None:
    with tcpchat.Server(close_timeout=0.1) as srv:
        with pytest.raises(tcpchat.WouldBlockError) as info:
            srv.try_accept()
        assert isinstance(info.value, BlockingIOError)
        sel = selectors.DefaultSelector()
        sel.register(srv, selectors.EVENT_READ)  # uses srv.fileno()
        client = tcpchat.connect("127.0.0.1", srv.port, close_timeout=0.1)
        assert sel.select(WAIT), "the listening descriptor never became readable"
        accepted = srv.try_accept()
        sel.unregister(srv)

        with pytest.raises(tcpchat.WouldBlockError):
            accepted.try_recv()
        sel.register(accepted, selectors.EVENT_READ)
        client.send_many([b"one", b"two"])
        got = []
        while len(got) < 2:
            assert sel.select(WAIT), "the connection's descriptor never became readable"
            while True:
                try:
                    msg = accepted.try_recv()
                except tcpchat.WouldBlockError:
                    break
                assert msg is not None
                got.append(msg)
        assert got == [b"one", b"two"]
        client.shutdown_write()
        assert sel.select(WAIT)
        assert accepted.try_recv() is None  # end of stream
        sel.close()
        close_pair(client, accepted)


def test_try_send_and_try_flush() -> None:
    srv, c, a = make_pair()
    with srv:
        c.try_send("quick")
        assert c.try_flush() is True
        assert a.recv() == b"quick"
        with pytest.raises(tcpchat.InvalidArgumentError):
            c.try_send("no\nnewlines")
        # Fill the socket until output stays queued...
        big = b"x" * 65536
        accepted = 0
        for _ in range(1000):
            try:
                c.try_send(big)
            except tcpchat.WouldBlockError:
                break  # refused: earlier output is stuck
            accepted += 1
            if not c.try_flush():
                break  # accepted, part of it still queued
        else:
            pytest.fail("the socket never filled up")
        # ... then move it along from both ends without blocking either.
        received = 0
        deadline = time.monotonic() + WAIT
        while received < accepted:
            assert time.monotonic() < deadline, f"stuck at {received} of {accepted} messages"
            c.try_flush()
            try:
                assert a.try_recv() == big
                received += 1
            except tcpchat.WouldBlockError:
                pass
        assert c.try_flush() is True
        close_pair(c, a)


def test_asyncio_add_reader() -> None:
    srv, c, a = make_pair()

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bytes] = loop.create_future()

        def on_readable() -> None:
            try:
                msg = a.try_recv()
            except tcpchat.WouldBlockError:
                return
            if not ready.done():
                ready.set_result(msg or b"")

        loop.add_reader(a.fileno(), on_readable)
        try:
            c.send("through asyncio")
            return await asyncio.wait_for(ready, WAIT)
        finally:
            loop.remove_reader(a.fileno())

    with srv:
        assert asyncio.run(main()) == b"through asyncio"
        close_pair(c, a)
