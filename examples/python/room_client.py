#!/usr/bin/env python3
"""The room's own `nc`: join a chat room, print every line the room sends as
it arrives, and send every line typed on stdin as it is typed, both at the
same time.

    python3 examples/python/room_client.py --host 127.0.0.1 --port 8080

Two threads share one connection (a tcpchat connection is full-duplex: one
thread may receive while another sends, and neither waits for the other):

- the receiving thread prints each line (made safe for the terminal) and,
  when the room closes the connection, ends the whole program, even while
  the main thread still waits for stdin;
- the main thread sends each stdin line; at the end of stdin it shuts down
  the write half (the room sees us leave and closes its side) and waits for
  the receiving thread to see that close.

Once both threads run, whichever decides that the program is over ends it
with os._exit: at once, for both threads. (A normal exit would first close
the connection, and the receiving thread would report the room's answer to
that close as the room closing.)
"""

from __future__ import annotations

import os
import sys
import threading

from _common import die, eprint, parser, printable, tcpchat


def print_lines(conn: tcpchat.Connection) -> None:
    """The receiving thread: print each line as it arrives, then end the
    program: 0 when the room closed the connection, 1 on an error."""
    out = sys.stdout.buffer  # UTF-8 bytes, as the Rust and C examples print, whatever the locale
    try:
        for line in conn:  # until the room closes the connection
            out.write(printable(line).encode() + b"\n")
            out.flush()
    except (tcpchat.Error, OSError) as e:  # OSError: stdout is gone
        eprint(f"room_client: {e}")
        os._exit(1)
    eprint("* connection closed by the room")
    os._exit(0)


def main() -> None:
    args = parser("room_client", "Join a chat room: print what it sends, send what you type.",
                  listen=False, framing=False).parse_args()
    try:
        conn = tcpchat.connect(args.host, args.port)  # the room speaks lines: the default
    except tcpchat.Error as e:
        die("room_client", e)

    receiver = threading.Thread(target=print_lines, args=(conn,), name="receiver", daemon=True)
    receiver.start()

    # The main thread: each stdin line goes out the moment it is typed.
    try:
        for line in sys.stdin.buffer:
            conn.send(line.removesuffix(b"\n").removesuffix(b"\r"))
        # The end of stdin: leave gracefully. The room reads the end of our
        # stream, sends what it still has for us, then closes its side.
        conn.shutdown_write()
    except tcpchat.Error as e:
        eprint(f"room_client: {e}")
        os._exit(1)
    receiver.join()  # does not return: the receiving thread ends the program


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C
        os._exit(130)
