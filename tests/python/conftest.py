"""Shared fixtures and helpers of the Python binding's tests.

Every server binds 127.0.0.1 port 0 and the real port is read back; every
wait is bounded (a bug fails a test instead of hanging it); nothing sleeps
to synchronise: tests wait on a read, an Event, a thread, or a process line.
"""

from __future__ import annotations

import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
BINDINGS = REPO / "bindings" / "python"

try:
    import tcpchat  # installed (pip install -e bindings/python)
except ImportError:
    sys.path.insert(0, str(BINDINGS))
    import tcpchat

#: Bound on every wait in the tests, in seconds.
WAIT = 10.0
#: The close timeout of most test connections. A graceful close waits up to
#: this long for the peer to close too; when both ends live in the test's
#: own thread, nobody else will, so the default 2 s would only slow tests.
FAST_CLOSE = 0.1

PY_EXAMPLES = REPO / "examples" / "python"
RUST_EXAMPLES = REPO / "target" / "release" / "examples"
C_EXAMPLES = REPO / "examples" / "c" / "build"


# Syscall numbers of the waits the library blocks in: poll / ppoll, and
# epoll_wait / epoll_pwait / epoll_pwait2 (the event loops of the room and
# the echo service).
_POLL_SYSCALLS = {
    "x86_64": {"7", "271", "232", "281", "441"},
    "aarch64": {"73", "22", "441"},
}.get(platform.machine(), set())


def wait_until_blocked(pid: int) -> None:
    """Wait (bounded) until the process's main thread sleeps in poll(), i.e.
    inside the library's blocking wait, so that a signal sent next lands
    there. (A signal landing in the few microseconds between Python's last
    signal check and the library's poll() is only handled when the call
    returns; CPython's own blocking calls share that window. Tests must not
    depend on hitting or missing it.) Reads /proc; where that says nothing
    useful, the caller's own readiness line has to do."""
    path = f"/proc/{pid}/syscall"
    if not _POLL_SYSCALLS or not os.access(path, os.R_OK):
        return
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                nr = f.read().split(" ", 1)[0]
        except OSError:
            return
        if nr in _POLL_SYSCALLS:
            return
        time.sleep(0.002)  # polling an observable state, bounded
    raise AssertionError(f"the child never blocked in poll (last syscall {nr})")


def default_sigint() -> None:
    """preexec_fn for children that must react to SIGINT: when the test run
    itself was started with SIGINT ignored (a background job of a
    non-interactive shell), the children would inherit that, and Python
    installs its KeyboardInterrupt handler only when SIGINT is not ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def env_for_children() -> dict:
    """The environment for Python subprocesses: they find this package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BINDINGS), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def server() -> Iterator[tcpchat.Server]:
    """A server on 127.0.0.1, any free port; receives time out after WAIT."""
    with tcpchat.Server("127.0.0.1", 0, read_timeout=WAIT, close_timeout=FAST_CLOSE) as srv:
        yield srv


@pytest.fixture
def pair(server: tcpchat.Server) -> Iterator[Tuple[tcpchat.Connection, tcpchat.Connection]]:
    """(client, accepted) connected to each other, LINE framing."""
    client = tcpchat.connect("127.0.0.1", server.port, read_timeout=WAIT, close_timeout=FAST_CLOSE)
    accepted = server.accept(timeout=WAIT)
    try:
        yield client, accepted
    finally:
        close_pair(client, accepted)


def close_pair(*conns: tcpchat.Connection) -> None:
    """Close connections whose peers live in this same thread without waiting
    out the close timeout: a graceful close waits for the peer to finish, so
    shut every write half down first (each peer then sees end of stream)."""
    for c in conns:
        try:
            c.shutdown_write()
        except tcpchat.Error:
            pass
    for c in conns:
        try:
            c.close()
        except tcpchat.Error:
            pass


def make_pair(**options: Any) -> Tuple[tcpchat.Server, tcpchat.Connection, tcpchat.Connection]:
    """A server and a connected (client, accepted) pair with these settings."""
    options.setdefault("read_timeout", WAIT)
    options.setdefault("close_timeout", FAST_CLOSE)
    srv = tcpchat.Server("127.0.0.1", 0, **options)
    client = tcpchat.connect("127.0.0.1", srv.port, **options)
    accepted = srv.accept(timeout=WAIT)
    return srv, client, accepted


class Background:
    """Run ``fn`` on a thread; ``result()`` joins it (bounded) and returns
    its value or re-raises its exception."""

    def __init__(self, fn: Callable[[], Any], name: str = "background") -> None:
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as e:  # handed to result()
            self._error = e

    def result(self, timeout: float = WAIT) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self._thread.name} did not finish within {timeout} s"
        if self._error is not None:
            raise self._error
        return self._value


class LineReader:
    """Collect a pipe's lines on a thread, so they can be awaited with a
    timeout (a plain readline could block for ever)."""

    def __init__(self, pipe: Any) -> None:
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.seen: List[str] = []
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: Any) -> None:
        for line in iter(pipe.readline, ""):
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float = WAIT) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; so far: {self.seen!r}") from None
        if line is None:
            raise AssertionError(f"the pipe closed; lines so far: {self.seen!r}")
        self.seen.append(line)
        return line

    def rest(self, timeout: float = WAIT) -> str:
        """Everything until the pipe closes."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the pipe did not close"
        out = []
        while True:
            line = self.lines.get_nowait()
            if line is None:
                break
            out.append(line)
        self.seen.extend(out)
        return "".join(out)


def start_server_process(cmd: List[str], stdin: Optional[str] = None) -> Tuple[subprocess.Popen, LineReader, int]:
    """Start a server example; wait for its `listening on IP:PORT` line and
    return the process, its stderr reader and the port."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for_children(),
        cwd=str(REPO),
        preexec_fn=default_sigint,
    )
    assert proc.stdin is not None
    if stdin is not None:
        proc.stdin.write(stdin)
    proc.stdin.close()
    err = LineReader(proc.stderr)
    try:
        first = err.next()
    except AssertionError:
        proc.kill()
        proc.wait(WAIT)
        raise
    assert first.startswith("listening on "), first
    port = int(first.strip().rsplit(":", 1)[1])
    assert port > 0
    return proc, err, port


@pytest.fixture(autouse=True)
def _no_log_handler() -> Iterator[None]:
    """Tests that install a log handler get it removed afterwards."""
    yield
    tcpchat.set_log_handler(None)
