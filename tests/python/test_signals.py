"""Ctrl-C stops a Python program blocked in a tcpchat call within about a
second, and a signal handler that returns normally lets the call resume
(PEP 475): the library returns TCPCHAT_STATUS_INTERRUPTED, the binding runs
the Python handler, then raises or resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from conftest import FAST_CLOSE, WAIT, LineReader, default_sigint, env_for_children, wait_until_blocked

import tcpchat

CHILD = Path(__file__).with_name("signal_child.py")

def start(mode: str, *args: str) -> Tuple[subprocess.Popen, LineReader, str]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), mode, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for_children(),
        preexec_fn=default_sigint,
    )
    out = LineReader(proc.stdout)
    try:
        first = out.next()
    except AssertionError:
        proc.kill()
        raise AssertionError(f"child failed: {proc.communicate(timeout=WAIT)[1]}") from None
    assert first.startswith("ready"), first
    wait_until_blocked(proc.pid)
    return proc, out, first


def interrupt(proc: subprocess.Popen) -> Tuple[float, str]:
    """Send SIGINT; return how long the child took to exit, and its stderr."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=WAIT)
        raise AssertionError("SIGINT did not stop the child") from None
    return time.monotonic() - t0, err


@pytest.mark.parametrize("mode", ["accept", "serve_echo", "serve_chat"])
def test_ctrl_c_stops_a_blocked_server(mode: str) -> None:
    proc, _, _ = start(mode)
    elapsed, err = interrupt(proc)
    assert "KeyboardInterrupt" in err, err
    assert proc.returncode != 0
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


@pytest.mark.parametrize("mode", ["recv", "recv_no_with", "session"])
def test_ctrl_c_stops_a_blocked_client(mode: str) -> None:
    with tcpchat.Server(close_timeout=FAST_CLOSE) as srv:
        proc, _, _ = start(mode, str(srv.port))
        with srv.accept(timeout=WAIT):
            elapsed, err = interrupt(proc)
    assert "KeyboardInterrupt" in err, err
    assert proc.returncode != 0
    assert elapsed < 2.0, f"took {elapsed:.2f} s"


def test_handler_that_returns_resumes_recv() -> None:
    with tcpchat.Server(close_timeout=FAST_CLOSE) as srv:
        proc, out, _ = start("recv", str(srv.port), "--usr1")
        with srv.accept(timeout=WAIT) as conn:
            proc.send_signal(signal.SIGUSR1)
            assert out.next() == "usr1\n"
            conn.send("after the signal")  # the resumed recv gets it
            assert out.next() == "got b'after the signal'\n"
        proc.wait(WAIT)
    assert proc.returncode == 0


def test_handler_that_returns_resumes_accept() -> None:
    proc, out, first = start("accept", "--usr1")
    port = int(first.split()[1])
    proc.send_signal(signal.SIGUSR1)
    assert out.next() == "usr1\n"
    with tcpchat.connect("127.0.0.1", port, close_timeout=FAST_CLOSE):
        assert out.next() == "accepted\n"
    proc.wait(WAIT)
    assert proc.returncode == 0
