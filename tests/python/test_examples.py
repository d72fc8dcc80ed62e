"""The Python example programs: their flags and output (CONTRACT.md), and
interop with the Rust and C examples over the wire."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import (
    C_EXAMPLES,
    PY_EXAMPLES,
    REPO,
    RUST_EXAMPLES,
    WAIT,
    env_for_children,
    start_server_process,
    wait_until_blocked,
)

import tcpchat


def program(lang: str, name: str) -> List[str]:
    """The command line of example `name` in `lang`; skips when not built."""
    if lang == "python":
        return [sys.executable, str(PY_EXAMPLES / f"{name}.py")]
    path: Path = {"rust": RUST_EXAMPLES, "c": C_EXAMPLES}[lang] / name
    if not path.exists():
        how = {"rust": "cargo build --release --examples", "c": "make -C examples/c"}[lang]
        pytest.skip(f"the {lang} example {path.relative_to(REPO)} is not built (run `{how}`)")
    return [str(path)]


SERVER_SAYS = "hello client\nhow are you?\n"
CLIENT_SAYS = "hi server\nfine\n"
# The server's stdin ends after two lines: it sends BYE on its third turn.
SERVER_HEARS = "client: hi server\nclient: fine\n"
CLIENT_HEARS = "server: hello client\nserver: how are you?\n"

PAIRS = [
    ("python", "python"),
    ("python", "rust"),
    ("rust", "python"),
    ("python", "c"),
    ("c", "python"),
]


@pytest.mark.parametrize("framing", ["line", "frame", "raw"])
@pytest.mark.parametrize("server_lang,client_lang", PAIRS)
def test_chat_transcripts(server_lang: str, client_lang: str, framing: str) -> None:
    server_cmd = program(server_lang, "chat_server") + ["--port", "0", "--once", "--framing", framing]
    client_cmd = program(client_lang, "chat_client")
    proc, err, port = start_server_process(server_cmd, stdin=SERVER_SAYS)
    try:
        client = subprocess.run(
            client_cmd + ["--host", "127.0.0.1", "--port", str(port), "--framing", framing],
            input=CLIENT_SAYS,
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=env_for_children(),
            cwd=str(REPO),
        )
        assert proc.stdout is not None
        server_out = proc.stdout.read()
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert client.returncode == 0, client.stderr
    assert proc.returncode == 0, err.rest()
    assert client.stdout == CLIENT_HEARS
    assert server_out == SERVER_HEARS
    # No prompt when stdin is not a terminal; logs go to stderr only.
    assert "client>" not in client.stderr and "server>" not in err.rest()


def test_chat_server_serves_the_next_client_without_once() -> None:
    proc, err, port = start_server_process(
        program("python", "chat_server") + ["--port", "0"], stdin="one\ntwo\n"
    )
    try:
        for expected in ([b"one"], [b"two"]):
            with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT) as conn:
                heard: List[bytes] = []
                end = conn.run_session("client", lambda: None, heard.append)
                assert heard == expected and end is tcpchat.SessionEnd.LOCAL_END
        wait_until_blocked(proc.pid)  # waiting for the next client
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(WAIT)
    assert proc.returncode == 130  # Ctrl-C: exits quietly with 128 + SIGINT


def test_chat_client_reports_a_refused_connection() -> None:
    with tcpchat.Server() as srv:
        port = srv.port  # listening now, free once the block ends
    result = subprocess.run(
        program("python", "chat_client") + ["--port", str(port)],
        input="",
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env_for_children(),
    )
    assert result.returncode == 1
    assert result.stderr.startswith("chat_client: ") and "refused" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name", ["chat_server", "chat_client", "echo_server"])
@pytest.mark.parametrize(
    "args",
    [["--bogus"], ["--port", "99999"], ["--port", "x"], ["--framing", "morse"], ["--port"]],
)
def test_bad_flags_exit_2(name: str, args: List[str]) -> None:
    result = subprocess.run(
        program("python", name) + args, capture_output=True, text=True, timeout=WAIT, env=env_for_children()
    )
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr and result.stdout == ""


def test_flags_unknown_to_a_program_are_refused() -> None:
    for name, flag in [("chat_client", "--once"), ("chat_server", "--max-clients"), ("echo_server", "--once")]:
        extra = ["3"] if flag == "--max-clients" else []
        result = subprocess.run(
            program("python", name) + [flag] + extra,
            capture_output=True, text=True, timeout=WAIT, env=env_for_children(),
        )
        assert result.returncode == 2, (name, flag)


def test_help_exits_0() -> None:
    for name in ("chat_server", "chat_client", "echo_server"):
        result = subprocess.run(
            program("python", name) + ["--help"], capture_output=True, text=True, timeout=WAIT,
            env=env_for_children(),
        )
        assert result.returncode == 0 and "--port" in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("framing", ["line", "frame"])
def test_echo_server_example(sig: signal.Signals, framing: str) -> None:
    proc, err, port = start_server_process(
        program("python", "echo_server") + ["--port", "0", "--framing", framing, "--max-clients", "4"]
    )
    try:
        with tcpchat.connect("127.0.0.1", port, framing=framing, read_timeout=WAIT) as conn:
            conn.send_many([b"one", b"two"])
            assert [conn.recv(), conn.recv()] == [b"one", b"two"]
        proc.send_signal(sig)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0
    rest = err.rest()
    assert f"got signal {int(sig)}, stopping" in rest
    assert "stopped; served 1 clients, refused 0, echoed 2 messages, 0 client errors" in rest


@pytest.mark.parametrize("server_lang", ["rust", "c"])
def test_python_client_against_other_echo_servers(server_lang: str) -> None:
    proc, err, port = start_server_process(program(server_lang, "echo_server") + ["--port", "0"])
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT) as conn:
            msgs = [f"echo {i}".encode() for i in range(100)]
            conn.send_many(msgs)
            got: List[bytes] = []
            while len(got) < len(msgs):
                got.extend(conn.recv_many())
            assert got == msgs
        proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0, err.rest()


def test_examples_run_without_the_package_installed(tmp_path: Path) -> None:
    """As from a fresh clone: no PYTHONPATH, not installed, run from
    elsewhere; the example finds bindings/python itself."""
    env: Dict[str, str] = {k: v for k, v in env_for_children().items() if k != "PYTHONPATH"}
    script = str(PY_EXAMPLES / "chat_client.py")
    result = subprocess.run(
        [sys.executable, "-S", script, "--help"],  # -S: no site-packages at all
        capture_output=True, text=True, timeout=WAIT, env=env, cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr


def test_echo_server_deny_and_allow_flags() -> None:
    proc, err, port = start_server_process(
        program("python", "echo_server") + ["--port", "0", "--deny", "127.0.0.0/8"]
    )
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
            assert conn.recv() is None  # closed at once, without a byte
        proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    rest = err.rest()
    assert "not allowed" in rest and "served 0 clients" in rest
    proc, err, port = start_server_process(
        program("python", "echo_server")
        + ["--port", "0", "--allow", "127.0.0.1,::1", "--allow", "192.168.0.0/16", "--deny", "10.0.0.0/8"]
    )
    try:
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT) as conn:
            conn.send("hi")
            assert conn.recv() == b"hi"
        proc.send_signal(signal.SIGTERM)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0
    assert "served 1 clients" in err.rest()


@pytest.mark.parametrize("name", ["chat_server", "echo_server"])
def test_a_range_that_does_not_parse_is_a_usage_error(name: str) -> None:
    result = subprocess.run(
        program("python", name) + ["--port", "0", "--deny", "10.0.0.0/99"],
        capture_output=True, text=True, timeout=WAIT, env=env_for_children(),
    )
    assert result.returncode == 2
    assert "10.0.0.0" in result.stderr
