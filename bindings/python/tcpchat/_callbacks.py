"""Python callables behind the C chat callbacks.

Each C callback is a ``CFUNCTYPE`` object that this module keeps referenced
for as long as the library may call it (the whole session or serve loop). A
Python exception never crosses into C: the wrapper catches it (any
``BaseException``, KeyboardInterrupt included), stores it, and returns
non-zero, so the library ends the session with ``TCPCHAT_STATUS_CALLBACK``;
the caller then re-raises the stored exception with its original traceback.

Two exceptions of ``next_message`` are handed to the library as its status
instead, as a C callback passes on what ``tcpchat_session_wait_input()``
returned: :class:`ClosedError` (the peer left while it was our turn: the
session ends as ``PEER_CLOSED``) and :class:`CancelledError` (the server
was shut down: the loop stops). When the library finds them untrue (the
peer is still there, nothing was cancelled) it fails the session with
``TCPCHAT_STATUS_CALLBACK`` and the exception is re-raised like any other.
"""

from __future__ import annotations

import ctypes
import enum
from typing import Callable, NamedTuple, Optional, Protocol, Union

from . import _ffi
from ._errors import (
    CancelledError,
    ClosedError,
    Error,
    InvalidArgumentError,
    LocallyClosedError,
    check,
    from_status,
)
from ._handle import call

#: What ``next_message`` may return: the message, or None to end the session.
Message = Union[bytes, bytearray, memoryview, str]


class SessionEnd(enum.Enum):
    """How a chat session ended (when it did not fail)."""

    #: We sent the end word (``next_message`` returned None, or the end word).
    LOCAL_END = _ffi.TCPCHAT_SESSION_END_LOCAL_END
    #: The peer sent the end word.
    PEER_END = _ffi.TCPCHAT_SESSION_END_PEER_END
    #: The peer closed the connection without sending the end word.
    PEER_CLOSED = _ffi.TCPCHAT_SESSION_END_PEER_CLOSED


class Address(NamedTuple):
    """A TCP address: ``(host, port)``; ``str()`` gives ``host:port`` (IPv6
    hosts in brackets)."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> "Address":
        """From the library's ``127.0.0.1:5000`` / ``[::1]:5000`` form."""
        host, _, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return cls(host, int(port))


def as_bytes(msg: Message) -> bytes:
    """A message as bytes: str is encoded as UTF-8, bytes-likes are copied."""
    if isinstance(msg, bytes):
        return msg
    if isinstance(msg, str):
        return msg.encode("utf-8")
    if isinstance(msg, (bytearray, memoryview)):
        return bytes(msg)
    raise TypeError(f"a message must be bytes or str, not {type(msg).__name__}")


class HasFileno(Protocol):
    """A file object, socket, ...: anything with ``fileno()``."""

    def fileno(self) -> int: ...


def wait_for_input(source: Union[int, HasFileno]) -> None:
    """Inside a chat session's ``next_message``: wait until ``source`` (a
    descriptor such as 0, or an object with ``fileno()``, such as
    ``sys.stdin``) is readable, or the session's peer leaves.

    For a ``next_message`` that reads what to send from somewhere that can
    take a while (an operator typing): without it, a peer that leaves
    meanwhile is only noticed when the next message goes out into a dead
    connection. Returns when ``source`` is readable (or at its end: the read
    then says so). Raises :class:`ClosedError` when the peer has closed or
    reset the connection: let it propagate out of ``next_message`` (or
    raise it yourself) and the session ends as
    :attr:`SessionEnd.PEER_CLOSED`, not re-raised; :meth:`Server.serve_chat`
    goes on to the next client. Data the peer sends out of turn does not
    end the wait; there is no time limit.

    Only the descriptor is watched: what a Python buffer already holds
    (``sys.stdin``'s, ``sys.stdin.buffer``'s) is not seen, so read the input
    with :func:`os.read`, or look in your own buffer before waiting.

    Raises :class:`CancelledError` when the connection is cancelled or its
    server shut down (propagated out of ``next_message``, it stops the serve
    loop as :meth:`Server.shutdown` does), and :class:`InvalidArgumentError`
    when no session runs on this thread (it must be called from a callback
    of :meth:`Connection.run_session` or :meth:`Server.serve_chat`) or the
    descriptor is not open. Ctrl-C raises KeyboardInterrupt; a signal
    handler that returns normally resumes the wait. Releases the GIL while
    it waits.
    """
    if isinstance(source, bool) or not isinstance(source, int):
        fileno = getattr(source, "fileno", None)
        if not callable(fileno):
            raise TypeError(
                f"wait_for_input needs a descriptor or an object with fileno(), not {type(source).__name__}"
            )
        source = fileno()
    if not isinstance(source, int) or not 0 <= source <= 0x7FFFFFFF:
        raise InvalidArgumentError(f"wait_for_input: descriptor {source!r} is not valid")
    check(call(_ffi.tcpchat_session_wait_input, source))


