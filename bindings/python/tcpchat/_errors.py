"""Exceptions: one base class, one subclass per library status."""

from __future__ import annotations

import builtins
import enum
from typing import Dict, Type

from . import _ffi


class Status(enum.IntEnum):
    """The library's status codes (``tcpchat_status`` in the C header)."""

    OK = _ffi.TCPCHAT_STATUS_OK
    INVALID_ARGUMENT = _ffi.TCPCHAT_STATUS_INVALID_ARGUMENT
    IO = _ffi.TCPCHAT_STATUS_IO
    TIMEOUT = _ffi.TCPCHAT_STATUS_TIMEOUT
    CLOSED = _ffi.TCPCHAT_STATUS_CLOSED
    MESSAGE_TOO_LARGE = _ffi.TCPCHAT_STATUS_MESSAGE_TOO_LARGE
    PROTOCOL = _ffi.TCPCHAT_STATUS_PROTOCOL
    ADDRESS_IN_USE = _ffi.TCPCHAT_STATUS_ADDRESS_IN_USE
    CONNECTION_REFUSED = _ffi.TCPCHAT_STATUS_CONNECTION_REFUSED
    RESOLVE = _ffi.TCPCHAT_STATUS_RESOLVE
    CANCELLED = _ffi.TCPCHAT_STATUS_CANCELLED
    INTERRUPTED = _ffi.TCPCHAT_STATUS_INTERRUPTED
    BUFFER_TOO_SMALL = _ffi.TCPCHAT_STATUS_BUFFER_TOO_SMALL
    CALLBACK = _ffi.TCPCHAT_STATUS_CALLBACK
    SERVER_FULL = _ffi.TCPCHAT_STATUS_SERVER_FULL
    CONNECTION_RESET = _ffi.TCPCHAT_STATUS_CONNECTION_RESET
    INTERNAL = _ffi.TCPCHAT_STATUS_INTERNAL
    WOULD_BLOCK = _ffi.TCPCHAT_STATUS_WOULD_BLOCK
    LOCALLY_CLOSED = _ffi.TCPCHAT_STATUS_LOCALLY_CLOSED


class Error(Exception):
    """Base class of every tcpchat error.

    ``str(err)`` and ``err.message`` are the library's own description (for
    example ``connection to 127.0.0.1:9 refused``); ``err.status`` is the
    :class:`Status` code and ``err.status_name`` its C name.
    """

    #: The status this class stands for (an instance may carry an unknown one).
    status: int = -1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def status_name(self) -> str:
        """The status's C name, such as ``TCPCHAT_STATUS_TIMEOUT``."""
        return _ffi.status_name(self.status)

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(Error, ValueError):
    """An argument was refused: a port out of range, an unknown setting, a
    newline in a ``LINE`` message, ... Also a :class:`ValueError`."""

    status = Status.INVALID_ARGUMENT


class NetworkError(Error, OSError):
    """An operating-system I/O error without a more precise class (an
    :class:`OSError`)."""

    status = Status.IO


class TimedOutError(Error, builtins.TimeoutError):
    """A connect, read, write or idle timeout expired. Also the builtin
    :class:`TimeoutError` (``except TimeoutError`` catches it). After a read
    timeout the connection stays usable. ``tcpchat.TimeoutError`` is the same
    class, under the name it had before; it is not in ``__all__``, so that
    ``from tcpchat import *`` never shadows the builtin."""

    status = Status.TIMEOUT


TimeoutError = TimedOutError


class ClosedError(Error, builtins.ConnectionError):
    """The connection is closed: the peer has gone (a send to a peer that
    left), or, as :class:`LocallyClosedError`, this side closed it. A
    :class:`ConnectionError`. The peer closing normally is *not* an error:
    ``recv()`` returns ``None`` then."""

    status = Status.CLOSED


