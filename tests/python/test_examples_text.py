"""Peer text reaches the example programs' stdout escaped, never raw
(CONTRACT.md, "Text that reaches a terminal"), and the Rust, C and Python
examples print exactly the same bytes for it.

The 16 hostile payloads of issue 12 (screen clear, OSC 52 clipboard write,
title change, bare CR, cursor moves, BS, BEL, NUL, VT/FF, DEL, C1 controls,
bidi and invisible format characters, the cursor-position query, BOM) are
sent by a peer, tcpchat's own client or server in `line` or `raw` framing
(raw: with nc's newline), to every example that prints peer text:
chat_server (`client: MSG`), chat_client (`server: MSG`), chat_room (its
transcript of `NAME: TEXT`) and room_client; echo_server prints none.

Needs the examples built (`cargo build --release --examples`,
`make -C examples/c`); a language whose build is missing is skipped.
Nothing sleeps: each step waits (bounded) on a reply, a line or a process.
"""

from __future__ import annotations

import io
import random
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import IO, List, Optional, Tuple

import pytest
from conftest import C_EXAMPLES, PY_EXAMPLES, REPO, RUST_EXAMPLES, WAIT, Background, LineReader, env_for_children

import tcpchat

LANGS = ["rust", "c", "python"]

#: (what it is, what the peer sends, what the example must print instead).
PAYLOADS: List[Tuple[str, bytes, str]] = [
    ("clear screen", b"\x1b[2J", r"\x1b[2J"),
    ("OSC 52 clipboard", b"\x1b]52;c;ZWNobyBwd25lZA==\x07", r"\x1b]52;c;ZWNobyBwd25lZA==\x07"),
    ("OSC 0 title", b"\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),
    ("bare CR", b"real\r* server shutting down", r"real\x0d* server shutting down"),
    ("cursor up, erase", b"\x1b[1A\x1b[2K", r"\x1b[1A\x1b[2K"),
    ("backspace", b"a\x08b", r"a\x08b"),
    ("bell", b"ding\x07", r"ding\x07"),
    ("NUL", b"nul\x00byte", r"nul\x00byte"),
    ("VT, FF", b"\x0b\x0c", r"\x0b\x0c"),
    ("DEL", b"\x7f", r"\x7f"),
    ("C1 NEL, CSI", "\u0085\u009b31m".encode(), r"\u{85}\u{9b}31m"),
    ("line separator", "one\u2028two".encode(), r"one\u{2028}two"),
    ("RTL override", "\u202etxet".encode(), r"\u{202e}txet"),
    ("zero width space", "zero\u200bwidth".encode(), r"zero\u{200b}width"),
    ("cursor position query", b"\x1b[6n", r"\x1b[6n"),
    ("BOM, isolate", "\ufeff\u2066bom".encode(), r"\u{feff}\u{2066}bom"),
]
SENT = [sent for _, sent, _ in PAYLOADS]
SHOWN = [shown for _, _, shown in PAYLOADS]


def program(lang: str, name: str) -> List[str]:
    """The command line of example `name` in `lang`; skips when not built."""
    if lang == "python":
        return [sys.executable, str(PY_EXAMPLES / f"{name}.py")]
    path: Path = {"rust": RUST_EXAMPLES, "c": C_EXAMPLES}[lang] / name
    if not path.exists():
        how = {"rust": "cargo build --release --examples", "c": "make -C examples/c"}[lang]
        pytest.skip(f"the {lang} example {path.relative_to(REPO)} is not built (run `{how}`)")
    return [str(path)]


class Child:
    """An example as a child process: stdin written and closed at the start,
    stdout collected as bytes, stderr as lines (the first is awaited by
    servers: `listening on IP:PORT`)."""

    def __init__(self, cmd: List[str], stdin: bytes = b"") -> None:
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env_for_children(), cwd=str(REPO),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdin.write(stdin)
        self.proc.stdin.close()
        out: IO[bytes] = self.proc.stdout
        self._out = Background(out.read, name="stdout")
        self.err = LineReader(io.TextIOWrapper(self.proc.stderr, encoding="utf-8", errors="backslashreplace"))

    def port(self) -> int:
        first = self.err.next()
        assert first.startswith("listening on "), first
        return int(first.strip().rsplit(":", 1)[1])

    def finish(self, sig: Optional[signal.Signals] = None) -> bytes:
        """Signal it (if asked), wait for it to exit 0; its stdout."""
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(WAIT)
        finally:
            self.kill()
        out: bytes = self._out.result()
        assert code == 0, (code, self.err.rest())
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)


