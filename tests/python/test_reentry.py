"""Calls made from inside a call on the same connection are refused at once
(InvalidArgumentError), never a wait for the locks the calling thread holds:
from a chat session's callbacks, and from a log handler running inside a
call. Found by review: they used to wait out the whole timeout (or for ever,
or deadlock), and a refused close() still closed the connection."""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Tuple

import pytest
from conftest import WAIT

import tcpchat


def test_session_callbacks_calling_back_are_refused_at_once() -> None:
    with tcpchat.Server(port=0) as server:
        # No timeouts: a wait for our own lock would last for ever.
        client = tcpchat.connect("127.0.0.1", server.port, read_timeout=None, write_timeout=None)
        with server.accept(timeout=WAIT) as peer:
            results: List[Tuple[str, float]] = []
            calls: List[Tuple[str, Callable[[], object]]] = [
                ("send", lambda: client.send("nested")),
                ("recv", client.recv),
                ("try_recv", client.try_recv),
                ("close", client.close),
            ]

            def next_message() -> Optional[bytes]:
                for name, call in calls:
                    started = time.monotonic()
                    with pytest.raises(tcpchat.InvalidArgumentError):
                        call()
                    results.append((name, time.monotonic() - started))
                return None  # ends the session: BYE

            peer.send("hello")
            end = client.run_session(tcpchat.Role.CLIENT, next_message, lambda m: None)
            assert end == tcpchat.SessionEnd.LOCAL_END
            assert [n for n, _ in results] == ["send", "recv", "try_recv", "close"]
            assert max(t for _, t in results) < 1.0, results
            assert peer.recv() == b"BYE"
            # The refused close left the connection open.
            client.send("still open")
            assert peer.recv() == b"still open"
        client.close()


def test_a_log_handler_closing_its_connection_is_refused_not_deadlocked() -> None:
    with tcpchat.Server(port=0) as server:
        conn = tcpchat.connect("127.0.0.1", server.port, max_message_size=16, read_timeout=WAIT)
        seen: List[str] = []

        def handler(level: tcpchat.LogLevel, message: str) -> None:
            if "closing connection" in message and not seen:
                try:
                    conn.close()
                    seen.append("closed")
                except tcpchat.InvalidArgumentError:
                    seen.append("refused")

        tcpchat.set_log_handler(handler, tcpchat.LogLevel.WARN)
        try:
            with server.accept(timeout=WAIT) as peer:
                peer.send("x" * 100)  # over the client's 16-byte limit
                # The library logs (warn) inside this recv, on this thread;
                # the handler's close must be refused, not wait for ever.
                with pytest.raises(tcpchat.MessageTooLargeError):
                    conn.recv()
        finally:
            tcpchat.set_log_handler(None)
        assert seen == ["refused"]
        assert not conn.closed
        conn.close()
        assert conn.closed


def test_a_session_does_not_leave_its_timeouts_behind() -> None:
    # Found by review: after a session the library skipped setting a read
    # timeout equal to the one before the session, and the next receive ran
    # with the session's (3 s instead of 0.1 s).
    with tcpchat.Server(port=0) as server:
        client = tcpchat.connect("127.0.0.1", server.port)
        with server.accept(timeout=WAIT) as peer:
            client.read_timeout = 0.1
            with pytest.raises(tcpchat.TimedOutError):
                client.recv()
            client.read_timeout = 3.0
            peer.send("BYE")
            client.run_session(tcpchat.Role.CLIENT, lambda: None, lambda m: None)
            client.read_timeout = 0.1
            started = time.monotonic()
            with pytest.raises(tcpchat.TimedOutError):
                client.recv()
            assert time.monotonic() - started < 2.0
        client.close()
