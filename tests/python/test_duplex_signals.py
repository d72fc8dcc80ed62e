"""Ctrl-C on a full-duplex Connection: SIGINT raises KeyboardInterrupt
promptly in a main thread blocked in any call (recv; send to a peer that
does not read; close to a peer that does not close; waiting behind another
thread's call on the same side), with and without another thread blocked on
the other side of the same connection.

The child (duplex_signal_child.py) measures the delay itself: from the
moment the test sends the signal (a CLOCK_MONOTONIC time the test hands it
on stdin) to the moment KeyboardInterrupt comes out of the blocked call. The
contract says "promptly" (the issue: within 100 ms); on a noisy machine the
test asserts under a second and prints every figure.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from conftest import FAST_CLOSE, WAIT, LineReader, default_sigint, env_for_children, wait_until_blocked

import tcpchat

CHILD = Path(__file__).with_name("duplex_signal_child.py")

#: Bound on the delay asserted (the figure is printed; the goal is 100 ms).
MAX_DELAY = 1.0
#: How long the test waits for the child's report after the signal.
LINE_WAIT = 3.0

_FUTEX = {"x86_64": "202", "aarch64": "98"}.get(platform.machine())

#: (call, other side) -> measured delay, for the summary.
DELAYS: Dict[Tuple[str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not DELAYS:
        return
    lines = ["", "Ctrl-C delays (SIGINT sent -> KeyboardInterrupt out of the blocked call):"]
    for (call, other), delay in sorted(DELAYS.items()):
        lines.append(f"  {call:13s} other side {other:5s} {delay * 1000:8.1f} ms")
    # Shown whether or not pytest captures output (-s).
    disabled = getattr(capture, "global_and_fixture_disabled", None)
    if disabled is None:
        for line in lines:
            reporter.write_line(line)
        return
    with disabled():
        for line in lines:
            reporter.write_line(line)


def wait_until_in_futex(pid: int) -> None:
    """Wait (bounded) until the process's main thread sleeps in a futex:
    waiting for a lock (the side another thread holds)."""
    path = f"/proc/{pid}/syscall"
    if _FUTEX is None or not os.access(path, os.R_OK):
        return
    deadline = time.monotonic() + WAIT
    nr = "?"
    while time.monotonic() < deadline:
        with open(path) as f:
            nr = f.read().split(" ", 1)[0]
        if nr == _FUTEX:
            return
        time.sleep(0.002)  # polling an observable state, bounded
    raise AssertionError(f"the child's main thread never waited for a lock (last syscall {nr})")


def interrupt(call: str, other: str) -> float:
    """Run the child blocked in ``call`` (with ``other`` on the other side),
    send SIGINT, return the delay the child measured."""
    with tcpchat.Server(close_timeout=FAST_CLOSE) as srv:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(srv.port), call, other],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for_children(),
            preexec_fn=default_sigint,
        )
        assert proc.stdin is not None
        out = LineReader(proc.stdout)
        try:
            # The peer: accepts, then neither reads, sends nor closes.
            with srv.accept(timeout=WAIT):
                try:
                    first = out.next()
                except AssertionError:
                    proc.kill()
                    raise AssertionError(f"child failed: {proc.communicate(timeout=WAIT)[1]}") from None
                assert first == "ready\n", first
                if call.endswith("_behind"):
                    wait_until_in_futex(proc.pid)
                else:
                    wait_until_blocked(proc.pid)
                sent = time.monotonic()
                proc.send_signal(signal.SIGINT)
                proc.stdin.write(f"{sent!r}\n")
                proc.stdin.flush()
                try:
                    line = out.next(timeout=LINE_WAIT)
                except AssertionError:
                    raise AssertionError(
                        f"{call} (other side {other}): no KeyboardInterrupt within {LINE_WAIT} s of SIGINT"
                    ) from None
                assert line.startswith("KeyboardInterrupt "), line
                assert proc.wait(WAIT) == 0
                return float(line.split()[1])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)


CASES: List[Tuple[str, str]] = [
    ("recv", "none"),
    ("recv", "send"),
    ("send", "none"),
    ("send", "recv"),
    ("close", "none"),
    ("close", "recv"),
    ("recv_behind", "none"),
    ("recv_behind", "send"),
    ("send_behind", "none"),
    ("send_behind", "recv"),
]

# A close that still has output queued for a peer that does not read first
# flushes it; Ctrl-C ends that flush, but the close then waits for the peer
# to close for the whole close_timeout (30 s here) before KeyboardInterrupt.
# A close whose final flush is cut short by Ctrl-C then skips waiting for
# the peer (it once waited the whole close_timeout).
FLUSHING: List[Tuple[str, str]] = [
    ("close", "send"),  # the other thread's send left output queued
    ("close_queued", "none"),  # the same, with no other thread
]


@pytest.mark.parametrize("call,other", CASES, ids=[f"{c}-other_{o}" for c, o in CASES])
def test_ctrl_c_raises_keyboard_interrupt_promptly(call: str, other: str) -> None:
    delay = interrupt(call, other)
    DELAYS[(call, other)] = delay
    print(f"{call} (other side: {other}): KeyboardInterrupt {delay * 1000:.1f} ms after SIGINT")
    assert delay < MAX_DELAY, f"KeyboardInterrupt came {delay:.3f} s after SIGINT"


@pytest.mark.parametrize("call,other", FLUSHING, ids=[f"{c}-other_{o}" for c, o in FLUSHING])
def test_ctrl_c_in_a_close_that_flushes(call: str, other: str) -> None:
    delay = interrupt(call, other)
    DELAYS[(call, other)] = delay
    print(f"{call} (other side: {other}): KeyboardInterrupt {delay * 1000:.1f} ms after SIGINT")
    assert delay < MAX_DELAY, f"KeyboardInterrupt came {delay:.3f} s after SIGINT"
