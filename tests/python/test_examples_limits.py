"""What the example servers and chat_client do about strangers, in Rust, C
and Python alike (CONTRACT.md):

- every server (chat_server, echo_server, chat_room) takes --idle-timeout,
  --max-per-address and --max-message-size, and each has its effect; a bad
  value prints the usage and exits 2;
- a server listening on every address (0.0.0.0, ::) with no --allow list
  warns on stderr; --allow silences it;
- chat_client says on stderr that it is connected and waiting when the
  server takes more than a second to speak first, and only then.

Needs the examples built (`cargo build --release --examples`,
`make -C examples/c`); a language whose build is missing is skipped.
Every wait is bounded and waits for something (a reply, a close, a line, a
process), except where the behaviour under test is "more than a second of
silence".
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from typing import List

import pytest
from conftest import WAIT, LineReader, env_for_children, start_server_process
from test_examples_text import LANGS, Child, program

import tcpchat

SERVERS = ["chat_server", "echo_server", "chat_room"]


def stop(proc: "subprocess.Popen[str]", err: LineReader) -> str:
    """Stop a server example (SIGTERM; chat_server just dies of it) and
    return the rest of its stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    return err.rest()


def drain(conn: tcpchat.Connection) -> List[bytes]:
    """Every message until the peer closes (a reset counts as the close)."""
    got: List[bytes] = []
    try:
        for msg in conn:
            got.append(msg)
    except tcpchat.ResetError:
        pass
    return got


# ----- --max-message-size ----------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_max_message_size_closes_chat_server_client_over_it(lang: str) -> None:
    proc, err, port = start_server_process(
        program(lang, "chat_server") + ["--port", "0", "--once", "--max-message-size", "16"],
        stdin="one\ntwo\nthree\n",
    )
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
            assert conn.recv() == b"one"
            conn.send(b"a" * 16)  # at the limit: fine
            assert conn.recv() == b"two"
            conn.send(b"b" * 17)
            assert drain(conn) == []  # closed, with nothing more
        proc.wait(WAIT)  # --once: that session was the one
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest
    assert "exceeds the maximum message size of 16 bytes" in rest
    assert proc.stdout is not None and proc.stdout.read() == "client: " + "a" * 16 + "\n"


@pytest.mark.parametrize("lang", LANGS)
def test_max_message_size_closes_echo_server_client_over_it(lang: str) -> None:
    proc, err, port = start_server_process(program(lang, "echo_server") + ["--port", "0", "--max-message-size", "16"])
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
            conn.send(b"a" * 16)
            assert conn.recv() == b"a" * 16
            conn.send(b"b" * 17)
            assert drain(conn) == []
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest
    assert "exceeds the maximum message size of 16 bytes" in rest


@pytest.mark.parametrize("lang", LANGS)
def test_max_message_size_closes_chat_room_member_over_it(lang: str) -> None:
    proc, err, port = start_server_process(program(lang, "chat_room") + ["--port", "0", "--max-message-size", "16"])
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
            assert conn.recv_text().startswith("* welcome")  # type: ignore[union-attr]
            conn.send(b"a" * 16)
            conn.send(b"b" * 17)
            assert drain(conn) == [b"error: line longer than 16 bytes; closing"]
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest
    assert "exceeds the maximum message size of 16 bytes" in rest
    assert proc.stdout is not None and proc.stdout.read() == "guest1: " + "a" * 16 + "\n"


# ----- --idle-timeout ----------------------------------------------------------


def closed_after(conn: tcpchat.Connection) -> float:
    """How long until the peer closes `conn`, which sends nothing."""
    start = time.monotonic()
    drain(conn)
    return time.monotonic() - start


@pytest.mark.parametrize("lang", LANGS)
def test_idle_timeout_ends_chat_server_session_with_a_silent_client(lang: str) -> None:
    proc, err, port = start_server_process(
        program(lang, "chat_server") + ["--port", "0", "--once", "--idle-timeout", "1"], stdin="hello\n"
    )
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
            assert conn.recv() == b"hello"
            assert 0.9 < closed_after(conn) < WAIT
        proc.wait(WAIT)
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest
    assert "timed out" in rest


