"""The everyday API: connect, accept, send, recv, iteration, addresses,
context managers, settings."""

from __future__ import annotations

import dataclasses
import re

import pytest
from conftest import FAST_CLOSE, REPO, WAIT, close_pair, make_pair

import tcpchat


def test_versions_match_cargo() -> None:
    cargo = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M)
    assert version is not None
    assert tcpchat.version() == version.group(1)
    assert tcpchat.__version__ == version.group(1)


def test_defaults_match_the_library_documentation() -> None:
    c = tcpchat.Config()
    assert c.framing is tcpchat.Framing.LINE
    assert c.max_message_size == 1024 * 1024
    assert c.end_word == b"BYE"
    assert c.connect_timeout == 10.0
    assert c.read_timeout is None
    assert c.write_timeout == 30.0
    assert c.idle_timeout == 300.0
    assert c.close_timeout == 2.0
    assert c.nodelay is True
    assert c.raw_buffer_size == 1024
    assert c.backlog == 128
    assert c.max_clients == 1024
    assert [f.value for f in tcpchat.Framing] == [0, 1, 2]


def test_config_accepts_friendly_spellings() -> None:
    c = tcpchat.Config(framing="frame", end_word="QUIT")  # type: ignore[arg-type]
    assert c.framing is tcpchat.Framing.FRAME and c.end_word == b"QUIT"
    assert c.replace(framing=tcpchat.Framing.RAW).framing is tcpchat.Framing.RAW
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.framing = tcpchat.Framing.LINE  # type: ignore[misc]


def test_send_and_recv(pair) -> None:
    client, accepted = pair
    client.send(b"hello")
    client.send("h\u00e9llo")  # str is sent as UTF-8
    client.send(bytearray(b"ba"))
    client.send(memoryview(b"mv"))
    client.send(b"")  # an empty line is a message too
    assert accepted.recv() == b"hello"
    assert accepted.recv_text() == "h\u00e9llo"
    assert accepted.recv() == b"ba"
    assert accepted.recv() == b"mv"
    assert accepted.recv() == b""
    accepted.send("back")
    assert client.recv() == b"back"


def test_recv_returns_none_at_end_of_stream_and_iteration_stops(pair) -> None:
    client, accepted = pair
    client.send_many([b"one", b"two", b"three"])
    client.close()
    assert list(accepted) == [b"one", b"two", b"three"]
    assert accepted.recv() is None
    assert accepted.recv_text() is None
    assert accepted.recv_many() == []


def test_addresses(server, pair) -> None:
    client, accepted = pair
    assert server.address == ("127.0.0.1", server.port)
    assert str(server.address) == f"127.0.0.1:{server.port}"
    assert client.peer_address == server.address
    assert accepted.local_address == server.address
    assert accepted.peer_address == client.local_address
    assert isinstance(client.local_address.port, int)


def test_ipv6_loopback() -> None:
    try:
        srv = tcpchat.Server("::1", 0, close_timeout=FAST_CLOSE)
    except tcpchat.Error as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    with srv:
        assert srv.address.host == "::1"
        assert str(srv.address) == f"[::1]:{srv.port}"
        with tcpchat.connect("::1", srv.port, close_timeout=FAST_CLOSE) as c, srv.accept(timeout=WAIT) as a:
            c.send("six")
            assert a.recv() == b"six"
            assert a.peer_address.host == "::1"


def test_connection_and_server_are_context_managers() -> None:
    with tcpchat.Server(read_timeout=WAIT) as srv:
        # The client's close waits (up to the close timeout) for the peer to
        # close too; nobody will, as the peer lives in this thread.
        with tcpchat.connect("127.0.0.1", srv.port, close_timeout=FAST_CLOSE) as c:
            a = srv.accept(timeout=WAIT)
            c.send("x")
        assert c.closed
        # The client closed gracefully: its message, then end of stream.
        assert a.recv() == b"x"
        assert a.recv() is None
        a.close()
    assert srv.closed
    with pytest.raises(tcpchat.ClosedError):
        srv.accept()


def test_close_is_idempotent_and_later_calls_raise_closed(pair) -> None:
    client, _ = pair
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(tcpchat.ClosedError):
        client.send("late")
    with pytest.raises(tcpchat.ClosedError):
        client.recv()
    with pytest.raises(ConnectionError):  # ClosedError is a ConnectionError
        client.peer_address
    client.cancel()  # harmless on a closed connection
    assert "closed" in repr(client)


def test_shutdown_write_half_closes(pair) -> None:
    client, accepted = pair
    client.send("last")
    client.shutdown_write()
    assert accepted.recv() == b"last"
    assert accepted.recv() is None
    # This end can still receive.
    accepted.send("still here")
    assert client.recv() == b"still here"


def test_connection_cannot_be_constructed_directly() -> None:
    with pytest.raises(TypeError):
        tcpchat.Connection()


def test_connect_keyword_arguments_override_config() -> None:
    base = tcpchat.Config(framing=tcpchat.Framing.FRAME, read_timeout=3)
    srv, c, a = make_pair(framing="frame")
    c2 = tcpchat.connect("127.0.0.1", srv.port, config=base, read_timeout=WAIT, close_timeout=FAST_CLOSE)
    with srv:
        close_pair(c, a)
        assert c2.config.framing is tcpchat.Framing.FRAME
        assert c2.read_timeout == WAIT
        assert base.read_timeout == 3  # untouched
        a2 = srv.accept(timeout=WAIT)
        c2.send(b"\x00\n\x01")
        assert a2.recv() == b"\x00\n\x01"
        close_pair(c2, a2)
    with pytest.raises(TypeError):
        tcpchat.connect("127.0.0.1", 1, no_such_setting=1)  # type: ignore[call-arg]


def test_timeouts_are_properties(pair) -> None:
    client, _ = pair
    assert client.read_timeout == WAIT
    client.read_timeout = None
    assert client.read_timeout is None
    client.write_timeout = 1.5
    assert client.write_timeout == 1.5
    with pytest.raises(ValueError):
        client.read_timeout = 0
    with pytest.raises(ValueError):
        client.write_timeout = -1


def test_server_accept_timeout(server) -> None:
    with pytest.raises(tcpchat.TimeoutError):
        server.accept(timeout=0.05)


def test_repr(server, pair) -> None:
    client, _ = pair
    assert f"127.0.0.1:{server.port}" in repr(server)
    assert "LINE" in repr(client)
