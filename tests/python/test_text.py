"""Text that reaches a terminal: tcpchat.escape_text, and a tcpchat.Room that
relays no terminal control raw unless raw_text is set.

The room's members are tcpchat connections (the library's own client); every
read is bounded by the connection's read timeout.
"""

from __future__ import annotations

from typing import Tuple

import pytest
from conftest import WAIT

import tcpchat

#: The adversarial test's 16 payloads, and what a terminal must show instead.
PAYLOADS = [
    ("\x1b[2J", "\\x1b[2J"),
    ("\x1b]52;c;ZWNobyBwd25lZA==\x07", "\\x1b]52;c;ZWNobyBwd25lZA==\\x07"),
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    ("real\rfake", "real\\x0dfake"),
    ("\x1b[1A\x1b[2K", "\\x1b[1A\\x1b[2K"),
    ("a\x08b", "a\\x08b"),
    ("\x07", "\\x07"),
    ("nul\0", "nul\\x00"),
    ("\x0b\x0c", "\\x0b\\x0c"),
    ("\x7f", "\\x7f"),
    ("\u0085\u009b", "\\u{85}\\u{9b}"),
    ("\u2028", "\\u{2028}"),
    ("\u202eevil", "\\u{202e}evil"),
    ("zero\u200bwidth", "zero\\u{200b}width"),
    ("\x1b[6n", "\\x1b[6n"),
    ("\ufeff\u2066", "\\u{feff}\\u{2066}"),
]


@pytest.mark.parametrize("raw,shown", PAYLOADS)
def test_escape_text_shows_every_payload_visibly(raw: str, shown: str) -> None:
    assert tcpchat.escape_text(raw) == shown
    assert tcpchat.escape_text(raw.encode("utf-8")) == shown


def test_escape_text_keeps_ordinary_text_and_shows_bad_bytes() -> None:
    for s in ["hello", "tab\there", "back\\slash", "héllo wörld", "日本語", ""]:
        assert tcpchat.escape_text(s) == s
    assert tcpchat.escape_text(b"ok\xff\x1b") == "ok\\xff\\x1b"
    long = "x" * 100_000 + "\x1b"
    assert tcpchat.escape_text(long) == "x" * 100_000 + "\\x1b"


def _member(room: tcpchat.Room) -> Tuple[tcpchat.Connection, str]:
    conn = tcpchat.connect("127.0.0.1", room.port, read_timeout=WAIT)
    welcome = conn.recv_text() or ""
    assert welcome.startswith("* welcome, you are "), welcome
    return conn, welcome.split()[4]


def _next_from(conn: tcpchat.Connection, name: str) -> str:
    while True:
        line = conn.recv_text()
        assert line is not None, "the room closed"
        if line.startswith(name + ": "):
            return line[len(name) + 2 :]


@pytest.mark.parametrize("raw_text", [False, True])
def test_the_room_escapes_unless_raw_text(raw_text: bool) -> None:
    with tcpchat.Room(raw_text=raw_text) as room:
        room.start()
        a, name = _member(room)
        b, _ = _member(room)
        with a, b:
            for raw, shown in PAYLOADS:
                a.send(raw)
                assert _next_from(b, name) == (raw if raw_text else shown)
            room.raw_text = not raw_text
            assert room.raw_text is (not raw_text)
            a.send("\x1b[2J")
            assert _next_from(b, name) == ("\\x1b[2J" if raw_text else "\x1b[2J")
        room.shutdown()
