#!/usr/bin/env python3
"""An echo server for many clients at once: every message a client sends
comes back to it unchanged. Ctrl-C (SIGINT) or SIGTERM stops it cleanly.

    python3 examples/python/echo_server.py --port 9000 --max-clients 100
    nc 127.0.0.1 9000
"""

from __future__ import annotations

import signal
import sys
import threading

from _common import die, eprint, parser, server_config, stderr_logger, tcpchat, warn_if_open

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def main() -> int:
    flags = parser("echo_server", "An echo server for many clients at once.",
                   listen=True, max_clients=True)
    args = flags.parse_args()
    config = server_config(flags, args)

    # Block SIGINT and SIGTERM in this thread before any other starts, so
    # every thread inherits the mask and the signals wait for sigwait below:
    # the service runs undisturbed and stops through shutdown().
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    try:
        server = tcpchat.Server(args.host, args.port, config=config)
    except tcpchat.Error as e:
        die("echo_server", e)
    eprint(f"listening on {server.address}")
    warn_if_open(server.address, config)
    tcpchat.set_log_handler(stderr_logger, tcpchat.LogLevel.INFO)

    def wait_for_signal() -> None:
        signum = signal.sigwait(STOP_SIGNALS)
        eprint(f"echo_server: got signal {int(signum)}, stopping")
        server.shutdown()  # thread-safe: serve_echo() below returns

    threading.Thread(target=wait_for_signal, name="signals", daemon=True).start()

    with server:
        try:
            stats = server.serve_echo()
        except tcpchat.Error as e:
            die("echo_server", e)
    eprint(
        f"echo_server: stopped; served {stats.clients} clients, refused {stats.refused}, "
        f"echoed {stats.messages} messages, {stats.errors} client errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
