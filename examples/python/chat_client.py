#!/usr/bin/env python3
"""The tutorial's chat client: connect, print what the server sends as
`server: MSG`, answer with the next line typed on stdin, and take turns until
one side sends BYE (stdin's end sends BYE too).

    python3 examples/python/chat_client.py --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import sys

from _common import Stdio, die, eprint, parser, stderr_logger, tcpchat


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
            # The server speaks first. Give it a second; if it is still
            # silent, say so and wait as long as it takes. A receive that
            # times out loses nothing, and it only ever happens while we wait
            # for the server's turn, which is where a session starts: so we
            # simply start the session again.
            conn.read_timeout = 1.0
            try:
                conn.run_session(tcpchat.Role.CLIENT, terminal.next_message, terminal.on_message)
            except tcpchat.TimedOutError:
                if terminal.received == 0:
                    eprint(f"connected to {conn.peer_address}, waiting for the server to speak first")
                conn.read_timeout = None
                conn.run_session(tcpchat.Role.CLIENT, terminal.next_message, terminal.on_message)
    except (tcpchat.Error, OSError) as e:
        die("chat_client", e)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
