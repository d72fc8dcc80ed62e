"""Every wire format, batches, and messages larger than the receive buffer."""

from __future__ import annotations

import os

import pytest
from conftest import WAIT, Background, close_pair, make_pair

import tcpchat
from tcpchat._conn import INITIAL_RECV_BUFFER


@pytest.mark.parametrize("framing", ["line", "frame"])
def test_message_boundaries_are_kept(framing: str) -> None:
    srv, c, a = make_pair(framing=framing)
    with srv:
        msgs = [b"a", b"", b"bb" * 100, "\u00fcnic\u00f8de".encode(), b"last"]
        for m in msgs:
            c.send(m)
        assert [a.recv() for _ in msgs] == msgs
        close_pair(c, a)


def test_line_framing_strips_crlf_and_refuses_newlines() -> None:
    srv, c, a = make_pair(framing="line")
    with srv:
        c.send_many([b"x\r", b"y"])  # "x\r\n" on the wire: the \r goes too
        assert a.recv() == b"x"
        assert a.recv() == b"y"
        with pytest.raises(tcpchat.InvalidArgumentError) as info:
            c.send(b"two\nlines")
        assert isinstance(info.value, ValueError)
        assert "newline" in str(info.value) or "\\n" in str(info.value)
        close_pair(c, a)


def test_frame_framing_is_binary_safe() -> None:
    srv, c, a = make_pair(framing=tcpchat.Framing.FRAME)
    with srv:
        blob = bytes(range(256)) * 4
        c.send(blob)
        c.send(b"\n\n\r\n")
        assert a.recv() == blob
        assert a.recv() == b"\n\n\r\n"
        close_pair(c, a)


def test_raw_framing_passes_bytes_through() -> None:
    srv, c, a = make_pair(framing="raw", raw_buffer_size=4096)
    with srv:
        c.send(b"no framing\n at all")
        c.shutdown_write()
        got = b"".join(a)  # one read each, until end of stream
        assert got == b"no framing\n at all"
        close_pair(c, a)


def test_raw_framing_reads_at_most_the_raw_buffer_size() -> None:
    srv, c, a = make_pair(framing="raw", raw_buffer_size=16)
    with srv:
        data = os.urandom(1000)
        c.send(data)
        c.shutdown_write()
        chunks = list(a)
        assert all(1 <= len(x) <= 16 for x in chunks)
        assert b"".join(chunks) == data
        close_pair(c, a)


@pytest.mark.parametrize("framing", ["line", "frame"])
def test_messages_larger_than_the_receive_buffer_arrive_whole(framing: str) -> None:
    big = INITIAL_RECV_BUFFER * 5 + 7
    srv, c, a = make_pair(framing=framing, max_message_size=4 * 1024 * 1024)
    with srv:
        msgs = [b"s", b"x" * big, b"m" * 1000, b"y" * (big * 2), b"t"]
        # The sender would block on a full socket buffer: send from a thread.
        sender = Background(lambda: c.send_many(msgs))
        assert [a.recv() for _ in msgs] == msgs
        sender.result()
        # recv_many grows its buffer the same way; nothing is lost.
        sender = Background(lambda: c.send_many(msgs))
        got = []
        while len(got) < len(msgs):
            got.extend(a.recv_many(max=3))
        assert got == msgs
        sender.result()
        close_pair(c, a)


def test_send_many_and_recv_many() -> None:
    srv, c, a = make_pair()
    with srv:
        msgs = [f"message {i}".encode() for i in range(1000)]
        c.send_many(msgs)
        c.send_many([])  # nothing to do
        c.send_many(iter(["gen", b"erator"]))
        got = []
        while len(got) < 1002:
            batch = a.recv_many(max=100)
            assert 1 <= len(batch) <= 100
            got.extend(batch)
        assert got == msgs + [b"gen", b"erator"]
        with pytest.raises(ValueError):
            a.recv_many(max=0)
        close_pair(c, a)


def test_send_many_is_all_or_nothing() -> None:
    srv, c, a = make_pair(read_timeout=0.2)
    with srv:
        with pytest.raises(tcpchat.InvalidArgumentError) as info:
            c.send_many([b"fine", b"also fine", b"not\nfine"])
        assert "2" in str(info.value)  # names the message's index
        c.send("after")
        assert a.recv() == b"after"  # nothing of the refused batch was sent
        close_pair(c, a)


def test_custom_max_message_size_applies_to_send() -> None:
    srv, c, a = make_pair(max_message_size=10)
    with srv:
        c.send(b"x" * 10)
        with pytest.raises(tcpchat.MessageTooLargeError):
            c.send(b"x" * 11)
        assert a.recv() == b"x" * 10
        close_pair(c, a)


def test_end_word_is_configurable() -> None:
    srv, c, a = make_pair(end_word="QUIT")
    with srv:
        ended = Background(lambda: a.run_session("client", lambda: None, lambda m: None))
        assert c.run_session("server", lambda: "QUIT", lambda m: None) is tcpchat.SessionEnd.LOCAL_END
        assert ended.result() is tcpchat.SessionEnd.PEER_END
        close_pair(c, a)


def test_recv_waits_up_to_read_timeout() -> None:
    srv, c, a = make_pair(read_timeout=0.05)
    with srv:
        with pytest.raises(TimeoutError):
            a.recv()
        a.read_timeout = WAIT
        c.send("x")
        assert a.recv() == b"x"
        close_pair(c, a)
