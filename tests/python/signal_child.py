"""A child process for test_signals.py: blocks in one tcpchat call and is
sent a signal by the test.

    python signal_child.py MODE [PORT] [--usr1]

Prints `ready` on stdout just before blocking. With --usr1, a SIGUSR1 handler
that returns normally is installed (it prints `usr1`): the blocked call must
resume and complete.
"""

from __future__ import annotations

import signal
import sys

import tcpchat


def main() -> None:
    mode = sys.argv[1]
    if "--usr1" in sys.argv:
        signal.signal(signal.SIGUSR1, lambda signum, frame: print("usr1", flush=True))
    if mode == "accept":
        with tcpchat.Server() as srv:
            print(f"ready {srv.port}", flush=True)
            conn = srv.accept()
            print("accepted", flush=True)
            conn.close()
    elif mode == "serve_echo":
        with tcpchat.Server() as srv:
            print(f"ready {srv.port}", flush=True)
            srv.serve_echo()
    elif mode == "serve_chat":
        with tcpchat.Server() as srv:
            print(f"ready {srv.port}", flush=True)
            srv.serve_chat(lambda: None, lambda msg: None)
    elif mode == "recv":
        # PORT: the test's server; it sends a message when the test wants.
        with tcpchat.connect("127.0.0.1", int(sys.argv[2])) as conn:
            print("ready", flush=True)
            msg = conn.recv()
            print(f"got {msg!r}", flush=True)
    elif mode == "recv_no_with":
        # No `with`: the connection is still open when the program exits.
        conn = tcpchat.connect("127.0.0.1", int(sys.argv[2]))
        print("ready", flush=True)
        conn.recv()
    elif mode == "session":
        with tcpchat.connect("127.0.0.1", int(sys.argv[2])) as conn:
            print("ready", flush=True)
            conn.run_session("client", lambda: None, lambda msg: None)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
