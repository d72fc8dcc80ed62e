"""Logging never kills nor stops a server: chat_room and echo_server, in
Rust, C and Python, keep serving when their stderr is closed
(`chat_room 2>&1 | head`, a supervisor whose log pipe died) or full with
nobody reading it (a stuck supervisor), and SIGTERM still stops them cleanly.

Closed: each server's stderr is a pipe whose read end the test closes right
after reading `listening on IP:PORT`; then clients come and go (log lines,
every write of them failing with EPIPE), and SIGTERM: the program must exit
with status 0 within a few seconds, having served every client. (Rust's
eprintln! panics on such a write; Python's print raises BrokenPipeError;
C's fprintf raises SIGPIPE, which kills by default.) Full: the test fills
the pipe and never reads it; a write that waited for room would wait for
ever (on the signal thread: SIGTERM ignored).

Every wait is bounded and waits for something: a reply, a line, an exit.
Needs the examples built (`cargo build --release --examples`,
`make -C examples/c`); a language whose build is missing is skipped.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from typing import List, Tuple

import pytest
from conftest import FAST_CLOSE, REPO, WAIT, Background, env_for_children, start_server_process
from test_examples import program

import tcpchat

LANGS = ["rust", "c", "python"]
#: Clients that come and go after stderr is closed.
CLIENTS = 50
#: How soon SIGTERM must stop the program (its clients have all left).
STOP_WITHIN = 5.0


def start_with_stderr_closed(cmd: List[str]) -> Tuple["subprocess.Popen[bytes]", int, Background]:
    """Start a server; read its first stderr line, `listening on IP:PORT`,
    then close the read end of its stderr pipe. Returns the process, its
    port, and its stdout being read to the end."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env_for_children(), cwd=str(REPO),
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = Background(proc.stdout.read, name="stdout")
    line = read_first_line(proc.stderr.fileno(), proc)
    proc.stderr.close()  # from here on, every write to its stderr fails (EPIPE)
    return proc, int(line.rsplit(":", 1)[1]), out


def read_first_line(fd: int, proc: "subprocess.Popen[bytes]") -> str:
    """The first line on descriptor `fd` (bounded wait); kills `proc` if none comes."""
    first = b""
    deadline = time.monotonic() + WAIT
    try:
        while b"\n" not in first:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], f"no first line on stderr: {first!r}"
            chunk = os.read(fd, 4096)
            assert chunk, f"stderr closed before the first line: {first!r}"
            first += chunk
    except BaseException:
        proc.kill()
        proc.wait(WAIT)
        raise
    line = first.split(b"\n", 1)[0].decode()
    assert line.startswith("listening on "), line
    return line


def stop(proc: "subprocess.Popen[bytes]", started: float) -> Tuple[int, float]:
    """Wait for the exit after SIGTERM sent at `started`; the exit status
    and how long it took."""
    try:
        code = proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    return code, time.monotonic() - started


def sigterm(proc: "subprocess.Popen[bytes]") -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    return started


def connect(port: int) -> tcpchat.Connection:
    return tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=FAST_CLOSE)


@pytest.mark.parametrize("lang", LANGS)
def test_chat_room_survives_a_closed_stderr(lang: str) -> None:
    proc, port, out = start_with_stderr_closed(program(lang, "chat_room") + ["--port", "0"])
    try:
        with connect(port) as stayer:
            assert stayer.recv_text().startswith("* welcome")  # type: ignore[union-attr]
            for i in range(CLIENTS):
                # A join, a line, a leave: log lines and a transcript line.
                with connect(port) as visitor:
                    assert visitor.recv_text().startswith("* welcome")  # type: ignore[union-attr]
                    assert stayer.recv_text().endswith(" joined")  # type: ignore[union-attr]
                    visitor.send(f"visit {i}")
                    assert stayer.recv_text().endswith(f": visit {i}")  # type: ignore[union-attr]
                    visitor.send("/quit")
                    assert visitor.recv() == b"* bye"
                assert stayer.recv_text().endswith(" left")  # type: ignore[union-attr]
            started = sigterm(proc)
            assert stayer.recv() == b"* server shutting down"
        code, took = stop(proc, started)  # the room's graceful close waited for ours
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert code == 0, f"exit status {code}"
    assert took < STOP_WITHIN, f"SIGTERM took {took:.1f} s"
    transcript = out.result().decode().splitlines()
    assert [line.split(": ", 1)[1] for line in transcript] == [f"visit {i}" for i in range(CLIENTS)]


@pytest.mark.parametrize("lang", LANGS)
def test_echo_server_survives_a_closed_stderr(lang: str) -> None:
    proc, port, out = start_with_stderr_closed(program(lang, "echo_server") + ["--port", "0"])
    try:
        for i in range(CLIENTS):
            with connect(port) as client:  # a log line as it comes, one as it goes
                client.send(f"ping {i}")
                assert client.recv() == f"ping {i}".encode()
        code, took = stop(proc, sigterm(proc))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert code == 0, f"exit status {code}"
    assert took < STOP_WITHIN, f"SIGTERM took {took:.1f} s"
    assert out.result() == b""


@pytest.mark.parametrize("lang", LANGS)
def test_chat_room_still_logs_to_an_open_stderr(lang: str) -> None:
    """The same programs with stderr read: the lines are all there."""
    proc, err, port = start_server_process(program(lang, "chat_room") + ["--port", "0"])
    try:
        with connect(port) as member:
            assert member.recv_text().startswith("* welcome")  # type: ignore[union-attr]
        while "left" not in err.next():
            pass
        code, _ = stop(proc, sigterm(proc))  # type: ignore[arg-type]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    log = err.rest()
    assert code == 0, log
    assert "chat_room: got signal 15, closing the room" in log
    assert "chat_room: stopped; 1 joined, 0 refused, 0 messages, 0 dropped" in log


@pytest.mark.parametrize("name", ["chat_room", "echo_server"])
@pytest.mark.parametrize("lang", LANGS)
def test_sigterm_stops_a_server_whose_stderr_is_full(lang: str, name: str) -> None:
    """A stderr pipe that is full and that nobody reads (a stuck
    supervisor): the library's records are dropped at once, the program's
    own lines after a second each; it serves, and SIGTERM stops it."""
    cmd = program(lang, name) + ["--port", "0"]
    r, w = os.pipe()
    filler = -1
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=w,
            env=env_for_children(), cwd=str(REPO),
        )
        try:
            assert proc.stdout is not None
            out = Background(proc.stdout.read, name="stdout")
            port = int(read_first_line(r, proc).rsplit(":", 1)[1])
            # Fill the pipe through a description of its own (O_NONBLOCK
            # there leaves the program's blocking): till it takes no byte more.
            filler = os.open(f"/proc/self/fd/{w}", os.O_WRONLY | os.O_NONBLOCK)
            for chunk in (b"x" * 4096, b"x"):
                try:
                    while True:
                        os.write(filler, chunk)
                except BlockingIOError:
                    pass
            for i in range(3):
                with connect(port) as client:
                    if name == "echo_server":
                        client.send(f"ping {i}")
                        assert client.recv() == f"ping {i}".encode()
                    else:
                        assert client.recv_text().startswith("* welcome")  # type: ignore[union-attr]
                        client.send("/quit")
                        assert client.recv() == b"* bye"
            code, took = stop(proc, sigterm(proc))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
        out.result()
    finally:
        for fd in (r, w, filler):
            if fd >= 0:
                os.close(fd)
    assert code == 0, f"exit status {code}"
    # Its own two lines (the signal, the stop) waited a second each at most.
    assert took < STOP_WITHIN, f"SIGTERM took {took:.1f} s"
