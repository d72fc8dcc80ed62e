"""Access control settings: allow/deny lists and the per-address limit."""

from __future__ import annotations

import pytest
from conftest import WAIT, Background

import tcpchat


def test_ranges_are_normalised() -> None:
    c = tcpchat.Config(allow="127.0.0.1, ::1  10.0.0.0/8", deny=["192.168.0.0/16"])  # type: ignore[arg-type]
    assert c.allow == ("127.0.0.1", "::1", "10.0.0.0/8")
    assert c.deny == ("192.168.0.0/16",)
    c.validate()


def test_bad_range_carries_the_library_message() -> None:
    with pytest.raises(tcpchat.InvalidArgumentError, match="/99") as info:
        tcpchat.Server(deny="10.0.0.0/99")
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError):
        tcpchat.Config(allow=["not an address"]).validate()


def test_denied_peer_is_closed_at_once_and_never_accepted() -> None:
    with tcpchat.Server(deny="127.0.0.0/8") as srv:
        with tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT, close_timeout=0) as c:
            # The server refuses the peer as it accepts it: accept() never
            # returns it (and here times out, with nobody else coming)...
            with pytest.raises(tcpchat.TimeoutError):
                srv.accept(timeout=0.05)
            assert c.recv() is None  # ... and the peer was closed without a byte


def test_allowed_peer_is_served() -> None:
    with tcpchat.Server(allow=["127.0.0.1", "::1"], deny=["10.0.0.0/8"]) as srv:
        service = Background(srv.serve_echo)
        with tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT) as c:
            c.send("hi")
            assert c.recv() == b"hi"
        srv.shutdown()
        assert service.result().clients == 1


def test_max_per_address() -> None:
    with tcpchat.Server(max_per_address=1, read_timeout=WAIT) as srv:
        first = tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT, close_timeout=0)
        a = srv.accept(timeout=WAIT)
        second = tcpchat.connect("127.0.0.1", srv.port, read_timeout=WAIT, close_timeout=0)
        with pytest.raises(tcpchat.TimeoutError):
            srv.accept(timeout=0.05)  # refuses the second one
        assert second.recv() is None  # one too many from 127.0.0.1
        first.send("still served")
        assert a.recv() == b"still served"
        for conn in (second, first, a):
            conn.close()
