"""Settings: the wire format and the :class:`Config` dataclass."""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import math
import re
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping, Optional, Tuple, TypedDict, Union

from . import _ffi
from ._errors import InvalidArgumentError, check

class Framing(enum.Enum):
    """How messages are delimited on the wire."""

    #: Bytes as they are; a receive returns what one read returns (up to
    #: ``raw_buffer_size``). No message boundaries: the classic tutorial.
    RAW = _ffi.TCPCHAT_FRAMING_RAW
    #: A message is its bytes and ``\n`` (the default); ``\r\n`` is accepted
    #: on receive. A message containing ``\n`` cannot be sent.
    LINE = _ffi.TCPCHAT_FRAMING_LINE
    #: A 4-byte big-endian length, then the bytes. Binary-safe.
    FRAME = _ffi.TCPCHAT_FRAMING_FRAME

    @classmethod
    def parse(cls, value: Union["Framing", str, int]) -> "Framing":
        """A Framing from itself, its name (``"line"``) or its number."""
        if isinstance(value, Framing):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise InvalidArgumentError(
                    f"unknown framing {value!r} (expected raw, line or frame)"
                ) from None
        try:
            return cls(value)
        except ValueError:
            raise InvalidArgumentError(f"unknown framing {value!r}") from None


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings for connections, servers and services; the defaults are the
    library's. Timeouts are in seconds (floats); ``None`` means no timeout.

    ``connect()`` and ``Server()`` also take each field as a keyword argument,
    which overrides the ``config`` passed with it. Use
    :func:`dataclasses.replace` to derive a changed copy.
    """

    #: The wire format (a :class:`Framing`, or ``"raw"``/``"line"``/``"frame"``).
    framing: Framing = Framing.LINE
    #: The largest message sent or accepted, in bytes (1 MiB).
    max_message_size: int = 1024 * 1024
    #: The message that ends a chat session.
    end_word: bytes = b"BYE"
    #: How long a connect may take per address tried.
    connect_timeout: Optional[float] = 10.0
    #: How long a receive waits for a message (for ever by default).
    read_timeout: Optional[float] = None
    #: How long a send waits for the peer to make room.
    write_timeout: Optional[float] = 30.0
    #: How long the echo service keeps a client that sends nothing (or part
    #: of a message), and the room a member holding an unfinished line (a
    #: member that only reads stays).
    idle_timeout: Optional[float] = 300.0
    #: How long a graceful close waits for the peer to finish (0 = do not wait).
    close_timeout: float = 2.0
    #: TCP_NODELAY on every connection.
    nodelay: bool = True
    #: The size of one read in ``RAW`` framing, in bytes.
    raw_buffer_size: int = 1024
    #: The listen backlog of servers.
    backlog: int = 128
    #: How many clients a service serves at once.
    max_clients: int = 1024
    #: Servers accept only peers in these addresses / CIDR ranges, e.g.
    #: ``("127.0.0.0/8", "::1")`` (a string of them, comma- or
    #: space-separated, is accepted too). Empty: everyone not denied.
    allow: Tuple[str, ...] = ()
    #: Servers refuse peers in these ranges, whatever ``allow`` says.
    deny: Tuple[str, ...] = ()
    #: How many connections one address may have open to a server at once
    #: (0 = no limit).
    max_per_address: int = 0

    def __post_init__(self) -> None:
        # Accept the friendly spellings, store the canonical types.
        object.__setattr__(self, "framing", Framing.parse(self.framing))
        if isinstance(self.end_word, str):
            object.__setattr__(self, "end_word", self.end_word.encode("utf-8"))
        elif not isinstance(self.end_word, bytes):
            object.__setattr__(self, "end_word", bytes(self.end_word))
        object.__setattr__(self, "allow", ranges(self.allow))
        object.__setattr__(self, "deny", ranges(self.deny))

    def validate(self) -> None:
        """Check every setting with the library now (connect() and Server()
        do it anyway); raise :class:`InvalidArgumentError` with its message."""
        with c_config(self):
            pass

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)


class ConfigOptions(TypedDict, total=False):
    """The keyword arguments connect() and Server() accept (for type checkers)."""

    framing: Union[Framing, str]
    max_message_size: int
    end_word: Union[bytes, str]
    connect_timeout: Optional[float]
    read_timeout: Optional[float]
    write_timeout: Optional[float]
    idle_timeout: Optional[float]
    close_timeout: float
    nodelay: bool
    raw_buffer_size: int
    backlog: int
    max_clients: int
    allow: Union[str, Iterable[str]]
    deny: Union[str, Iterable[str]]
    max_per_address: int


def ranges(value: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    """Address ranges as a tuple of strings; a string is split at commas and
    spaces. (The library parses each entry.)"""
    if isinstance(value, str):
        return tuple(x for x in re.split(r"[,\s]+", value) if x)
    out = tuple(value)
    if not all(isinstance(x, str) for x in out):
        raise TypeError("address ranges must be strings")
    return out


def merge(config: Optional[Config], options: Mapping[str, Any]) -> Config:
    """``config`` (or the defaults) with keyword overrides applied."""
    base = config if config is not None else Config()
    if not isinstance(base, Config):
        raise TypeError(f"config must be a tcpchat.Config, not {type(base).__name__}")
    return dataclasses.replace(base, **options) if options else base


_U64_MAX = 2**64 - 1


def timeout_ms(name: str, seconds: Optional[float]) -> int:
    """Seconds (None = no timeout) as the C API's milliseconds (0 = none)."""
    if seconds is None:
        return 0
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None")
    if math.isnan(seconds) or seconds <= 0:
        raise InvalidArgumentError(
            f"{name} must be a positive number of seconds, or None for no timeout; got {seconds!r}"
        )
    if math.isinf(seconds):
        return 0
    # Round up: a tiny positive timeout must not become "no timeout".
    return min(max(1, math.ceil(seconds * 1000)), _U64_MAX)


