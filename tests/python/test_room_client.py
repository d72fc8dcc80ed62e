"""The room_client example programs in C and Python (the Rust one has
tests/room_client.rs), run as a user runs them, with piped stdin and stdout,
against an in-process tcpchat.Room or a raw tcpchat.Server:

- a typed line reaches the other members at once, while lines keep arriving
  and while the room is silent (the connection is full-duplex);
- the end of stdin leaves gracefully: what the room still sends is printed,
  then the client exits 0 once the room closes its side;
- the room stopping ends the client (exit 0, a notice on stderr) even with
  stdin still open;
- terminal controls never reach stdout raw, and the three languages print
  the same escapes for the same bytes;
- a refused connection exits 1, bad flags exit 2, Ctrl-C ends it at once.

Nothing sleeps to synchronise: tests wait for lines (bounded) and processes.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import (
    C_EXAMPLES,
    FAST_CLOSE,
    PY_EXAMPLES,
    REPO,
    RUST_EXAMPLES,
    WAIT,
    Background,
    default_sigint,
    env_for_children,
)

import tcpchat

#: How soon a typed line must reach the other members: loose (it takes
#: microseconds), but far below "when the room next speaks", which in the
#: silent phase of the test is never.
PROMPTLY = 2.0
LANGS = ["c", "python"]
CLOSED_NOTICE = "* connection closed by the room"


def program(lang: str) -> List[str]:
    """The command line of room_client in `lang`; skips when not built."""
    if lang == "python":
        return [sys.executable, str(PY_EXAMPLES / "room_client.py")]
    path: Path = {"rust": RUST_EXAMPLES, "c": C_EXAMPLES}[lang] / "room_client"
    if not path.exists():
        how = {"rust": "cargo build --release --examples", "c": "make -C examples/c"}[lang]
        pytest.skip(f"{path.relative_to(REPO)} is not built (run `{how}`)")
    return [str(path)]


# What CONTRACT.md says peer text never reaches a terminal with.
_UNSAFE = {*range(0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0), *range(0x200B, 0x2010),
           *range(0x2028, 0x202F), *range(0x2060, 0x206A), 0xFEFF}


def terminal_safe(line: str) -> bool:
    return not any(ord(c) in _UNSAFE for c in line)


class Client:
    """room_client as a child process. Its stdout lines (bytes, read on a
    thread) are awaited with a timeout; each must be UTF-8 and terminal-safe."""

    def __init__(self, lang: str, *args: str, env: Optional[Dict[str, str]] = None) -> None:
        self.lang = lang
        self.proc = subprocess.Popen(
            program(lang) + list(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env_for_children(), **(env or {})},
            cwd=str(REPO),
            preexec_fn=default_sigint,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._lines: "list[Optional[bytes]]" = []
        self._ready = threading.Condition()
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        stderr = self.proc.stderr
        self._stderr = Background(lambda: stderr.read().decode("utf-8", "replace"), name="stderr")

    def _pump(self, pipe: IO[bytes]) -> None:
        for line in iter(pipe.readline, b""):
            with self._ready:
                self._lines.append(line)
                self._ready.notify_all()
        with self._ready:
            self._lines.append(None)
            self._ready.notify_all()

    @classmethod
    def join(cls, lang: str, port: int) -> Tuple["Client", str]:
        """Start one connected to the room on `port`; wait for its welcome."""
        c = cls(lang, "--port", str(port))
        welcome = c.line()
        assert welcome.startswith("* welcome, you are "), welcome
        return c, welcome.split(" ")[4]

    def line(self, timeout: float = WAIT) -> str:
        """The next stdout line, without its newline."""
        with self._ready:
            if not self._ready.wait_for(lambda: bool(self._lines), timeout):
                raise AssertionError(f"room_client ({self.lang}): no line on stdout within {timeout} s")
            raw = self._lines.pop(0)
        if raw is None:
            raise AssertionError(f"room_client ({self.lang}) closed stdout; stderr: {self.stderr()}")
        assert raw.endswith(b"\n"), raw
        text = raw[:-1].decode("utf-8")  # never anything but UTF-8
        assert terminal_safe(text), f"room_client ({self.lang}) printed raw controls: {text!r}"
        return text

    def wait_for(self, want: str) -> None:
        while self.line() != want:
            pass

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def stderr(self) -> str:
        """Everything on stderr, once the process has ended."""
        return str(self._stderr.result())

    def wait(self) -> Tuple[int, List[str], str]:
        """Wait (bounded) for the exit; the status, the stdout lines not read
        yet, and stderr. stdin is left as it is."""
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(WAIT)
            raise AssertionError(f"room_client ({self.lang}) did not exit within {WAIT} s; "
                                 f"stderr: {self.stderr()}") from None
        rest = []
        while True:
            with self._ready:
                if not self._ready.wait_for(lambda: bool(self._lines), WAIT):
                    raise AssertionError(f"room_client ({self.lang}): stdout still open after the exit")
                if self._lines[0] is None:
                    break
            rest.append(self.line())
        return code, rest, self.stderr()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


@pytest.fixture
def room() -> Iterator[tcpchat.Room]:
    r = tcpchat.Room("127.0.0.1", 0, close_timeout=FAST_CLOSE)
    r.start()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def clients() -> Iterator[List[Client]]:
    """Collects the clients a test starts and kills any left running."""
    started: List[Client] = []
    yield started
    for c in started:
        c.kill()


def member(port: int) -> Tuple[tcpchat.Connection, str]:
    """Another member of the room: the library's client, line framing."""
    conn = tcpchat.connect("127.0.0.1", port, read_timeout=WAIT, close_timeout=FAST_CLOSE)
    welcome = conn.recv()
    assert welcome is not None and welcome.startswith(b"* welcome, you are "), welcome
    return conn, welcome.decode().split(" ")[4]


