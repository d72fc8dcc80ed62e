"""The asyncio room bot (examples/python/room_bot.py) against a tcpchat.Room
in this process: it answers `!time`, reconnects with backoff when the room
goes away or is not up yet, and stops with status 0 on SIGINT/SIGTERM.

The tests follow the bot through its stderr lines (`joined`, `refused`,
`retrying in X s`), never by sleeping."""

from __future__ import annotations

import datetime
import importlib.util
import re
import signal
import subprocess
import sys
from typing import Iterator, List, Tuple

import pytest

from conftest import FAST_CLOSE, PY_EXAMPLES, REPO, WAIT, LineReader, default_sigint, env_for_children

import tcpchat

BOT = PY_EXAMPLES / "room_bot.py"
RETRY = re.compile(r"room_bot: retrying in ([0-9.]+) s")


class Bot:
    """The bot as a child process, with its stderr lines."""

    def __init__(self, port: int, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BOT), "--port", str(port), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for_children(),
            cwd=str(REPO),
            preexec_fn=default_sigint,
        )
        self.err = LineReader(self.proc.stderr)

    def wait_for(self, text: str) -> List[str]:
        """Read stderr lines until one contains ``text``; return them all."""
        lines = []
        while True:
            line = self.err.next().rstrip("\n")
            lines.append(line)
            if text in line:
                return lines

    def stop(self, signum: int) -> Tuple[int, str]:
        self.proc.send_signal(signum)
        code = self.proc.wait(WAIT)
        return code, self.err.rest()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)


@pytest.fixture
def rooms() -> Iterator[List[tcpchat.Room]]:
    """Rooms a test starts (room.start()); all closed at the end."""
    started: List[tcpchat.Room] = []
    yield started
    for room in started:
        room.close()


def open_room(rooms: List[tcpchat.Room], port: int = 0) -> tcpchat.Room:
    room = tcpchat.Room("127.0.0.1", port, close_timeout=FAST_CLOSE)
    room.start()
    rooms.append(room)
    return room


def ask_time(port: int) -> str:
    """Join the room, say `... !time`, return the bot's answer."""
    with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=FAST_CLOSE) as me:
        welcome = me.recv_text()
        assert welcome is not None and welcome.startswith("* welcome, you are "), welcome
        my_name = welcome.split()[4]
        me.send("what's the !time")
        while True:
            line = me.recv_text()
            assert line is not None, "the room closed before the bot answered"
            if line.startswith("bot: "):
                break
        me.shutdown_write()
    m = re.fullmatch(r"bot: (\S+): it is (\S+)", line)
    assert m is not None, line
    assert m.group(1) == my_name
    when = datetime.datetime.fromisoformat(m.group(2))
    assert when.utcoffset() == datetime.timedelta(0)  # UTC
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - when).total_seconds()) < 60
    return line


def retries(lines: List[str]) -> List[float]:
    return [float(m.group(1)) for m in map(RETRY.search, lines) if m]


def check_backoff(waits: List[float]) -> None:
    """Each wait is a random part (a half to all) of 0.1 s doubling to 5 s."""
    for n, wait in enumerate(waits):
        cap = min(0.1 * 2**n, 5.0)
        assert cap / 2 - 0.01 <= wait <= cap + 0.01, (n, waits)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_bot_answers_and_comes_back_after_a_restart(
    rooms: List[tcpchat.Room], signum: int
) -> None:
    room = open_room(rooms)
    port = room.port
    bot = Bot(port)
    try:
        bot.wait_for("room_bot: * you are now known as bot")
        ask_time(port)

        # The room goes away: the bot notices, and retries, refused, with
        # growing waits, while nothing listens.
        room.shutdown()
        room.close()
        lines = bot.wait_for("the room closed the connection")
        lines = bot.wait_for("refused")
        lines += bot.wait_for("retrying in")
        lines += bot.wait_for("refused")
        lines += bot.wait_for("retrying in")

        # A new room on the same port: the bot joins it and answers again.
        open_room(rooms, port)
        lines += bot.wait_for("room_bot: * you are now known as bot")
        check_backoff(retries(lines))
        ask_time(port)

        code, rest = bot.stop(signum)
        assert code == 0, rest
        assert "room_bot: stopped" in rest
        assert "Traceback" not in rest
    finally:
        bot.kill()


def test_the_bot_waits_for_a_room_that_is_not_up_yet(rooms: List[tcpchat.Room]) -> None:
    with tcpchat.Server() as probe:
        port = probe.port  # free once the block ends
    bot = Bot(port, "--name", "bot")
    try:
        lines: List[str] = []
        for _ in range(3):
            lines += bot.wait_for("retrying in")
        assert sum("refused" in line for line in lines) == 3
        open_room(rooms, port)
        lines += bot.wait_for("room_bot: * you are now known as bot")
        check_backoff(retries(lines))
        ask_time(port)
        # Joined: the waits start short again after the next loss.
        rooms[0].shutdown()
        after = bot.wait_for("retrying in")
        assert retries(after)[0] <= 0.1 + 0.01
        code, rest = bot.stop(signal.SIGTERM)
        assert code == 0, rest
    finally:
        bot.kill()


def test_bad_flags_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, str(BOT), "--port", "nope"],
        capture_output=True, text=True, timeout=WAIT, env=env_for_children(),
    )
    assert done.returncode == 2
    assert "usage" in done.stderr


def _load_bot_module() -> object:
    sys.path.insert(0, str(PY_EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location("room_bot", BOT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(PY_EXAMPLES))


def test_which_lines_get_an_answer() -> None:
    reply_to = getattr(_load_bot_module(), "reply_to")
    assert reply_to("alice: what's the !time").startswith("alice: it is ")
    assert reply_to("alice: !time").startswith("alice: it is ")
    assert reply_to("alice: !time  ").startswith("alice: it is ")
    assert reply_to("alice: !time please") is None
    assert reply_to("alice: hello") is None
    assert reply_to("* alice joined") is None
    assert reply_to("* welcome, you are guest1 (commands: /nick NAME, /who, /quit) !time") is None
    assert reply_to("!time") is None