class LocallyClosedError(ClosedError):
    """This side closed the connection, so it cannot be used: after
    :meth:`Connection.close` (also from another thread, which wakes the calls
    blocked on it), after the library closed it because of an error (the
    message says which), or a send after :meth:`Connection.shutdown_write`.
    A :class:`ClosedError`."""

    status = Status.LOCALLY_CLOSED


class MessageTooLargeError(Error, ValueError):
    """A message exceeds the maximum message size. Sending: your message was
    refused and nothing was sent (a ``ValueError``, as every refusal of an
    argument is). Receiving: the peer's connection has been closed."""

    status = Status.MESSAGE_TOO_LARGE


class ProtocolError(Error):
    """The peer broke the wire format; the connection has been closed."""

    status = Status.PROTOCOL


class AddressInUseError(Error, OSError):
    """The address to listen on is already in use (an :class:`OSError`)."""

    status = Status.ADDRESS_IN_USE


class RefusedError(Error, builtins.ConnectionRefusedError):
    """Nothing listens at the address (the builtin
    :class:`ConnectionRefusedError`, so a :class:`ConnectionError`)."""

    status = Status.CONNECTION_REFUSED


class ResolveError(Error, OSError):
    """A host name could not be resolved (an :class:`OSError`, like
    :class:`socket.gaierror`)."""

    status = Status.RESOLVE


class CancelledError(Error):
    """The operation was cancelled by :meth:`Connection.cancel` or
    :meth:`Server.shutdown`."""

    status = Status.CANCELLED


class InterruptedCallError(Error, builtins.InterruptedError):
    """A signal handler ran during a blocking call and the call could not be
    resumed (a chat session). Plain receives, sends and accepts are resumed
    automatically instead (PEP 475). Also the builtin :class:`InterruptedError`;
    ``tcpchat.InterruptedError`` is the same class under its former name (not
    in ``__all__``)."""

    status = Status.INTERRUPTED


InterruptedError = InterruptedCallError


class BufferTooSmallError(Error):
    """Internal: a buffer was too small (the binding grows its buffers, so
    this should never reach you)."""

    status = Status.BUFFER_TOO_SMALL


class CallbackError(Error):
    """A callback reported a failure without a Python exception to re-raise."""

    status = Status.CALLBACK


class ServerFullError(Error, builtins.ConnectionError):
    """The server already serves its maximum number of clients."""

    status = Status.SERVER_FULL


class ResetError(Error, builtins.ConnectionResetError):
    """The peer reset the connection (the builtin
    :class:`ConnectionResetError`, so a :class:`ConnectionError`)."""

    status = Status.CONNECTION_RESET


class InternalError(Error):
    """A bug inside tcpchat (a caught panic)."""

    status = Status.INTERNAL


class WouldBlockError(Error, BlockingIOError):
    """A non-blocking call could not proceed without waiting; nothing was
    lost (the builtin :class:`BlockingIOError`)."""

    status = Status.WOULD_BLOCK


_BY_STATUS: Dict[int, Type[Error]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        NetworkError,
        TimedOutError,
        ClosedError,
        LocallyClosedError,
        MessageTooLargeError,
        ProtocolError,
        AddressInUseError,
        RefusedError,
        ResolveError,
        CancelledError,
        InterruptedCallError,
        BufferTooSmallError,
        CallbackError,
        ServerFullError,
        ResetError,
        InternalError,
        WouldBlockError,
    )
}


def error_class(status: int) -> Type[Error]:
    """The exception class for a status (:class:`Error` for an unknown one)."""
    return _BY_STATUS.get(status, Error)


def from_status(status: int, message: str = "") -> Error:
    """An exception for ``status``. Without ``message``, the calling thread's
    last error message is read: call this right after the failing call."""
    if not message:
        message = _ffi.last_error_message() or _ffi.status_name(status)
    err = error_class(status)(message)
    if type(err) is Error:
        err.status = status
    return err


def check(status: int) -> None:
    """Raise the matching exception unless ``status`` is OK."""
    if status != _ffi.TCPCHAT_STATUS_OK:
        raise from_status(status)