def wait_for_line(conn: tcpchat.Connection, want: str, within: float = WAIT) -> None:
    """Skip lines until `want`, which must come within `within` seconds."""
    deadline = time.monotonic() + within
    try:
        while True:
            conn.read_timeout = max(deadline - time.monotonic(), 0.001)
            got = conn.recv()
            assert got is not None, f"the room closed the connection before {want!r}"
            if got.decode("utf-8") == want:
                return
            assert time.monotonic() < deadline, f"{want!r} did not arrive within {within} s"
    except tcpchat.TimeoutError:
        raise AssertionError(f"{want!r} did not arrive within {within} s") from None
    finally:
        conn.read_timeout = WAIT


# ----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_a_typed_line_goes_out_at_once_while_lines_arrive_and_in_silence(
    lang: str, room: tcpchat.Room, clients: List[Client]
) -> None:
    observer, _ = member(room.port)
    talking, talker = member(room.port)
    wait_for_line(observer, f"* {talker} joined")
    client, name = Client.join(lang, room.port)
    clients.append(client)
    wait_for_line(observer, f"* {name} joined")

    # Lines keep arriving (about one every 10 ms): the receiving thread is busy.
    stop = threading.Event()

    def talk() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            talking.send(f"tick {n}")
            stop.wait(0.01)  # the pace of the talk, not a synchronisation
        talking.send("last tick")

    talk_thread = Background(talk, name="talker")
    for _ in range(5):
        assert client.line().startswith(f"{talker}: tick ")
    client.type("typed while the room talks")
    wait_for_line(observer, f"{name}: typed while the room talks", PROMPTLY)

    # The room falls silent: the receiving thread waits in recv with nothing
    # to come. A typed line must still go out at once (one whose send waited
    # for the receive would never go).
    stop.set()
    talk_thread.result()
    client.wait_for(f"{talker}: last tick")
    wait_for_line(observer, f"{talker}: last tick")
    client.type("typed in the silence")
    wait_for_line(observer, f"{name}: typed in the silence", PROMPTLY)

    client.close_stdin()
    code, _, err = client.wait()
    assert code == 0, err
    observer.close()
    talking.close()


