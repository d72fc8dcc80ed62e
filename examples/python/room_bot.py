#!/usr/bin/env python3
"""A bot for the chat room, written with tcpchat.aio (asyncio).

It joins the room, takes its name with `/nick NAME`, and answers every line
that ends with `!time` with the current time (UTC, ISO 8601). When the room
is not up yet, or goes away, it tries again after 0.1 s, then 0.2, 0.4, ...
up to 5 s (each wait a random part of that, so that many bots do not all
come back at once). Ctrl-C or SIGTERM stops it (exit status 0). It logs to
stderr.

    python3 examples/python/chat_room.py --port 9000 &
    python3 examples/python/room_bot.py --port 9000 --name timebot
    nc 127.0.0.1 9000          # and type: what's the !time
"""

from __future__ import annotations

import asyncio
import datetime
import random
import re
import signal
from typing import Optional

from _common import eprint, parser, printable, tcpchat

FIRST_DELAY = 0.1  # seconds before the first retry
MAX_DELAY = 5.0  # the longest wait between two tries

# What another member's line looks like: "NAME: TEXT" (a name is 1 to 32
# letters, digits, _ or -; the room's own notices start with "* ").
CHAT_LINE = re.compile(r"([A-Za-z0-9_-]{1,32}): (.*)")


def reply_to(line: str) -> Optional[str]:
    """The bot's answer to one line from the room, or None."""
    m = CHAT_LINE.fullmatch(line)
    if m is None or not m.group(2).rstrip().endswith("!time"):
        return None
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return f"{m.group(1)}: it is {now}"


class Bot:
    def __init__(self, host: str, port: int, name: str) -> None:
        self.host, self.port, self.name = host, port, name
        self.delay = FIRST_DELAY

    async def run(self) -> None:
        """Visit the room for ever, waiting a little longer after each failure."""
        while True:
            try:
                await self.visit()
                eprint("room_bot: the room closed the connection")
            except tcpchat.InvalidArgumentError:
                raise  # a bad setting: retrying would not help
            except tcpchat.Error as e:  # refused, reset, timed out, ...
                eprint(f"room_bot: {e}")
            pause = random.uniform(self.delay / 2, self.delay)
            eprint(f"room_bot: retrying in {pause:.2f} s")
            await asyncio.sleep(pause)
            self.delay = min(self.delay * 2, MAX_DELAY)

    async def visit(self) -> None:
        """One stay in the room, until it closes the connection."""
        conn = await tcpchat.aio.connect(self.host, self.port, close_timeout=1.0)
        try:
            if self.name:
                await conn.send(f"/nick {self.name}")
            async for raw in conn:
                line = raw.decode("utf-8", "replace")
                if line.startswith("* welcome"):
                    self.delay = FIRST_DELAY  # we got in: short waits again next time
                    eprint(f"room_bot: joined {self.host}:{self.port}")
                elif line.startswith(("* you are now known as", "error: the name",
                                      "error: invalid name")):
                    eprint(f"room_bot: {printable(raw)}")  # the room's answer to /nick
                elif (answer := reply_to(line)) is not None:
                    await conn.send(answer)
        finally:
            await conn.close()  # graceful; at once if we are being stopped twice


async def main() -> None:
    p = parser("room_bot", "A chat room bot: answers `!time` with the current time (UTC).",
               listen=False, framing=False)
    p.add_argument("--name", default="bot", help="the name to take with /nick"
                   " (default bot; empty: keep the guest name)")
    args = p.parse_args()

    # Ctrl-C and SIGTERM cancel this task: whatever it awaits raises
    # CancelledError, the connection is closed, and we return normally.
    me = asyncio.current_task()
    assert me is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, me.cancel)
    try:
        await Bot(args.host, args.port, args.name).run()
    except asyncio.CancelledError:
        eprint("room_bot: stopped")


if __name__ == "__main__":
    asyncio.run(main())
