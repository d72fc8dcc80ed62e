"""A stress of callbacks from several threads at once: chat sessions driven
by Python callables on 8 threads (16 sessions side by side), a log handler
called from library threads meanwhile, and a callback that raises now and
then; no crash, every transcript exact, and no handle or descriptor leaked."""

from __future__ import annotations

import gc
import os
import threading
from typing import Iterator, List

import pytest
from conftest import WAIT

import tcpchat

PAIRS = 8
ROUNDS = 30


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class Boom(Exception):
    pass


def one_pair(framing: str, n: int, failures: List[str]) -> None:
    lines = [f"pair {n} line {i}" for i in range(ROUNDS)]
    raise_at = 7 if n % 3 == 0 else None  # some sessions end with a raising callback
    heard_server: List[bytes] = []
    heard_client: List[bytes] = []
    outcome: List[object] = []

    def server_side(conn: tcpchat.Connection) -> None:
        it: Iterator[str] = iter(lines)

        def on_message(msg: bytes) -> None:
            heard_server.append(msg)
            if raise_at is not None and len(heard_server) == raise_at:
                raise Boom(f"pair {n}")

        try:
            outcome.append(conn.run_session(tcpchat.Role.SERVER, lambda: next(it, None), on_message))
        except Boom as e:
            outcome.append(e)
        finally:
            conn.shutdown_write()

    try:
        # A server per pair, so that each thread accepts its own client.
        server = tcpchat.Server(framing=tcpchat.Framing.parse(framing), close_timeout=0.5)
        client = tcpchat.connect("127.0.0.1", server.port, framing=tcpchat.Framing.parse(framing),
                                 read_timeout=WAIT, close_timeout=0.5)
        conn = server.accept(timeout=WAIT)
        server.close()
        t = threading.Thread(target=server_side, args=(conn,))
        t.start()
        replies: Iterator[str] = iter([f"reply {i}" for i in range(ROUNDS)])
        try:
            client.run_session(tcpchat.Role.CLIENT, lambda: next(replies, None), heard_client.append)
        except tcpchat.Error:
            pass  # the server side stopped on its own exception: the peer went away
        t.join(WAIT)
        client.close()
        conn.close()
        if raise_at is None:
            if heard_client != [line.encode() for line in lines]:
                failures.append(f"pair {n}: client heard {len(heard_client)} lines")
            if outcome != [tcpchat.SessionEnd.LOCAL_END]:
                failures.append(f"pair {n}: server session ended {outcome}")
        elif not (len(outcome) == 1 and isinstance(outcome[0], Boom)):
            failures.append(f"pair {n}: the callback's exception did not come back: {outcome}")
    except BaseException as e:  # noqa: B036 - report, do not lose, any failure
        failures.append(f"pair {n}: {type(e).__name__}: {e}")


@pytest.mark.parametrize("framing", ["line", "frame"])
def test_sessions_with_callbacks_on_many_threads(framing: str) -> None:
    gc.collect()
    before = fd_count()
    records: List[str] = []
    lock = threading.Lock()

    def log(level: tcpchat.LogLevel, message: str) -> None:
        with lock:
            records.append(message)

    tcpchat.set_log_handler(log, tcpchat.LogLevel.DEBUG)
    try:
        for _ in range(2):  # two waves of PAIRS threads
            failures: List[str] = []
            threads = [threading.Thread(target=one_pair, args=(framing, n, failures)) for n in range(PAIRS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(3 * WAIT)
                assert not t.is_alive(), "a session thread hung"
            assert failures == []
    finally:
        tcpchat.set_log_handler(None)
    assert records, "the log handler was never called"
    gc.collect()
    assert fd_count() <= before, f"descriptors leaked: {before} before, {fd_count()} after"