@pytest.mark.parametrize("lang", LANGS)
def test_idle_timeout_closes_a_silent_echo_client(lang: str) -> None:
    proc, err, port = start_server_process(program(lang, "echo_server") + ["--port", "0", "--idle-timeout", "1"])
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
            assert 0.9 < closed_after(conn) < WAIT
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest
    assert "timed out" in rest


@pytest.mark.parametrize("lang", LANGS)
def test_idle_timeout_closes_a_room_member_that_never_finishes_its_line(lang: str) -> None:
    proc, err, port = start_server_process(program(lang, "chat_room") + ["--port", "0", "--idle-timeout", "1"])
    try:
        # Raw framing: the start of a line, never its newline (slowloris).
        with tcpchat.connect("127.0.0.1", port, framing="raw", read_timeout=WAIT, close_timeout=0) as conn:
            conn.send(b"an unfinished line")
            start = time.monotonic()
            heard = b"".join(drain(conn))
            assert 0.9 < time.monotonic() - start < WAIT
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest
    assert heard.endswith(b"error: no complete line for 1s; closing\n"), heard


# ----- --max-per-address ---------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_max_per_address_refuses_a_second_echo_client(lang: str) -> None:
    proc, err, port = start_server_process(program(lang, "echo_server") + ["--port", "0", "--max-per-address", "1"])
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as first:
            first.send("one")
            assert first.recv() == b"one"  # served
            with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as second:
                assert drain(second) == []  # closed at once, without a byte
            first.send("two")
            assert first.recv() == b"two"  # the first one is still served
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest
    assert "1 connections from that address already" in rest


@pytest.mark.parametrize("lang", LANGS)
def test_max_per_address_refuses_a_second_room_member(lang: str) -> None:
    proc, err, port = start_server_process(program(lang, "chat_room") + ["--port", "0", "--max-per-address", "1"])
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as first:
            assert first.recv_text().startswith("* welcome")  # type: ignore[union-attr]
            with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as second:
                assert drain(second) == []
            first.send("/who")
            assert first.recv() == b"* 1 online: guest1"
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest
    assert "1 connections from that address already" in rest


@pytest.mark.parametrize("lang", LANGS)
def test_chat_server_takes_the_limits_and_still_chats(lang: str) -> None:
    """The turn-based server serves one client at a time, so a second
    connection from the same address waits in the backlog whatever
    --max-per-address says; the flags are taken and the session works."""
    proc, err, port = start_server_process(
        program(lang, "chat_server")
        + ["--port", "0", "--once", "--idle-timeout", "0", "--max-per-address", "1", "--max-message-size", "64"],
        stdin="hello\n",
    )
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
            heard: List[bytes] = []
            assert conn.run_session("client", lambda: None, heard.append) is tcpchat.SessionEnd.LOCAL_END
            assert heard == [b"hello"]
        proc.wait(WAIT)
    finally:
        rest = stop(proc, err)
    assert proc.returncode == 0, rest


BAD_LIMITS = [
    ["--idle-timeout", "-1"],
    ["--idle-timeout", "1.5"],
    ["--idle-timeout", "soon"],
    ["--idle-timeout"],
    ["--max-per-address", "-1"],
    ["--max-per-address", "+1"],
    ["--max-message-size", "0"],
    ["--max-message-size", "2"],  # shorter than the end word BYE
    ["--max-message-size", "4294967296"],
]


@pytest.mark.parametrize("args", BAD_LIMITS, ids=" ".join)
@pytest.mark.parametrize("name", SERVERS)
@pytest.mark.parametrize("lang", LANGS)
def test_bad_limits_print_the_usage_and_exit_2(lang: str, name: str, args: List[str]) -> None:
    result = subprocess.run(program(lang, name) + ["--port", "0"] + args, capture_output=True, text=True,
                            timeout=WAIT, env=env_for_children())
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr and result.stdout == ""


# ----- listening on every address --------------------------------------------------


def warning(every: str) -> str:
    return (f"warning: listening on every address ({every}) with no --allow list: "
            "anyone who can reach this machine can connect\n")


def ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
@pytest.mark.parametrize("name", SERVERS)
@pytest.mark.parametrize("lang", LANGS)
def test_every_address_with_no_allow_list_warns(lang: str, name: str, host: str) -> None:
    if host == "::" and not ipv6_works():
        pytest.skip("no IPv6 here")
    proc, err, _ = start_server_process(program(lang, name) + ["--host", host, "--port", "0"])
    try:
        assert err.next() == warning(host)  # right after `listening on`
    finally:
        stop(proc, err)


@pytest.mark.parametrize("name", SERVERS)
@pytest.mark.parametrize("lang", LANGS)
def test_a_deny_list_alone_still_warns(lang: str, name: str) -> None:
    proc, err, _ = start_server_process(program(lang, name) + ["--host", "0.0.0.0", "--port", "0", "--deny", "10.0.0.0/8"])
    try:
        assert err.next() == warning("0.0.0.0")
    finally:
        stop(proc, err)


@pytest.mark.parametrize("name", SERVERS)
@pytest.mark.parametrize("lang", LANGS)
def test_an_allow_list_or_loopback_does_not_warn(lang: str, name: str) -> None:
    for args in (["--host", "0.0.0.0", "--allow", "127.0.0.1"], ["--host", "127.0.0.1"]):
        proc, err, port = start_server_process(program(lang, name) + ["--port", "0"] + args, stdin="hello\n")
        try:
            # Served: anything it had to warn about is on stderr by now.
            with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
                if name == "echo_server":
                    conn.send("ping")
                assert conn.recv() is not None  # its first line, or the echo
        finally:
            rest = stop(proc, err)
        assert "warning" not in rest, (args, rest)


# ----- chat_client: waiting for the server to speak first ------------------------------


def notice(port: int) -> str:
    return f"connected to 127.0.0.1:{port}, waiting for the server to speak first\n"


@pytest.mark.parametrize("lang", LANGS)
def test_chat_client_says_it_waits_when_the_server_is_silent(lang: str) -> None:
    with tcpchat.Server("127.0.0.1", 0, read_timeout=WAIT) as srv:
        client = Child(program(lang, "chat_client") + ["--port", str(srv.port)], stdin=b"hi\n")
        try:
            with srv.accept(timeout=WAIT) as conn:
                # Silent until the client has said that it waits for us.
                while client.err.next() != notice(srv.port):
                    pass
                conn.send("hello")
                assert conn.recv() == b"hi"
                conn.send("BYE")
            assert client.finish() == b"server: hello\n"
        finally:
            client.kill()
    assert "waiting" not in client.err.rest()  # said once


@pytest.mark.parametrize("lang", LANGS)
def test_chat_client_says_nothing_when_the_server_speaks_at_once(lang: str) -> None:
    with tcpchat.Server("127.0.0.1", 0, read_timeout=WAIT) as srv:
        client = Child(program(lang, "chat_client") + ["--port", str(srv.port)], stdin=b"hi\n")
        try:
            with srv.accept(timeout=WAIT) as conn:
                conn.send("hello")
                assert conn.recv() == b"hi"
                conn.send("BYE")
            assert client.finish() == b"server: hello\n"
        finally:
            client.kill()
    assert "waiting" not in client.err.rest()


@pytest.mark.parametrize("lang", LANGS)
def test_chat_client_keeps_waiting_quietly_for_a_slow_later_turn(lang: str) -> None:
    """The one-second wait is for the first message only: a server that then
    takes longer than that to answer gets neither the notice nor an error."""
    with tcpchat.Server("127.0.0.1", 0, read_timeout=WAIT) as srv:
        client = Child(program(lang, "chat_client") + ["--port", str(srv.port)], stdin=b"hi\nfine\n")
        try:
            with srv.accept(timeout=WAIT) as conn:
                conn.send("hello")
                assert conn.recv() == b"hi"
                # What is tested is over a second of silence: let it pass.
                threading.Event().wait(1.5)
                conn.send("how are you?")
                assert conn.recv() == b"fine"
                conn.send("BYE")
            assert client.finish() == b"server: hello\nserver: how are you?\n"
        finally:
            client.kill()
    assert "waiting" not in client.err.rest()
