#!/usr/bin/env python3
"""A tcpchat client driven by asyncio: the connection's descriptor goes to
``loop.add_reader``, and the non-blocking calls (``try_send``,
``try_flush``, ``try_recv``) never wait, so the event loop stays free for
other work (here a ticker that keeps running while replies come in).

Point it at an echo server:

    python3 examples/python/echo_server.py --port 9000 &
    python3 examples/python/asyncio_client.py --port 9000 hello world

It sends each argument (or, without arguments, each stdin line) as one
message, prints every reply as ``reply: MSG`` on stdout, and exits once a
reply came back for each message (or the server closed).
"""

from __future__ import annotations

import asyncio
import sys
from typing import List

from _common import die, parser, printable, tcpchat


async def talk(conn: tcpchat.Connection, messages: List[bytes], timeout: float) -> int:
    """Send every message, print every reply; return how many came back."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    replies: List[bytes] = []
    outbox = list(messages)

    def pump() -> None:
        # Called when the descriptor is readable: queued output can move, or
        # a message (or end of stream) is waiting. Never blocks.
        try:
            while outbox:
                conn.try_send(outbox[0])  # raises WouldBlockError when stuck
                outbox.pop(0)
            conn.try_flush()
            while True:
                msg = conn.try_recv()  # raises WouldBlockError when nothing is complete
                if msg is None:  # the server closed
                    break
                replies.append(msg)
                print(f"reply: {printable(msg)}", flush=True)  # made safe for the terminal
                if len(replies) == len(messages):
                    break
        except tcpchat.WouldBlockError:
            return  # wait for the next readiness
        except tcpchat.Error as e:
            if not done.done():
                done.set_exception(e)
            return
        if not done.done():
            done.set_result(None)

    async def ticker() -> None:
        # Other work the loop keeps doing meanwhile.
        while True:
            await asyncio.sleep(0.05)

    fd = conn.fileno()
    loop.add_reader(fd, pump)
    tick = asyncio.create_task(ticker())
    try:
        pump()  # start sending at once; the reader takes it from there
        if messages:
            await asyncio.wait_for(done, timeout)
    finally:
        loop.remove_reader(fd)
        tick.cancel()
    return len(replies)


def main() -> None:
    p = parser("asyncio_client", "Send messages to an echo server from an asyncio event loop.",
               listen=False)
    p.add_argument("--timeout", type=float, default=10.0,
                   help="give up after this many seconds (default 10)")
    p.add_argument("messages", nargs="*", help="messages to send (default: stdin lines)")
    args = p.parse_args()
    if args.messages:
        messages = [m.encode() for m in args.messages]
    else:
        messages = [line.rstrip(b"\r\n") for line in sys.stdin.buffer]
    try:
        with tcpchat.connect(args.host, args.port, framing=tcpchat.Framing.parse(args.framing),
                             close_timeout=0.5) as conn:
            got = asyncio.run(talk(conn, messages, args.timeout))
    except (tcpchat.Error, asyncio.TimeoutError) as e:
        die("asyncio_client", e)
    if got != len(messages):
        die("asyncio_client", RuntimeError(f"{got} of {len(messages)} replies came back"))


if __name__ == "__main__":
    main()