NextMessage = Callable[[], Optional[Message]]
OnMessage = Callable[[bytes], object]
OnConnect = Callable[[Address], object]
OnEnd = Callable[[Address, Union[SessionEnd, Error]], object]


class ChatCallbacks:
    """A ``tcpchat_chat_callbacks`` struct calling Python functions."""

    def __init__(
        self,
        next_message: NextMessage,
        on_message: OnMessage,
        on_connect: Optional[OnConnect] = None,
        on_end: Optional[OnEnd] = None,
    ) -> None:
        if not callable(next_message) or not callable(on_message):
            raise TypeError("next_message and on_message must be callable")
        self._next_message = next_message
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_end = on_end
        #: The first exception a callback raised, re-raised by raise_pending().
        self.error: Optional[BaseException] = None
        #: A ClosedError or CancelledError of next_message, handed to the
        #: library as its status: dropped if the library took it, re-raised
        #: if it refused it (TCPCHAT_STATUS_CALLBACK).
        self._handed: Optional[Error] = None
        # The last outgoing message: the library reads it after the callback
        # returns, so it must stay alive until the next callback.
        self._pending: Optional[bytes] = None
        # The CFUNCTYPE objects: referenced here for as long as C may call them.
        self._c_next = _ffi.next_message_fn(self._c_next_message)
        self._c_msg = _ffi.on_message_fn(self._c_on_message)
        self._c_connect = _ffi.on_connect_fn(self._c_on_connect)
        self._c_end = _ffi.on_end_fn(self._c_on_end)
        self.struct = _ffi.tcpchat_chat_callbacks()
        self.struct.user_data = None
        self.struct.next_message = self._c_next
        self.struct.on_message = self._c_msg
        if on_connect is not None:
            self.struct.on_connect = self._c_connect
        if on_end is not None:
            self.struct.on_end = self._c_end

    def _c_next_message(
        self,
        _user_data: Optional[int],
        msg_out: "ctypes._Pointer[ctypes.c_char_p]",
        len_out: "ctypes._Pointer[ctypes.c_size_t]",
    ) -> int:
        self._handed = None  # called again: the library took it
        if self.error is not None:
            return 1
        try:
            msg = self._next_message()
            if msg is None:
                self._pending = None
                msg_out[0] = None
                len_out[0] = 0
                return 0
            data = as_bytes(msg)
            self._pending = data
            # Points into the bytes object, kept alive by self._pending.
            msg_out[0] = data
            len_out[0] = len(data)
            return 0
        except (ClosedError, CancelledError) as e:
            if isinstance(e, LocallyClosedError):
                self.error = e
                return 1
            # The peer left, or the server is stopping: the library checks
            # it and ends the session as it would for its own wait.
            self._handed = e
            return int(e.status)
        except BaseException as e:  # noqa: B036 - handed back to the caller
            self.error = e
            return 1

    def _c_on_message(
        self, _user_data: Optional[int], msg: "ctypes._Pointer[ctypes.c_uint8]", length: int
    ) -> int:
        self._handed = None
        if self.error is not None:
            return 1
        try:
            data = ctypes.string_at(msg, length) if length else b""
            self._on_message(data)
            return 0
        except BaseException as e:  # noqa: B036
            self.error = e
            return 1

    def _c_on_connect(self, _user_data: Optional[int], peer: Optional[bytes]) -> int:
        self._handed = None
        if self.error is not None:
            return 1
        try:
            assert self._on_connect is not None
            self._on_connect(Address.parse((peer or b"").decode("utf-8", "replace")))
            return 0
        except BaseException as e:  # noqa: B036
            self.error = e
            return 1

    def _c_on_end(self, _user_data: Optional[int], peer: Optional[bytes], status: int, end: int) -> int:
        self._take_handed(status)
        if self.error is not None:
            return 1
        try:
            # On a failure, the library set this thread's last error message
            # just before calling us.
            outcome: Union[SessionEnd, Error] = (
                SessionEnd(end) if status == _ffi.TCPCHAT_STATUS_OK else from_status(status)
            )
            assert self._on_end is not None
            self._on_end(Address.parse((peer or b"").decode("utf-8", "replace")), outcome)
            return 0
        except BaseException as e:  # noqa: B036
            # Non-zero ends the serve loop; the caller re-raises the error.
            self.error = e
            return 1

    def _take_handed(self, status: int) -> None:
        """The library is done with what next_message handed it: refused
        (TCPCHAT_STATUS_CALLBACK), it is an error to re-raise."""
        handed, self._handed = self._handed, None
        if handed is not None and status == _ffi.TCPCHAT_STATUS_CALLBACK and self.error is None:
            self.error = handed

    def raise_pending(self, status: int) -> None:
        """Re-raise the exception a callback raised, if any, with its
        traceback; ``status`` is what the library call returned."""
        self._take_handed(status)
        err = self.error
        if err is not None:
            self.error = None
            try:
                raise err
            finally:
                del err

    def release(self) -> None:
        """Drop the last outgoing message once the library is done."""
        self._pending = None