@pytest.mark.parametrize("lang", LANGS)
def test_the_end_of_stdin_leaves_gracefully_and_exits_0(
    lang: str, room: tcpchat.Room, clients: List[Client]
) -> None:
    observer, observer_name = member(room.port)
    client, name = Client.join(lang, room.port)
    clients.append(client)
    wait_for_line(observer, f"* {name} joined")
    # The answer to /who comes after the write half is shut down: it is
    # still printed, then the room closes its side.
    client.type("last words")
    client.type("/who")
    client.close_stdin()
    wait_for_line(observer, f"{name}: last words")
    wait_for_line(observer, f"* {name} left")
    code, rest, err = client.wait()
    assert code == 0, err
    assert rest == [f"* 2 online: {observer_name}, {name}"]
    assert CLOSED_NOTICE in err
    assert room.stats().online == 1
    observer.close()


@pytest.mark.parametrize("lang", LANGS)
def test_the_room_stopping_ends_the_client_with_stdin_still_open(
    lang: str, room: tcpchat.Room, clients: List[Client]
) -> None:
    client, _ = Client.join(lang, room.port)
    clients.append(client)
    room.shutdown()
    client.wait_for("* server shutting down")
    assert client.proc.stdin is not None and not client.proc.stdin.closed
    code, rest, err = client.wait()
    assert code == 0, err
    assert rest == []
    assert err.strip() == CLOSED_NOTICE


@pytest.mark.parametrize("lang", LANGS)
def test_hostile_text_from_another_member_never_reaches_stdout_raw(
    lang: str, room: tcpchat.Room, clients: List[Client]
) -> None:
    client, _ = Client.join(lang, room.port)
    clients.append(client)
    evil, evil_name = member(room.port)
    client.wait_for(f"* {evil_name} joined")
    evil.send("clear \x1b[2J bare\rcr \u202etxet")
    # `line` checks that nothing raw reached stdout. Whether the room
    # escaped the line itself or the client did, it arrives, visibly.
    line = client.line()
    assert line.startswith(f"{evil_name}: clear ") and "[2J bare" in line and line.endswith("txet"), line
    client.close_stdin()
    assert client.wait()[0] == 0
    evil.close()


#: What a server sends and what room_client must print for it, exactly: the
#: notation of CONTRACT.md's "Text that reaches a terminal" (the same table
#: as in tests/room_client.rs).
HOSTILE: List[Tuple[bytes, str]] = [
    (b"clear \x1b[2J bare\rcr \xe2\x80\xaetxet\n", r"clear \x1b[2J bare\x0dcr \u{202e}txet"),
    (b"nul \0 bell \x07 del \x7f tab\tkept\n", "nul \\x00 bell \\x07 del \\x7f tab\tkept"),
    ("c1 \x85\x9b31m zw\u200b\u200dj lri\u2066pdi\u2069 ls\u2028 bom\ufeff\n".encode(),
     r"c1 \u{85}\u{9b}31m zw\u{200b}\u{200d}j lri\u{2066}pdi\u{2069} ls\u{2028} bom\u{feff}"),
    (b"not utf-8 \xff\xfe, cut \xe2\x82, overlong \xc0\xaf, surrogate \xed\xa0\x80, lone \x80\n",
     r"not utf-8 \xff\xfe, cut \xe2\x82, overlong \xc0\xaf, surrogate \xed\xa0\x80, lone \x80"),
    ("kept: café ✓ 😀 \xa0nbsp \u2010dash\r\n".encode(), "kept: café ✓ 😀 \xa0nbsp \u2010dash"),
    (b"\xf4\x90\x80\x80 past U+10FFFF, \xf0\x9f\x98 cut emoji at the end \xe2\x82\n",
     r"\xf4\x90\x80\x80 past U+10FFFF, \xf0\x9f\x98 cut emoji at the end \xe2\x82"),
]


def printed_by(lang: str, data: bytes, env: Optional[Dict[str, str]] = None) -> List[str]:
    """What room_client in `lang` prints for a server that sends `data` (raw
    bytes, whatever a room would do) and closes."""
    with tcpchat.Server("127.0.0.1", 0, framing="raw", read_timeout=WAIT) as server:
        client = Client(lang, "--port", str(server.port), env=env)
        try:
            with server.accept(timeout=WAIT) as conn:
                conn.send(data)
            # Left: the close ended when room_client, at our end of stream, exited.
            code, lines, err = client.wait()
        finally:
            client.kill()
    assert code == 0, err
    assert err.strip() == CLOSED_NOTICE
    return lines


