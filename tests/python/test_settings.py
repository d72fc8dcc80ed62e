"""Refused values: every refusal of the caller's own argument is a
tcpchat.Error that is also a ValueError and names what was refused; hosts
that no resolver should see are refused before any lookup; recv_many caps
its allocation."""

from __future__ import annotations

import math

import pytest

import tcpchat


@pytest.mark.parametrize(
    "setting,value",
    [
        ("read_timeout", -1.0),
        ("read_timeout", math.nan),
        ("write_timeout", 0),
        ("close_timeout", -0.5),
        ("close_timeout", math.nan),
        ("max_message_size", -1),
        ("max_message_size", 2**70),
        ("backlog", 2**40),
        ("max_clients", -3),
        ("raw_buffer_size", 0),
    ],
)
def test_a_refused_setting_is_a_value_error_naming_it(setting: str, value: object) -> None:
    with pytest.raises(tcpchat.InvalidArgumentError) as info:
        tcpchat.Server(port=0, **{setting: value}).close()  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert setting in str(info.value), str(info.value)


def test_infinite_timeouts_mean_no_limit() -> None:
    # close_timeout=inf waits for the peer's close as long as it takes: the
    # peer (the accepted end) closes first here.
    with tcpchat.Server(port=0, read_timeout=math.inf) as server:
        conn = tcpchat.connect("127.0.0.1", server.port, close_timeout=math.inf, read_timeout=math.inf)
        with server.accept(timeout=5) as accepted:
            accepted.send(b"x")
            assert conn.recv() == b"x"
        assert conn.recv() is None
        conn.close()


@pytest.mark.parametrize(
    "host", ["127.0.0.1\n", "127.0.0.1 ", " localhost", "local\thost", "a" * 100_000, "a" * 254, ""]
)
def test_malformed_hosts_are_refused_before_any_lookup(host: str) -> None:
    with pytest.raises(tcpchat.InvalidArgumentError) as info:
        tcpchat.connect(host, 80)
    assert isinstance(info.value, ValueError)
    assert len(str(info.value)) < 300
    with pytest.raises(tcpchat.InvalidArgumentError):
        tcpchat.Server(host, 0)


def test_an_oversized_send_is_a_value_error_and_sends_nothing() -> None:
    with tcpchat.Server(port=0, max_message_size=8) as server:
        with tcpchat.connect("127.0.0.1", server.port, max_message_size=8, read_timeout=5) as c:
            with server.accept(timeout=5) as a:
                with pytest.raises(ValueError):
                    c.send(b"123456789")
                with pytest.raises(tcpchat.MessageTooLargeError):
                    c.send(b"123456789")
                c.send(b"fits")
                assert a.recv() == b"fits"


def test_recv_many_with_a_huge_max_allocates_a_bounded_array() -> None:
    with tcpchat.Server(port=0) as server:
        with tcpchat.connect("127.0.0.1", server.port, read_timeout=5) as c:
            with server.accept(timeout=5) as a:
                c.send_many([b"m%d" % i for i in range(5000)])
                got = a.recv_many(max=2**40)  # must not raise MemoryError
                assert 1 <= len(got) <= 4096
                while len(got) < 5000:
                    got += a.recv_many(max=2**40)
                assert got == [b"m%d" % i for i in range(5000)]
