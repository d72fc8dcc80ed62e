#!/usr/bin/env python3
"""The tutorial's chat server: wait for a client, send it the first line typed
on stdin, print its reply as `client: MSG`, and take turns until one side
sends BYE (or stdin ends, which sends BYE). Then serve the next client,
unless --once. A client that leaves while the operator types ends its
session at once (`client left` on stderr): the handler waits for stdin and
the connection together (Stdio in _common.py).

    python3 examples/python/chat_server.py --port 8080
    python3 examples/python/chat_client.py --port 8080     # in another terminal
"""

from __future__ import annotations

import sys

from _common import Stdio, die, eprint, parser, server_config, stderr_logger, tcpchat, warn_if_open


def main() -> int:
    flags = parser("chat_server", "The tutorial's chat server.", listen=True, once=True)
    args = flags.parse_args()
    config = server_config(flags, args)
    try:
        server = tcpchat.Server(args.host, args.port, config=config)
    except tcpchat.Error as e:
        die("chat_server", e)
    # The first line on stderr, with the real port: scripts and tests read it.
    eprint(f"listening on {server.address}")
    warn_if_open(server.address, config)
    tcpchat.set_log_handler(stderr_logger, tcpchat.LogLevel.INFO)

    terminal = Stdio("client", "server> ")
    with server:
        try:
            server.serve_chat(terminal.next_message, terminal.on_message, once=args.once)
        except (tcpchat.Error, OSError) as e:
            die("chat_server", e)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
