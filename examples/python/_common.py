"""What the Python example programs share (like examples/common for Rust):
finding the tcpchat package, the command-line flags, and a chat handler that
talks to the terminal."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import select
import sys
from typing import Any, NoReturn, Optional

try:
    import tcpchat
except ImportError as first_error:
    # Not installed: use the package in this repository (bindings/python),
    # which finds target/release/libtcpchat.so after `cargo build --release`.
    _bindings = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python")
    sys.path.insert(0, os.path.normpath(_bindings))
    try:
        import tcpchat
    except ImportError as e:
        if getattr(e, "name", None) == "tcpchat":
            raise first_error from None
        raise

__all__ = ["tcpchat", "parser", "server_config", "warn_if_open", "Stdio", "die", "stderr_logger",
           "eprint", "printable"]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {text!r} (0 to 65535)")
    return port


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return n


def _whole_number(text: str) -> int:
    """A whole number from 0 to 4294967295, digits only (as in Rust and C)."""
    if not (text.isascii() and text.isdigit()) or int(text) > 0xFFFF_FFFF:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 4294967295, got {text!r}")
    return int(text)


def parser(prog: str, description: str, *, listen: bool, once: bool = False,
           max_clients: bool = False, framing: bool = True,
           max_clients_help: Optional[str] = None) -> argparse.ArgumentParser:
    """The flags of the examples, as in the Rust and C ones (CONTRACT.md).
    A bad flag prints the usage and exits 2 (argparse does that). The chat
    room has no --framing (it speaks lines only): ``framing=False``."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on" if listen else
                   "server to connect to: a name, an IPv4 or an IPv6 address"
                   " (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080,
                   help="port to listen on; 0 picks a free one (default 8080)" if listen else
                   "server port (default 8080)")
    if framing:
        p.add_argument("--framing", choices=["raw", "line", "frame"], default="line",
                       help="wire format (default line)")
    if once:
        p.add_argument("--once", action="store_true",
                       help="exit after the first client instead of waiting for the next")
    if max_clients:
        p.add_argument("--max-clients", type=_positive, default=None, metavar="N",
                       help=max_clients_help or "clients served at once; one more is told"
                       " the server is full (default 1024)")
    if listen:
        p.add_argument("--allow", action="append", default=[], metavar="RANGES",
                       help="accept only these addresses/CIDR ranges (comma-separated; repeatable)")
        p.add_argument("--deny", action="append", default=[], metavar="RANGES",
                       help="refuse these addresses/CIDR ranges (deny wins over allow)")
        # The limits; not given (None): the library's default.
        p.add_argument("--idle-timeout", type=_whole_number, metavar="SECS",
                       help="close a client silent this long; 0 = never (default 300)")
        p.add_argument("--max-per-address", type=_whole_number, metavar="N",
                       help="connections one address may have open at once; 0 = no limit (default)")
        p.add_argument("--max-message-size", type=_whole_number, metavar="BYTES",
                       help="the longest message accepted (default 1048576)")
    return p


def server_config(p: argparse.ArgumentParser, args: argparse.Namespace,
                  **options: Any) -> tcpchat.Config:
    """The settings of a server example's flags, checked by the library: a
    value it refuses (a range that does not parse, say) is a usage error
    (exit 2)."""
    if getattr(args, "max_clients", None) is not None:
        options["max_clients"] = args.max_clients
    if args.idle_timeout is not None:
        options["idle_timeout"] = float(args.idle_timeout) if args.idle_timeout else None  # 0: none
    if args.max_per_address is not None:
        options["max_per_address"] = args.max_per_address
    if args.max_message_size is not None:
        options["max_message_size"] = args.max_message_size
    config = tcpchat.Config(
        framing=tcpchat.Framing.parse(getattr(args, "framing", "line")),
        allow=tuple(r for flag in args.allow for r in tcpchat.Config(allow=flag).allow),
        deny=tuple(r for flag in args.deny for r in tcpchat.Config(deny=flag).deny),
        **options,
    )
    try:
        config.validate()
    except tcpchat.InvalidArgumentError as e:
        p.error(str(e))
    return config


def warn_if_open(address: tcpchat.Address, config: tcpchat.Config) -> None:
    """Print a warning on stderr when a server bound to ``address`` listens
    on every address (0.0.0.0, ::) and no --allow list limits who may connect."""
    try:
        every = ipaddress.ip_address(address.host).is_unspecified
    except ValueError:
        every = False
    if every and not config.allow:
        eprint(f"warning: listening on every address ({address.host}) with no --allow list: "
               "anyone who can reach this machine can connect")


#: How long an example waits for stderr to take one of its own lines before
#: dropping it (the same in Rust and C).
STDERR_WAIT = 1.0


def eprint(text: str) -> None:
    """Print a line on stderr; never raises, never waits long. The line goes
    to descriptor 2 (past sys.stderr) in one write when stderr can take it
    within STDERR_WAIT, and is dropped otherwise, or when the write fails
    (stderr closed, as in ``chat_room 2>&1 | head``, a supervisor whose log
    pipe died, or full and nobody reading it). ``print(file=sys.stderr)``
    would raise BrokenPipeError, killing the thread that printed (the signal
    thread: SIGTERM ignored) and leaving the line in sys.stderr's buffer to
    fail again at exit (status 120); or wait for ever."""
    _write_stderr(text + "\n")