#: What CONTRACT.md says never reaches a terminal raw: C0 controls but TAB
#: (and the newline ending each line), DEL, C1, the invisible format characters.
_UNSAFE = {*range(0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0), *range(0x200B, 0x2010),
           *range(0x2028, 0x202F), *range(0x2060, 0x206A), 0xFEFF}


def lines_of(out: bytes) -> List[str]:
    """stdout as lines, checked: UTF-8 (strictly), and nothing raw in it."""
    text = out.decode("utf-8")
    assert text == "" or text.endswith("\n"), text
    lines = text.split("\n")[:-1]
    for line in lines:
        bad = [f"U+{ord(c):04X} {unicodedata.name(c, '')}" for c in line if ord(c) in _UNSAFE]
        assert not bad, (line, bad)
    return lines


def as_peer_sends(framing: str, msg: bytes) -> bytes:
    """A message as a peer sends it: in raw framing with nc's newline."""
    return msg + b"\n" if framing == "raw" else msg


# ----- chat_server: `client: MSG` ------------------------------------------


def chat_server_prints(lang: str, framing: str, msgs: List[bytes]) -> List[str]:
    """chat_server's transcript when a tcpchat client answers each of its
    lines with the next of `msgs`, then says BYE."""
    server = Child(program(lang, "chat_server") + ["--port", "0", "--once", "--framing", framing],
                   stdin=b"ok\n" * (len(msgs) + 1))
    try:
        port = server.port()
        with tcpchat.connect("127.0.0.1", port, framing=framing, read_timeout=WAIT) as conn:
            for msg in msgs:
                assert conn.recv() == b"ok"
                conn.send(as_peer_sends(framing, msg))
            assert conn.recv() == b"ok"
            conn.send(b"BYE")
        return lines_of(server.finish())
    finally:
        server.kill()


@pytest.mark.parametrize("framing", ["line", "raw"])
@pytest.mark.parametrize("lang", LANGS)
def test_chat_server_prints_every_payload_escaped(lang: str, framing: str) -> None:
    assert chat_server_prints(lang, framing, SENT) == [f"client: {shown}" for shown in SHOWN]


# ----- chat_client: `server: MSG` ------------------------------------------


def chat_client_prints(lang: str, framing: str, msgs: List[bytes]) -> List[str]:
    """chat_client's transcript when a tcpchat server sends `msgs`, one a
    turn, then BYE."""
    with tcpchat.Server("127.0.0.1", 0, framing=framing, read_timeout=WAIT) as srv:
        client = Child(program(lang, "chat_client") + ["--port", str(srv.port), "--framing", framing],
                       stdin=b"ok\n" * len(msgs))
        try:
            with srv.accept(timeout=WAIT) as conn:
                for msg in msgs:
                    conn.send(as_peer_sends(framing, msg))
                    assert conn.recv() == b"ok"
                conn.send(b"BYE")
            return lines_of(client.finish())
        finally:
            client.kill()


@pytest.mark.parametrize("framing", ["line", "raw"])
@pytest.mark.parametrize("lang", LANGS)
def test_chat_client_prints_every_payload_escaped(lang: str, framing: str) -> None:
    assert chat_client_prints(lang, framing, SENT) == [f"server: {shown}" for shown in SHOWN]


