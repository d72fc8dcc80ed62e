#!/usr/bin/env python3
"""A chat room: every line a client sends reaches every other client, as
`NAME: TEXT`. Clients speak plain lines, so `nc` and `telnet` can join;
`/nick NAME`, `/who` and `/quit` are the commands. The transcript of
messages goes to stdout, logs (joins, leaves, drops) to stderr. Ctrl-C
(SIGINT) or SIGTERM closes every client gracefully and stops.

    python3 examples/python/chat_room.py --port 9000
    nc 127.0.0.1 9000        # in as many terminals as you like
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
from typing import Optional

from _common import die, eprint, parser, printable, server_config, stderr_logger, tcpchat, warn_if_open

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def raise_fd_limit() -> None:
    """A room holds one descriptor per client: lift the soft limit on open
    files to the hard limit (often 1024 soft), as servers do."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main() -> int:
    flags = parser(
        "chat_room", "A chat room: every line a client sends reaches every other client.",
        listen=True, max_clients=True, framing=False,
        max_clients_help="clients in the room at once; one more is told the room is full"
        " (default 1024)",
    )
    args = flags.parse_args()
    config = server_config(flags, args)

    # Block SIGINT and SIGTERM in this thread before any other starts, so
    # every thread inherits the mask and the signals wait for sigwait below
    # instead of interrupting the room.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    raise_fd_limit()

    try:
        room = tcpchat.Room(args.host, args.port, config=config)
    except tcpchat.Error as e:
        die("chat_room", e)
    # The first line on stderr, with the real port: scripts and tests read it.
    eprint(f"listening on {room.address}")
    warn_if_open(room.address, config)
    tcpchat.set_log_handler(stderr_logger, tcpchat.LogLevel.INFO)

    # The handler runs on the room's loop, which must never wait for a slow
    # stdout: hand the transcript to a printer thread.
    transcript: "queue.SimpleQueue[Optional[str]]" = queue.SimpleQueue()

    @room.on_event
    def on_event(event: tcpchat.RoomEvent) -> None:
        if event.kind is tcpchat.RoomEventKind.MESSAGE:
            transcript.put(f"{event.name}: {event.text}")

    def print_transcript() -> None:
        out = sys.stdout.buffer  # UTF-8 bytes, as the Rust and C examples print, whatever the locale
        while True:
            line = transcript.get()
            if line is None:
                return
            try:
                # Names and text as members typed them: made safe for the terminal.
                shown = printable(line.encode())
                out.write(f"{shown}\n".encode())
                out.flush()
            except (OSError, ValueError):  # stdout closed: keep serving
                return

    printer = threading.Thread(target=print_transcript, name="transcript")
    printer.start()

    def wait_for_signal() -> None:
        signum = signal.sigwait(STOP_SIGNALS)
        eprint(f"chat_room: got signal {int(signum)}, closing the room")
        room.shutdown()  # thread-safe: run() below returns once every client is closed

    threading.Thread(target=wait_for_signal, name="signals", daemon=True).start()

    try:
        with room:
            stats = room.run()  # the signals are blocked here: never interrupted
    except tcpchat.Error as e:
        die("chat_room", e)
    finally:
        transcript.put(None)  # the printer writes what is left, then ends
        printer.join()
    eprint(
        f"chat_room: stopped; {stats.joined} joined, {stats.refused} refused, "
        f"{stats.messages} messages, {stats.dropped} dropped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