@pytest.mark.parametrize("lang", LANGS)
def test_every_control_from_a_raw_server_is_printed_escaped(lang: str) -> None:
    assert printed_by(lang, b"".join(sent for sent, _ in HOSTILE)) == [shown for _, shown in HOSTILE]


@pytest.mark.parametrize("lang", LANGS)
def test_stdout_is_utf8_whatever_the_locale(lang: str) -> None:
    ascii_only = {"LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0"}
    assert printed_by(lang, "café ✓ 😀 \u202e\n".encode(), env=ascii_only) == ["café ✓ 😀 \\u{202e}"]


def garbage(seed: int, lines: int = 200) -> bytes:
    """Lines of random bytes biased towards the hard cases: UTF-8 lead and
    continuation bytes, controls, and the escaped code points encoded."""
    rng = random.Random(seed)
    pieces = [bytes([b]) for b in range(256) if b != 0x0A]
    pieces += [chr(cp).encode() for cp in (0x85, 0x9F, 0xA0, 0x200B, 0x200F, 0x2028, 0x202E, 0x2060,
                                            0x2069, 0xFEFF, 0xD7FF, 0xE000, 0xFFFD, 0x10FFFF, 0x1F600)]
    pieces += [b"\xe2\x80", b"\xf0\x9f", b"\xed\xa0", b"\xc2"] + [b"\x80", b"\xbf"] * 8 + [b"a", b" "] * 20
    return b"".join(b"".join(rng.choice(pieces) for _ in range(rng.randrange(60))) + b"\n"
                    for _ in range(lines))


def test_the_three_languages_escape_the_same_bytes_the_same_way() -> None:
    data = b"".join(sent for sent, _ in HOSTILE) + garbage(seed=20240601)
    outputs = {lang: printed_by(lang, data) for lang in ["python", "c", "rust"]}
    assert len(outputs["python"]) == len(HOSTILE) + 200
    assert outputs["c"] == outputs["python"]
    assert outputs["rust"] == outputs["python"]


@pytest.mark.parametrize("lang", LANGS)
def test_a_refused_connection_exits_1_with_the_reason(lang: str) -> None:
    with tcpchat.Server("127.0.0.1", 0) as server:
        port = server.port  # free again once closed: nothing listens there
    result = subprocess.run(program(lang) + ["--port", str(port)], input=b"", capture_output=True,
                            timeout=WAIT, env=env_for_children())
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("room_client: ") and "refused" in err, err
    assert result.stdout == b""


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("args", [["--bogus"], ["--port", "http"], ["--port"], ["--framing", "line"], ["stray"]])
def test_bad_flags_print_the_usage_and_exit_2(lang: str, args: List[str]) -> None:
    result = subprocess.run(program(lang) + args, capture_output=True, text=True, timeout=WAIT,
                            env=env_for_children())
    assert result.returncode == 2, result.stderr
    assert "usage: room_client" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("lang", LANGS)
def test_help_exits_0(lang: str) -> None:
    result = subprocess.run(program(lang) + ["--help"], capture_output=True, text=True, timeout=WAIT,
                            env=env_for_children())
    assert result.returncode == 0 and result.stdout.startswith("usage: room_client")
    assert "--host" in result.stdout and "--port" in result.stdout


@pytest.mark.parametrize("lang", LANGS)
def test_ctrl_c_ends_the_client_at_once(lang: str, room: tcpchat.Room, clients: List[Client]) -> None:
    client, _ = Client.join(lang, room.port)  # connected: both threads are running
    clients.append(client)
    started = time.monotonic()
    client.proc.send_signal(signal.SIGINT)
    code, _, err = client.wait()
    assert time.monotonic() - started < PROMPTLY
    # Python exits 130 (KeyboardInterrupt); C dies of the signal.
    assert code == (130 if lang == "python" else -signal.SIGINT), err