def _write_stderr(text: str) -> None:
    data = text.encode("utf-8", "backslashreplace")
    if _stderr_writable(STDERR_WAIT):
        try:
            while data:
                data = data[os.write(2, data):]
        except OSError:
            pass


def _stderr_writable(wait: float) -> bool:
    """Whether stderr can take a write within ``wait`` seconds (a pipe then
    has a page free: a line shorter than that is written without waiting)."""
    try:
        p = select.poll()
        p.register(2, select.POLLOUT)
        ready = p.poll(int(wait * 1000))
    except OSError:
        return False
    events = ready[0][1] if ready else 0
    return bool(events & select.POLLOUT) and not events & (select.POLLERR | select.POLLHUP | select.POLLNVAL)


#: The longest record stderr_logger writes, newline included: within one
#: pipe page, so such a write never waits once poll() says there is room.
_MAX_RECORD = 4000


def stderr_logger(level: tcpchat.LogLevel, message: str) -> None:
    """The library's log records as `tcpchat: LEVEL: message` lines on
    stderr, as the Rust library's stderr_logger writes them: never waits
    (it runs on the library's threads, the room's loop among them) and
    never raises. A record is written, in one write of at most 4,000 bytes,
    only when stderr can take it at once, and dropped otherwise (a full pipe
    nobody reads, a paused terminal, a closed pipe)."""
    data = f"tcpchat: {level.name.lower()}: {message}\n".encode("utf-8", "backslashreplace")
    if len(data) > _MAX_RECORD:  # cut at a character boundary, and say so
        cut = _MAX_RECORD - 5
        while cut > 0 and data[cut] & 0xC0 == 0x80:
            cut -= 1
        data = data[:cut] + b" ...\n"
    if _stderr_writable(0):
        try:
            os.write(2, data)  # a short write leaves the record cut: dropped too
        except OSError:
            pass


def die(program: str, error: BaseException) -> NoReturn:
    """Print a fatal error to stderr and exit 1."""
    eprint(f"{program}: {error}")
    sys.exit(1)


class Stdio:
    """A chat handler for a terminal or a pipe: each message to send is the
    next line of stdin (its end says BYE); each received one is printed on
    stdout as `PEER: MSG`, made safe for the terminal. The prompt goes to
    stderr, only on a terminal.

    While the operator types, the peer is watched too
    (:func:`tcpchat.wait_for_input`): when it leaves, `PEER left` is printed
    on stderr and the session ends at once (a server goes on to its next
    client). So stdin is read with os.read into a buffer of our own, looked
    at before waiting: sys.stdin's buffer could hold the next line while
    descriptor 0 has nothing more to say."""

    def __init__(self, peer: str, prompt: str) -> None:
        self.peer = peer
        self.prompt = prompt if sys.stdin.isatty() else None
        self.received = 0  # how many messages have been printed
        self._pending = bytearray()  # read from stdin, past the last line returned
        self._eof = False

    def next_message(self) -> Optional[bytes]:
        if self.prompt:
            _write_stderr(self.prompt)
        line = self._read_line()
        if line is None:
            return None  # stdin's end: the session sends BYE
        return line[:-1] if line.endswith(b"\r") else line

    def _read_line(self) -> Optional[bytes]:
        """The next line of stdin without its newline; None at its end."""
        while True:
            i = self._pending.find(b"\n")
            if i >= 0:
                line = bytes(self._pending[:i])
                del self._pending[: i + 1]
                return line
            if self._eof:
                # A last line without its newline is still a line.
                line, self._pending = bytes(self._pending), bytearray()
                return line or None
            # Nothing buffered: wait for stdin, or for the peer to leave.
            try:
                tcpchat.wait_for_input(0)
            except tcpchat.LocallyClosedError:
                raise
            except tcpchat.ClosedError:
                eprint(f"{self.peer} left")
                raise  # the session ends as the peer's close
            except tcpchat.InvalidArgumentError:
                pass  # not inside a session, or stdin is not open: just read
            try:
                chunk = os.read(0, 65536)
            except OSError as e:
                if e.errno != errno.EBADF:
                    raise
                chunk = b""  # stdin is not open: as if empty
            if chunk:
                self._pending += chunk
            else:
                self._eof = True

    def on_message(self, msg: bytes) -> None:
        # A raw peer such as nc sends its newline too: do not print it twice.
        msg = msg[:-1] if msg.endswith(b"\n") else msg
        msg = msg[:-1] if msg.endswith(b"\r") else msg
        self.received += 1
        # UTF-8 bytes, as the Rust and C examples print, whatever the locale.
        sys.stdout.buffer.write(f"{self.peer}: {printable(msg)}\n".encode())
        sys.stdout.buffer.flush()


def printable(msg: bytes) -> str:
    """Peer text made safe for a terminal (CONTRACT.md, "Text that reaches a
    terminal"): what could move the cursor, clear the screen, reorder or hide
    text is written in a visible notation (``\\x1b``, ``\\u{202e}``, ``\\xff``
    for a byte that is not UTF-8), the rest as it is. The library's rule,
    :func:`tcpchat.escape_text`, which the room applies to what it relays
    and the Rust and C examples call too."""
    return tcpchat.escape_text(msg)
