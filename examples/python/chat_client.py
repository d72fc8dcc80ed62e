#!/usr/bin/env python3
"""The tutorial's chat client: connect, print what the server sends as
`server: MSG`, answer with the next line typed on stdin, and take turns until
one side sends BYE (stdin's end sends BYE too).

    python3 examples/python/chat_client.py --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import sys

from _common import Stdio, die, parser, stderr_logger, tcpchat


def main() -> int:
    args = parser("chat_client", "The tutorial's chat client.", listen=False).parse_args()
    tcpchat.set_log_handler(stderr_logger, tcpchat.LogLevel.INFO)
    try:
        conn = tcpchat.connect(args.host, args.port, framing=args.framing)
    except tcpchat.Error as e:
        die("chat_client", e)

    terminal = Stdio("server", "client> ")
    try:
        with conn:  # closes gracefully: everything we sent (BYE included) arrives
            conn.run_session(tcpchat.Role.CLIENT, terminal.next_message, terminal.on_message)
    except (tcpchat.Error, OSError) as e:
        die("chat_client", e)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
