"""tcpchat: a TCP chat library (Python bindings over the C API, via ctypes).

Framed messages over TCP (``LINE``, ``FRAME`` or ``RAW``), the classic
tutorial's turn-based chat session, an echo service, and a chat room for
many clients (:class:`Room`)::

    import tcpchat

    with tcpchat.Server(port=0) as server:          # any free port
        print("listening on", server.address)
        with tcpchat.connect("127.0.0.1", server.port) as client, server.accept() as conn:
            client.send("hello")
            print(conn.recv())                       # b'hello'

Errors are exceptions derived from :class:`tcpchat.Error`, one class per
library status (:class:`TimedOutError` is also the builtin ``TimeoutError``,
:class:`ClosedError`, :class:`RefusedError` and :class:`ResetError` are
``ConnectionError``\\ s, :class:`InvalidArgumentError` is a ``ValueError``),
carrying the library's message.

The shared library is found through ``TCPCHAT_LIB``, a copy inside this
package, the repository's ``target/release`` or ``target/debug``, or the
system loader (build it with ``cargo build --release``).
"""

from __future__ import annotations

from . import _ffi
from ._callbacks import Address, SessionEnd, wait_for_input
from ._config import Config, Framing
from ._conn import Connection, Role, connect
from ._errors import (
    AddressInUseError,
    BufferTooSmallError,
    CallbackError,
    CancelledError,
    ClosedError,
    Error,
    InternalError,
    InterruptedCallError,
    InterruptedError,
    InvalidArgumentError,
    LocallyClosedError,
    MessageTooLargeError,
    NetworkError,
    ProtocolError,
    RefusedError,
    ResetError,
    ResolveError,
    ServerFullError,
    Status,
    TimedOutError,
    TimeoutError,
    WouldBlockError,
)
from ._log import LogLevel, set_log_handler
from ._room import LeaveReason, Room, RoomEvent, RoomEventKind, RoomStats
from ._server import EchoStats, Server
from ._text import escape_text
from ._version import __version__
from . import aio


def version() -> str:
    """The version of the loaded shared library (``__version__`` is the
    Python package's; they match in a consistent build)."""
    raw: bytes = _ffi.tcpchat_version()
    return raw.decode("ascii")


def library_path() -> str:
    """The path of the loaded shared library."""
    return _ffi.lib_path


__all__ = [
    "Address",
    "AddressInUseError",
    "BufferTooSmallError",
    "CallbackError",
    "CancelledError",
    "ClosedError",
    "Config",
    "Connection",
    "EchoStats",
    "Error",
    "Framing",
    "InternalError",
    "InterruptedCallError",
    "InvalidArgumentError",
    "LocallyClosedError",
    "LeaveReason",
    "LogLevel",
    "MessageTooLargeError",
    "NetworkError",
    "ProtocolError",
    "RefusedError",
    "ResetError",
    "ResolveError",
    "Role",
    "Room",
    "RoomEvent",
    "RoomEventKind",
    "RoomStats",
    "Server",
    "ServerFullError",
    "SessionEnd",
    "Status",
    "TimedOutError",
    "WouldBlockError",
    "__version__",
    "connect",
    "escape_text",
    "library_path",
    "set_log_handler",
    "version",
    "wait_for_input",
]