def _nonnegative_ms(name: str, seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds")
    if math.isnan(seconds) or seconds < 0:
        raise InvalidArgumentError(f"{name} must be 0 or more seconds; got {seconds!r}")
    if math.isinf(seconds):
        return _U64_MAX  # as long as the library can wait
    return min(math.ceil(seconds * 1000), _U64_MAX)


def _size(name: str, value: int, maximum: int = 2**64 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > maximum:
        raise InvalidArgumentError(f"{name} {value} is out of range (0 to {maximum})")
    return value


def _ranges_arg(name: str, value: Tuple[str, ...]) -> bytes:
    text = ",".join(value)
    if "\0" in text:
        raise InvalidArgumentError(f"{name} must not contain NUL characters")
    return text.encode("utf-8")


@contextmanager
def c_config(config: Config) -> Iterator["ctypes._Pointer[_ffi.tcpchat_config]"]:
    """A temporary C ``tcpchat_config`` holding ``config``; freed on exit.

    Every setter's refusal becomes an :class:`InvalidArgumentError` carrying
    the library's message.
    """
    ptr = _ffi.tcpchat_config_new()
    if not ptr:
        raise MemoryError("tcpchat_config_new returned NULL")
    try:
        c = config
        check(_ffi.tcpchat_config_set_framing(ptr, c.framing.value))
        check(
            _ffi.tcpchat_config_set_max_message_size(
                ptr, _size("max_message_size", c.max_message_size)
            )
        )
        word = c.end_word
        check(_ffi.tcpchat_config_set_end_word(ptr, word, len(word)))
        check(
            _ffi.tcpchat_config_set_connect_timeout_ms(
                ptr, timeout_ms("connect_timeout", c.connect_timeout)
            )
        )
        check(
            _ffi.tcpchat_config_set_read_timeout_ms(ptr, timeout_ms("read_timeout", c.read_timeout))
        )
        check(
            _ffi.tcpchat_config_set_write_timeout_ms(
                ptr, timeout_ms("write_timeout", c.write_timeout)
            )
        )
        check(
            _ffi.tcpchat_config_set_idle_timeout_ms(ptr, timeout_ms("idle_timeout", c.idle_timeout))
        )
        check(
            _ffi.tcpchat_config_set_close_timeout_ms(
                ptr, _nonnegative_ms("close_timeout", c.close_timeout)
            )
        )
        check(_ffi.tcpchat_config_set_nodelay(ptr, bool(c.nodelay)))
        check(
            _ffi.tcpchat_config_set_raw_buffer_size(
                ptr, _size("raw_buffer_size", c.raw_buffer_size)
            )
        )
        check(_ffi.tcpchat_config_set_backlog(ptr, _size("backlog", c.backlog, 2**32 - 1)))
        check(_ffi.tcpchat_config_set_max_clients(ptr, _size("max_clients", c.max_clients)))
        check(_ffi.tcpchat_config_set_allow(ptr, _ranges_arg("allow", c.allow)))
        check(_ffi.tcpchat_config_set_deny(ptr, _ranges_arg("deny", c.deny)))
        check(
            _ffi.tcpchat_config_set_max_per_address(
                ptr, _size("max_per_address", c.max_per_address)
            )
        )
        yield ptr
    finally:
        _ffi.tcpchat_config_free(ptr)
