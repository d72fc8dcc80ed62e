"""Failures become the right exception classes, with the library's message."""

from __future__ import annotations

import builtins
import socket
import threading

import pytest
from conftest import WAIT, Background, close_pair, make_pair

import tcpchat
from tcpchat import _ffi


def free_port() -> int:
    """A port nothing listens on (bound and released by the OS just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_status_has_its_class() -> None:
    for status in tcpchat.Status:
        if status is tcpchat.Status.OK:
            continue
        cls = tcpchat._errors.error_class(status)
        assert cls is not tcpchat.Error and issubclass(cls, tcpchat.Error)
        assert cls.status == status
        err = tcpchat._errors.from_status(status, "the message")
        assert err.status == status
        assert err.status_name == f"TCPCHAT_STATUS_{status.name}"
        assert str(err) == "the message" and err.message == "the message"
    unknown = tcpchat._errors.from_status(999, "?")
    assert type(unknown) is tcpchat.Error and unknown.status == 999
    assert unknown.status_name == "TCPCHAT_STATUS_UNKNOWN"


def test_builtin_hierarchy() -> None:
    assert issubclass(tcpchat.TimeoutError, builtins.TimeoutError)
    assert issubclass(tcpchat.InvalidArgumentError, ValueError)
    assert issubclass(tcpchat.ClosedError, ConnectionError)
    assert issubclass(tcpchat.RefusedError, builtins.ConnectionRefusedError)
    assert issubclass(tcpchat.ResetError, builtins.ConnectionResetError)
    assert issubclass(tcpchat.InterruptedError, builtins.InterruptedError)
    assert issubclass(tcpchat.NetworkError, OSError)
    assert tcpchat.TimeoutError is not builtins.TimeoutError


def test_refused_connect() -> None:
    port = free_port()
    with pytest.raises(tcpchat.RefusedError) as info:
        tcpchat.connect("127.0.0.1", port)
    err = info.value
    assert isinstance(err, ConnectionRefusedError) and isinstance(err, ConnectionError)
    assert err.status == tcpchat.Status.CONNECTION_REFUSED
    assert "refused" in str(err) and str(port) in str(err)


@pytest.mark.parametrize("port", [70000, -1, 2**40])
def test_bad_port_is_a_value_error(port: int) -> None:
    with pytest.raises(tcpchat.InvalidArgumentError) as info:
        tcpchat.connect("127.0.0.1", port)
    assert isinstance(info.value, ValueError)
    assert "out of range" in str(info.value)
    with pytest.raises(ValueError):
        tcpchat.Server("127.0.0.1", port)


def test_port_zero_is_refused_for_connect_only() -> None:
    with pytest.raises(tcpchat.InvalidArgumentError, match="port 0"):
        tcpchat.connect("127.0.0.1", 0)


def test_wrong_argument_types() -> None:
    with pytest.raises(TypeError):
        tcpchat.connect("127.0.0.1", "80")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tcpchat.connect(b"127.0.0.1", 80)  # type: ignore[arg-type]
    srv, c, a = make_pair()
    with srv:
        with pytest.raises(TypeError):
            c.send(123)  # type: ignore[arg-type]
        close_pair(c, a)


def test_address_in_use(server) -> None:
    with pytest.raises(tcpchat.AddressInUseError) as info:
        tcpchat.Server("127.0.0.1", server.port)
    assert isinstance(info.value, OSError)
    assert str(server.port) in str(info.value)


def test_bad_settings_carry_the_library_message() -> None:
    with pytest.raises(tcpchat.InvalidArgumentError) as info:
        tcpchat.Server(max_message_size=0)
    assert "max" in str(info.value).lower()
    with pytest.raises(tcpchat.InvalidArgumentError):
        tcpchat.Server(end_word=b"")
    with pytest.raises(tcpchat.InvalidArgumentError):
        tcpchat.Server(end_word=b"TWO\nLINES")
    with pytest.raises(tcpchat.InvalidArgumentError):
        tcpchat.Server(raw_buffer_size=0)
    with pytest.raises(tcpchat.InvalidArgumentError):
        tcpchat.Server(max_clients=0)
    with pytest.raises(tcpchat.InvalidArgumentError, match="framing"):
        tcpchat.Server(framing="carrier-pigeon")
    with pytest.raises(ValueError, match="read_timeout"):
        tcpchat.Server(read_timeout=0)
    with pytest.raises(ValueError, match="close_timeout"):
        tcpchat.Server(close_timeout=-1)
    with pytest.raises(TypeError):
        tcpchat.Server(config={"framing": "line"})  # type: ignore[arg-type]


def test_oversize_send_is_refused_with_nothing_sent() -> None:
    srv, c, a = make_pair()
    with srv:
        with pytest.raises(tcpchat.MessageTooLargeError) as info:
            c.send(b"x" * (1024 * 1024 + 1))
        assert "1048577" in str(info.value) and "1048576" in str(info.value)
        c.send("still fine")
        assert a.recv() == b"still fine"
        close_pair(c, a)


def test_oversize_receive_closes_that_connection() -> None:
    srv = tcpchat.Server(max_message_size=100, read_timeout=WAIT, close_timeout=0.1)
    with srv, tcpchat.connect("127.0.0.1", srv.port, close_timeout=0.1) as c:
        a = srv.accept(timeout=WAIT)
        c.send(b"y" * 1000)  # within the client's own limit (1 MiB)
        with pytest.raises(tcpchat.MessageTooLargeError) as info:
            a.recv()
        assert "100" in str(info.value)
        with pytest.raises(tcpchat.ClosedError):
            a.recv()
        a.close()


def test_read_timeout_leaves_the_connection_usable(pair) -> None:
    client, accepted = pair
    accepted.read_timeout = 0.05
    with pytest.raises(tcpchat.TimeoutError) as info:
        accepted.recv()
    assert isinstance(info.value, builtins.TimeoutError)
    assert info.value.status == tcpchat.Status.TIMEOUT
    assert str(info.value)  # the library says what timed out
    client.send("after the timeout")
    assert accepted.recv() == b"after the timeout"


def test_error_message_is_per_thread() -> None:
    """The message read belongs to the failing call's thread, even while
    other threads fail differently at the same time."""
    port = free_port()
    barrier = threading.Barrier(8)

    def refused() -> str:
        barrier.wait(WAIT)
        for _ in range(50):
            try:
                tcpchat.connect("127.0.0.1", port)
            except tcpchat.RefusedError as e:
                assert "refused" in str(e)
        return "ok"

    def invalid() -> str:
        barrier.wait(WAIT)
        for _ in range(50):
            try:
                tcpchat.connect("127.0.0.1", 99999)
            except tcpchat.InvalidArgumentError as e:
                assert "out of range" in str(e)
        return "ok"

    jobs = [Background(refused if i % 2 else invalid) for i in range(8)]
    assert [j.result() for j in jobs] == ["ok"] * 8


def test_cancel_from_another_thread(pair) -> None:
    client, accepted = pair
    started = threading.Event()

    def blocked() -> object:
        started.set()
        return accepted.recv()

    job = Background(blocked)
    assert started.wait(WAIT)
    # Cancellation is sticky: whether it lands before or during the recv,
    # the recv raises CancelledError.
    accepted.cancel()
    with pytest.raises(tcpchat.CancelledError):
        job.result()
    with pytest.raises(tcpchat.CancelledError):
        accepted.recv()


def test_server_shutdown_stops_a_blocked_accept(server) -> None:
    started = threading.Event()

    def blocked() -> object:
        started.set()
        return server.accept()

    job = Background(blocked)
    assert started.wait(WAIT)
    server.shutdown()
    with pytest.raises(tcpchat.CancelledError):
        job.result()
    server.shutdown()  # idempotent


def test_status_names_come_from_the_library() -> None:
    assert _ffi.status_name(3) == "TCPCHAT_STATUS_TIMEOUT"
    assert _ffi.status_name(12345) == "TCPCHAT_STATUS_UNKNOWN"


def test_star_import_shadows_no_builtin() -> None:
    namespace: dict = {}
    exec("from tcpchat import *", namespace)
    shadowed = sorted(n for n in namespace if n != "__builtins__" and hasattr(builtins, n))
    assert shadowed == [], f"from tcpchat import * shadows builtins: {shadowed}"
    # The classes are still there under names of their own, and the old
    # names remain as aliases outside __all__.
    assert issubclass(tcpchat.TimedOutError, builtins.TimeoutError)
    assert issubclass(tcpchat.InterruptedCallError, builtins.InterruptedError)
    assert tcpchat.TimeoutError is tcpchat.TimedOutError
    assert tcpchat.InterruptedError is tcpchat.InterruptedCallError


def test_locally_closed_is_a_closed_error_with_its_own_status() -> None:
    assert issubclass(tcpchat.LocallyClosedError, tcpchat.ClosedError)
    with tcpchat.Server(port=0) as server:
        conn = tcpchat.connect("127.0.0.1", server.port, read_timeout=5)
        with server.accept(timeout=5) as peer:
            conn.shutdown_write()
            with pytest.raises(tcpchat.LocallyClosedError) as info:
                conn.send("after shutdown_write")
            assert info.value.status == tcpchat.Status.LOCALLY_CLOSED
            assert info.value.status_name == "TCPCHAT_STATUS_LOCALLY_CLOSED"
            assert peer.recv() is None
        conn.close()
        with pytest.raises(tcpchat.LocallyClosedError):
            conn.recv()
