"""Many clients at once, services stopped from other threads, logging from
library threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple

import pytest
from conftest import WAIT, Background

import tcpchat

THREADS = 16
MESSAGES = 200


def echo_client(port: int, tid: int, framing: str) -> int:
    with tcpchat.connect("127.0.0.1", port, framing=framing, read_timeout=WAIT) as conn:
        for i in range(MESSAGES):
            msg = f"client {tid} message {i} ".encode() * (1 + i % 7)
            conn.send(msg)
            assert conn.recv() == msg, f"client {tid}: wrong echo for message {i}"
    return MESSAGES


@pytest.mark.parametrize("framing", ["line", "frame"])
def test_many_echo_clients_from_threads(framing: str) -> None:
    with tcpchat.Server(framing=framing) as srv:
        service = Background(srv.serve_echo, name="serve_echo")
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(echo_client, srv.port, t, framing) for t in range(THREADS)]
            assert sum(f.result(timeout=WAIT * 3) for f in futures) == THREADS * MESSAGES
        srv.shutdown()  # from this thread; serve_echo returns in its own
        stats = service.result()
    assert isinstance(stats, tcpchat.EchoStats)
    assert stats.clients == THREADS
    assert stats.messages == THREADS * MESSAGES
    assert stats.errors == 0 and stats.refused == 0


def test_pipelined_batches_through_the_echo_service() -> None:
    with tcpchat.Server(framing="frame") as srv:
        service = Background(srv.serve_echo)

        def batch_client(tid: int) -> int:
            msgs = [f"{tid}:{i}".encode() for i in range(MESSAGES)]
            with tcpchat.connect("127.0.0.1", srv.port, framing="frame", read_timeout=WAIT) as conn:
                conn.send_many(msgs)
                got: List[bytes] = []
                while len(got) < len(msgs):
                    got.extend(conn.recv_many(max=64))
            assert got == msgs
            return len(got)

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(batch_client, range(8), timeout=WAIT * 3)) == 8 * MESSAGES
        srv.shutdown()
        assert service.result().messages == 8 * MESSAGES


def test_echo_service_in_raw_framing() -> None:
    with tcpchat.Server(framing="raw") as srv:
        service = Background(srv.serve_echo)
        with tcpchat.connect("127.0.0.1", srv.port, framing="raw", read_timeout=WAIT) as conn:
            data = bytes(range(256)) * 40  # fits the socket buffers both ways
            # One thread: a send from another thread would wait while this
            # one is blocked in recv (a connection serialises its calls).
            conn.send(data)
            conn.shutdown_write()
            assert b"".join(conn) == data
        srv.shutdown()
        service.result()


def test_serve_echo_stopped_while_clients_are_connected() -> None:
    with tcpchat.Server() as srv:
        service = Background(srv.serve_echo)
        with tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT) as conn:
            conn.send("ping")
            assert conn.recv() == b"ping"
            srv.shutdown()
            stats = service.result()
            assert stats.clients == 1 and stats.messages == 1
            # The service closed its side of our connection.
            assert conn.recv() is None


def test_server_full() -> None:
    with tcpchat.Server(max_clients=1) as srv:
        service = Background(srv.serve_echo)
        with tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT) as first:
            first.send("in")
            assert first.recv() == b"in"
            with tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT) as second:
                told = second.recv()
                assert told is not None and b"full" in told
                assert second.recv() is None
        srv.shutdown()
        assert service.result().refused == 1


def test_close_from_another_thread_stops_a_blocked_accept() -> None:
    srv = tcpchat.Server()
    started = threading.Event()
    job = Background(lambda: (started.set(), srv.accept())[1])
    assert started.wait(WAIT)
    srv.close()  # shuts down (a call is in progress), frees when it returns
    with pytest.raises(tcpchat.CancelledError):
        job.result()
    assert srv.closed


def test_blocking_calls_release_the_gil() -> None:
    """While one thread is blocked in recv, others run Python code."""
    with tcpchat.Server(read_timeout=WAIT) as srv:
        with tcpchat.connect("127.0.0.1", srv.port, close_timeout=0.1) as c, srv.accept() as a:
            job = Background(a.recv)
            total = sum(range(200_000))  # runs while the recv is blocked
            c.send(str(total))
            assert job.result() == str(total).encode()
            c.shutdown_write()


def test_log_handler_receives_records_from_library_threads() -> None:
    records: List[Tuple[tcpchat.LogLevel, str, str]] = []
    lock = threading.Lock()

    def handler(level: tcpchat.LogLevel, message: str) -> None:
        with lock:
            records.append((level, message, threading.current_thread().name))

    tcpchat.set_log_handler(handler, tcpchat.LogLevel.INFO)
    with tcpchat.Server() as srv:
        service = Background(srv.serve_echo)
        with tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT) as conn:
            conn.send("x")
            assert conn.recv() == b"x"
        srv.shutdown()
        service.result()
    # The echo service's loop runs on the calling thread; a started room's
    # runs on a library thread, which Python did not start.
    with tcpchat.Room() as room:
        room.start()
        with tcpchat.connect("127.0.0.1", room.port, read_timeout=WAIT) as conn:
            assert conn.recv().startswith(b"* welcome")
        room.shutdown()
    tcpchat.set_log_handler(None)
    with lock:
        assert records, "no log records"
        assert all(level <= tcpchat.LogLevel.INFO for level, _, _ in records)
        assert any("accepted" in msg for _, msg, _ in records)
        # Some came from threads Python did not start (the room's).
        assert any(name.startswith("Dummy") for _, _, name in records)


def test_log_handler_exceptions_are_reported_not_raised(capfd: pytest.CaptureFixture[str]) -> None:
    def broken(level: tcpchat.LogLevel, message: str) -> None:
        raise RuntimeError("log handler bug")

    tcpchat.set_log_handler(broken, tcpchat.LogLevel.DEBUG)
    with tcpchat.Server() as srv:
        with tcpchat.connect("127.0.0.1", srv.port, close_timeout=0.1) as c, srv.accept() as a:
            c.send("x")
            assert a.recv() == b"x"
            c.shutdown_write()
    tcpchat.set_log_handler(None)
    assert "log handler bug" in capfd.readouterr().err


def test_log_level_off_and_bad_level() -> None:
    tcpchat.set_log_handler(lambda level, msg: None, tcpchat.LogLevel.OFF)
    with pytest.raises(ValueError):
        tcpchat.set_log_handler(lambda level, msg: None, 9)
