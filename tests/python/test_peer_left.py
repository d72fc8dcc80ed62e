"""A peer that leaves while it is our turn (the operator still typing) ends
the session at once: :func:`tcpchat.wait_for_input` waits for the input and
the peer's departure together, and a :class:`tcpchat.ClosedError` out of
``next_message`` ends the session as ``PEER_CLOSED`` (not re-raised).

Then the three chat_server examples (Rust, C, Python): a client that leaves
while the server waits for the operator's next line is noticed at once
(``client left`` on stderr) and the next client is served.

The "operator" is a pipe the test holds open and writes to (or never does).
Nothing sleeps: each step waits (bounded) on an event, a line or a reply.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from typing import Iterator, List, Optional, Tuple, Union

import pytest
from conftest import FAST_CLOSE, REPO, WAIT, Background, LineReader, default_sigint, env_for_children
from test_examples_text import LANGS, program

import tcpchat


@pytest.fixture
def pipe() -> Iterator[Tuple[int, int]]:
    """(read end, write end) of a pipe, closed afterwards."""
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        for fd in (r, w):
            try:
                os.close(fd)
            except OSError:
                pass


class Operator:
    """A ``next_message`` that reads each line from a pipe after waiting for
    it with ``wait_for_input``; ``waiting`` is set whenever it starts a wait,
    and ``waits`` keeps what each wait gave (None, or the exception)."""

    def __init__(self, fd: Union[int, io.RawIOBase]) -> None:
        self.fd = fd
        self.waiting = threading.Event()
        self.waits: List[Optional[BaseException]] = []
        self.received: List[bytes] = []
        self.ends: List[Union[tcpchat.SessionEnd, tcpchat.Error]] = []

    def next_message(self) -> Optional[bytes]:
        self.waiting.set()
        try:
            tcpchat.wait_for_input(self.fd)
        except BaseException as e:
            self.waits.append(e)
            raise
        self.waits.append(None)
        fd = self.fd if isinstance(self.fd, int) else self.fd.fileno()
        line = os.read(fd, 1024)
        return line.rstrip(b"\n") or None

    def on_message(self, msg: bytes) -> None:
        self.received.append(msg)

    def on_end(self, _peer: tcpchat.Address, outcome: Union[tcpchat.SessionEnd, tcpchat.Error]) -> None:
        self.ends.append(outcome)

    def next_wait(self) -> None:
        assert self.waiting.wait(WAIT), "next_message never started to wait"
        self.waiting.clear()


def connect(port: int) -> tcpchat.Connection:
    return tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=FAST_CLOSE)


# ----- the library -------------------------------------------------------------


def test_a_client_leaving_during_the_wait_ends_the_session_as_peer_closed(pipe: Tuple[int, int]) -> None:
    op = Operator(pipe[0])  # nobody ever writes to the pipe
    with tcpchat.Server("127.0.0.1", 0, close_timeout=FAST_CLOSE) as server:
        serving = Background(lambda: server.serve_chat(op.next_message, op.on_message, once=True, on_end=op.on_end))
        client = connect(server.port)
        op.next_wait()
        left = time.monotonic()
        client.close()
        serving.result()  # returns: the ClosedError is not re-raised
        assert time.monotonic() - left < WAIT
    assert op.ends == [tcpchat.SessionEnd.PEER_CLOSED]
    assert len(op.waits) == 1 and type(op.waits[0]) is tcpchat.ClosedError
    assert "left while it was our turn" in str(op.waits[0])


def test_serve_chat_goes_on_to_the_next_client_and_stops_on_shutdown(pipe: Tuple[int, int]) -> None:
    op = Operator(pipe[0])
    with tcpchat.Server("127.0.0.1", 0, close_timeout=FAST_CLOSE) as server:
        serving = Background(lambda: server.serve_chat(op.next_message, op.on_message, on_end=op.on_end))
        first = connect(server.port)
        op.next_wait()
        first.close()  # the first client leaves while the operator "types"
        second = connect(server.port)
        op.next_wait()
        os.write(pipe[1], b"welcome, second\n")
        assert second.recv() == b"welcome, second"
        second.send("BYE")
        second.close()
        third = connect(server.port)
        op.next_wait()
        server.shutdown()  # while the operator types for the third
        serving.result()  # returns normally: the CancelledError is not re-raised
        third.close()
    assert op.ends[:2] == [tcpchat.SessionEnd.PEER_CLOSED, tcpchat.SessionEnd.PEER_END]
    assert [type(w) for w in op.waits] == [tcpchat.ClosedError, type(None), tcpchat.CancelledError]


def test_run_session_with_a_file_object(pipe: Tuple[int, int]) -> None:
    reader = os.fdopen(os.dup(pipe[0]), "rb", buffering=0)
    op = Operator(reader)
    with reader, tcpchat.Server("127.0.0.1", 0, close_timeout=FAST_CLOSE) as server:
        client = connect(server.port)
        with server.accept(timeout=WAIT) as conn:
            session = Background(lambda: conn.run_session("server", op.next_message, op.on_message))
            op.next_wait()
            os.write(pipe[1], b"typed\n")
            assert client.recv() == b"typed"
            client.send("hi")
            op.next_wait()
            client.close()
            assert session.result() is tcpchat.SessionEnd.PEER_CLOSED
    assert op.received == [b"hi"]


def test_a_closed_error_while_the_peer_is_still_there_is_re_raised() -> None:
    def next_message() -> Optional[bytes]:
        raise tcpchat.ClosedError("some other connection closed")

    with tcpchat.Server("127.0.0.1", 0, close_timeout=FAST_CLOSE) as server:
        client = connect(server.port)
        with server.accept(timeout=WAIT) as conn:
            with pytest.raises(tcpchat.ClosedError, match="some other connection closed"):
                conn.run_session("server", next_message, lambda m: None)
        client.close()


def test_wait_for_input_outside_a_session_is_refused(pipe: Tuple[int, int]) -> None:
    with pytest.raises(tcpchat.InvalidArgumentError, match="no chat session"):
        tcpchat.wait_for_input(pipe[0])
    with pytest.raises(ValueError):
        tcpchat.wait_for_input(-1)
    with pytest.raises(TypeError):
        tcpchat.wait_for_input("0")  # type: ignore[arg-type]


# ----- the chat_server examples -------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_chat_server_notices_a_client_that_leaves_while_the_operator_types(lang: str) -> None:
    proc = subprocess.Popen(
        program(lang, "chat_server") + ["--port", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_for_children(), cwd=str(REPO), preexec_fn=default_sigint,
    )
    assert proc.stdin is not None
    err, out = LineReader(proc.stderr), LineReader(proc.stdout)
    try:
        first = err.next()
        assert first.startswith("listening on "), first
        port = int(first.strip().rsplit(":", 1)[1])

        def type_line(text: str) -> None:
            assert proc.stdin is not None
            proc.stdin.write(text + "\n")
            proc.stdin.flush()

        client = connect(port)
        type_line("hello")
        assert client.recv() == b"hello"
        client.send("hi")
        assert out.next() == "client: hi\n"
        # The server now waits for the operator's next line, which never
        # comes (stdin stays open): the client leaves meanwhile.
        left = time.monotonic()
        client.close()
        while True:
            line = err.next()
            if line == "client left\n":
                break
            assert line.startswith("tcpchat: "), line  # only the library's log records
        assert time.monotonic() - left < WAIT

        # The next client is served.
        second = connect(port)
        type_line("next, please")
        assert second.recv() == b"next, please"
        second.send("BYE")
        assert second.recv() is None  # the server closes after BYE
        second.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
    everything = "".join(err.seen) + err.rest()
    # A peer's close is not a failed session.
    assert "failed" not in everything and "ended: PeerClosed" in everything, everything