# ----- chat_room: its transcript `NAME: TEXT` ---------------------------------


def chat_room_prints(lang: str, msgs: List[bytes]) -> List[str]:
    """chat_room's transcript when member `tester` says each of `msgs`."""
    room = Child(program(lang, "chat_room") + ["--port", "0"])
    try:
        port = room.port()
        with tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=0) as conn:
            assert conn.recv_text().startswith("* welcome")  # type: ignore[union-attr]
            conn.send("/nick tester")
            assert conn.recv() == b"* you are now known as tester"
            conn.send_many(msgs)
            # The room answers /who after every line before it: the
            # transcript has them all by then.
            conn.send("/who")
            assert conn.recv() == b"* 1 online: tester"
        return lines_of(room.finish(signal.SIGTERM))
    finally:
        room.kill()


@pytest.mark.parametrize("lang", LANGS)
def test_chat_room_transcript_shows_every_payload_escaped(lang: str) -> None:
    assert chat_room_prints(lang, SENT) == [f"tester: {shown}" for shown in SHOWN]


# ----- room_client: every line as it arrives --------------------------------


def room_client_prints(lang: str, data: bytes) -> List[str]:
    """What room_client prints for a server that sends `data` (raw bytes,
    whatever a room would do) and closes."""
    with tcpchat.Server("127.0.0.1", 0, framing="raw", read_timeout=WAIT) as srv:
        client = Child(program(lang, "room_client") + ["--port", str(srv.port)])
        try:
            with srv.accept(timeout=WAIT) as conn:
                conn.send(data)
            return lines_of(client.finish())
        finally:
            client.kill()


@pytest.mark.parametrize("lang", LANGS)
def test_room_client_prints_every_payload_escaped(lang: str) -> None:
    assert room_client_prints(lang, b"".join(sent + b"\n" for sent in SENT)) == SHOWN


# ----- echo_server: no transcript at all ------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_echo_server_prints_no_peer_text(lang: str) -> None:
    server = Child(program(lang, "echo_server") + ["--port", "0"])
    try:
        with tcpchat.connect("127.0.0.1", server.port(), read_timeout=WAIT) as conn:
            conn.send_many(SENT)
            assert [conn.recv() for _ in SENT] == SENT  # echoed unchanged: bytes, not text
        assert server.finish(signal.SIGTERM) == b""
    finally:
        server.kill()


# ----- the same bytes in the three languages -----------------------------------


def garbage(seed: int, lines: int = 40) -> List[bytes]:
    """Lines of random bytes biased towards the hard cases: UTF-8 lead and
    continuation bytes cut short, controls, the escaped code points."""
    rng = random.Random(seed)
    pieces = [bytes([b]) for b in range(256) if b != 0x0A]
    pieces += [chr(cp).encode() for cp in (0x85, 0x9F, 0xA0, 0x200B, 0x200F, 0x2028, 0x202E, 0x2060,
                                            0x2069, 0xFEFF, 0xFFFD, 0x10FFFF, 0x1F600)]
    pieces += [b"\xe2\x80", b"\xf0\x9f", b"\xed\xa0", b"\xc2", b"\x80", b"\xbf"] + [b"a", b" "] * 10
    return [b"x" + b"".join(rng.choice(pieces) for _ in range(rng.randrange(40))) for _ in range(lines)]


@pytest.mark.parametrize("framing", ["line", "raw"])
def test_the_turn_based_transcripts_are_identical_across_languages(framing: str) -> None:
    msgs = SENT + garbage(seed=12)
    for prints in (chat_server_prints, chat_client_prints):
        outputs = {lang: prints(lang, framing, msgs) for lang in LANGS}
        assert len(outputs["python"]) == len(msgs)
        assert outputs["rust"] == outputs["python"], prints.__name__
        assert outputs["c"] == outputs["python"], prints.__name__
