"""A child process for test_duplex_signals.py: blocks its main thread in one
call on a full-duplex Connection, maybe with other threads blocked on the
same connection, and is sent SIGINT by the test.

    python duplex_signal_child.py PORT CALL OTHER

PORT: the test's server, which accepts and then neither reads, sends nor
closes. CALL, what the main thread blocks in:

* ``recv``         -- recv (the peer sends nothing);
* ``send``         -- send (the socket is full: the peer does not read);
* ``close``        -- close (nothing queued; the peer does not close, and
                      close_timeout is 30 s);
* ``close_queued`` -- close with output still queued (the peer does not
                      read, nor close);
* ``recv_behind``  -- recv while another thread is blocked in recv (the
                      main thread waits for the receiving side);
* ``send_behind``  -- send while another thread is blocked in send.

OTHER, a thread using the other side at the same time: ``none``, ``recv``
(a thread blocked in recv) or ``send`` (a thread blocked in send).

Prints ``ready`` on stdout once every other thread is blocked, just before
the main thread's call. When KeyboardInterrupt comes out of that call it
notes the time at once, reads the time the test sent the signal (a
time.monotonic() value, CLOCK_MONOTONIC, the same clock in both processes)
from stdin, and prints ``KeyboardInterrupt DELAY_SECONDS``. Anything else
the call does is printed too, and the exit status is then 1.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from typing import Callable, List

import tcpchat

CHUNK = b"f" * 65536
WAIT = 10.0
POLL = {"x86_64": {"7", "271"}, "aarch64": {"73"}}.get(platform.machine(), set())


def say(line: str) -> None:
    print(line, flush=True)


def fill(conn: tcpchat.Connection) -> None:
    """Fill the socket until output stays queued: any later send blocks."""
    for _ in range(10_000):
        try:
            conn.try_send(CHUNK)
        except tcpchat.WouldBlockError:
            return
    raise SystemExit("the socket never filled up")


def blocked_thread(fn: Callable[[], object], name: str) -> None:
    """Run ``fn`` on a daemon thread; return once it sleeps in poll(),
    i.e. inside its tcpchat call."""
    tid: List[int] = []
    started = threading.Event()

    def run() -> None:
        tid.append(threading.get_native_id())
        started.set()
        try:
            fn()
        except tcpchat.Error:
            pass  # woken when the connection closes: expected in some modes

    threading.Thread(target=run, name=name, daemon=True).start()
    if not started.wait(WAIT):
        raise SystemExit(f"{name} never started")
    path = f"/proc/self/task/{tid[0]}/syscall"
    if not POLL or not os.access(path, os.R_OK):
        return
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with open(path) as f:
            if f.read().split(" ", 1)[0] in POLL:
                return
        time.sleep(0.001)  # polling an observable state, bounded
    raise SystemExit(f"{name} never blocked in poll")


def main() -> None:
    port, call, other = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    conn = tcpchat.connect("127.0.0.1", port, read_timeout=None, write_timeout=None, close_timeout=30.0)
    sends = call in ("send", "send_behind", "close_queued") or other == "send"
    if sends:
        fill(conn)
    if call == "recv_behind":
        blocked_thread(conn.recv, "receiver ahead")
    if call == "send_behind":
        blocked_thread(lambda: conn.send(CHUNK), "sender ahead")
    if other == "recv":
        blocked_thread(conn.recv, "other side: receiver")
    elif other == "send":
        blocked_thread(lambda: conn.send(CHUNK), "other side: sender")

    calls = {
        "recv": conn.recv,
        "recv_behind": conn.recv,
        "send": lambda: conn.send(CHUNK),
        "send_behind": lambda: conn.send(CHUNK),
        "close": conn.close,
        "close_queued": conn.close,
    }
    fn = calls[call]
    say("ready")
    try:
        result = fn()
    except KeyboardInterrupt:
        caught = time.monotonic()
        sent = float(sys.stdin.readline())
        say(f"KeyboardInterrupt {caught - sent:.6f}")
        os._exit(0)  # the other threads are still blocked by design
    except BaseException as e:  # reported to the test
        say(f"raised {type(e).__name__}: {e}")
        os._exit(1)
    say(f"returned {result!r}")
    os._exit(1)


if __name__ == "__main__":
    main()
