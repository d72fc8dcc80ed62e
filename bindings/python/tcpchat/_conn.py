"""Connections: :func:`connect` and :class:`Connection`."""

from __future__ import annotations

import array
import atexit
import ctypes
import enum
import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Iterable, Iterator, List, Optional, Union

from . import _ffi
from ._callbacks import Address, ChatCallbacks, Message, NextMessage, OnMessage, SessionEnd, as_bytes
from ._config import Config, Framing, c_config, merge, timeout_ms
from ._errors import (
    ClosedError,
    InterruptedError,
    InvalidArgumentError,
    TimeoutError,
    WouldBlockError,
    check,
    from_status,
)
from ._handle import Handle, call, signal_checkpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._config import ConfigOptions

    ConnPtr = ctypes._Pointer[_ffi.tcpchat_conn]

#: The most messages one :meth:`Connection.recv_many` call returns,
#: whatever ``max`` it is given (it allocates room for that many lengths).
RECV_MANY_CAP = 4096

#: The receive buffer each connection starts with; it grows on demand to the
#: largest message received (at most the max message size).
INITIAL_RECV_BUFFER = 64 * 1024
_SIZE_MAX = ctypes.c_size_t(-1).value


# Set at interpreter exit after an uncaught KeyboardInterrupt: connections
# still open then are closed without waiting for their peers, so Ctrl-C ends
# the program at once instead of after each connection's close timeout.
_fast_close = False
_exit_hook_registered = False



#: The array.array type code whose items are C size_t.
_SIZE_T_CODE = next(c for c in ("L", "Q", "I") if array.array(c).itemsize == ctypes.sizeof(ctypes.c_size_t))

def _free_conn(ptr: "ConnPtr") -> None:
    """Free a connection handle (the Handle's free function; it gets only
    the pointer). Closes gracefully first, unless exiting after Ctrl-C."""
    if _fast_close:
        _ffi.tcpchat_conn_cancel(ptr)
    _ffi.tcpchat_conn_free(ptr)


def _at_exit() -> None:
    global _fast_close
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if isinstance(last, KeyboardInterrupt):
        _fast_close = True


def _register_exit_hook() -> None:
    # Registered after the first weakref.finalize exists, so that it runs
    # before finalize's own exit hook (atexit runs last-registered first).
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_at_exit)


class Role(enum.Enum):
    """Which side of a chat session a connection plays."""

    #: Sends first (the tutorial's server).
    SERVER = _ffi.TCPCHAT_ROLE_SERVER
    #: Receives first (the tutorial's client).
    CLIENT = _ffi.TCPCHAT_ROLE_CLIENT


def parse_role(role: Union[Role, str]) -> Role:
    """A Role from itself or its name (``"server"``, ``"client"``)."""
    if isinstance(role, Role):
        return role
    try:
        return Role[str(role).upper()]
    except KeyError:
        raise InvalidArgumentError(f"unknown role {role!r} (expected server or client)") from None


def check_port(port: int, lowest: int) -> int:
    """A port number for the C API. The library checks the range (and says
    so in its message); values that do not even fit a C int are refused here."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not -(2**31) <= port < 2**31:
        raise InvalidArgumentError(f"port {port} is out of range ({lowest} to 65535)")
    return port


def encode_host(host: str) -> bytes:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if "\0" in host:
        raise InvalidArgumentError("host must not contain NUL characters")
    return host.encode("utf-8")


def connect(
    host: str, port: int, *, config: Optional[Config] = None, **options: "Unpack[ConfigOptions]"
) -> "Connection":
    """Connect to ``host``:``port`` and return the :class:`Connection`.

    ``host`` is a name (every address it resolves to is tried), or an IPv4 or
    IPv6 literal (``"::1"``). Settings come from ``config`` and the keyword
    arguments (the fields of :class:`Config`, e.g. ``framing="frame"``,
    ``read_timeout=5``), with the library's defaults for the rest.

    Raises :class:`RefusedError` (nothing listens), :class:`ResolveError`,
    :class:`TimeoutError` (connect timeout), :class:`InvalidArgumentError`
    (port out of range, bad setting), :class:`NetworkError`.
    """
    cfg = merge(config, options)
    c_host = encode_host(host)
    c_port = check_port(port, 1)
    out = ctypes.POINTER(_ffi.tcpchat_conn)()
    with c_config(cfg) as c_cfg:
        check(call(_ffi.tcpchat_conn_connect, c_host, c_port, c_cfg, ctypes.byref(out)))
    return Connection._wrap(out, cfg)


class Connection:
    """One framed TCP connection, from :func:`connect` or :meth:`Server.accept`
    (not made by calling ``Connection()``, which raises ``TypeError``).

    Messages are ``bytes`` (``str`` is accepted on send and encoded as
    UTF-8). ``recv()`` returns ``None`` when the peer has closed and every
    message it sent has been received; iterating over the connection yields
    messages until then.

    A connection is a context manager; it is closed gracefully on ``with``
    exit, by :meth:`close`, or when garbage-collected (everything sent is
    delivered first, and the close waits up to ``close_timeout`` for the peer
    to close too). When a ``with`` block is left by KeyboardInterrupt or
    SystemExit, or the program exits after an uncaught Ctrl-C, that wait is
    skipped.

    Threads: a connection is full-duplex. One thread may receive
    (:meth:`recv`, :meth:`recv_many`, iterating, :meth:`try_recv`) while
    another sends (:meth:`send`, :meth:`send_many`, :meth:`try_send`,
    :meth:`try_flush`, :meth:`shutdown_write`), and neither waits for the
    other::

        def printer():
            for msg in conn:          # this thread only receives
                print(msg.decode())
        threading.Thread(target=printer, daemon=True).start()
        for line in sys.stdin:        # the main thread only sends
            conn.send(line.rstrip("\\n"))
        conn.shutdown_write()

    Two receives at once (or two sends) are served one after the other; the
    second waits at most its own timeout (:attr:`read_timeout` or
    :attr:`write_timeout`, then :class:`TimeoutError`). The ``try_*`` calls
    never wait, for anything: :class:`WouldBlockError` instead, also while
    another thread is in a call on the same side. :meth:`cancel` and
    :meth:`close` may be called from any thread; a close wakes the calls
    blocked in other threads with :class:`ClosedError`. Blocking calls
    release the GIL. Ctrl-C raises KeyboardInterrupt in a main thread
    blocked in any call, also while it waits behind another thread's call;
    a signal handler that returns normally resumes the call.
    """

    def __init__(self) -> None:
        raise TypeError("use tcpchat.connect() or Server.accept() to get a Connection")

    @classmethod
    def _wrap(cls, ptr: "ConnPtr", config: Config) -> "Connection":
        """A Connection owning the new handle ``ptr``."""
        self = cls.__new__(cls)
        self._setup(ptr, config)
        return self

    def _setup(self, ptr: "ConnPtr", config: Config) -> None:
        self._handle: Handle[ConnPtr] = Handle(self, ptr, _free_conn, "connection")
        _register_exit_hook()
        self._config = config
        self._read_timeout: Optional[float] = config.read_timeout
        self._write_timeout: Optional[float] = config.write_timeout
        # One lock per side: calls on one side are served one at a time, and
        # never wait for the other side. The C library would serialise them
        # too, but a wait on a Python lock can be interrupted by Ctrl-C.
        self._recv_lock = threading.Lock()
        self._send_lock = threading.Lock()
        # Set while a call runs with what was left of its timeout after
        # waiting for another thread's call: restored when it returns.
        self._restore_read = False
        self._restore_write = False
        self._session_thread: Optional[int] = None
        self._buf: Optional[ctypes.Array[ctypes.c_uint8]] = None
        self._cap = 0
        self._n = ctypes.c_size_t(0)
        self._lens: Optional[ctypes.Array[ctypes.c_size_t]] = None
        self._peer: Optional[Address] = None
        self._local: Optional[Address] = None
        self._raw = config.framing is Framing.RAW

    def _acquire(self, lock: threading.Lock, timeout: Optional[float], what: str) -> None:
        """Take one side's lock, waiting behind another thread's call on the
        same side for at most ``timeout`` seconds (None = for ever)."""
        if lock.acquire(False):
            return
        if self._session_thread == threading.get_ident():
            raise InvalidArgumentError(
                "a Connection method was called on a connection from a callback of its own "
                "chat session; return from the callback first"
            )
        started = time.monotonic()
        if not lock.acquire(True, -1 if timeout is None else timeout):
            raise TimeoutError(
                f"timed out after {timeout} s waiting for another thread {what} on this connection"
            )
        if timeout is not None:
            # The call that follows gets only what is left of its timeout,
            # so the whole call, the wait included, is bounded by it.
            left_ms = max(1, math.ceil((timeout - (time.monotonic() - started)) * 1000))
            setter = (
                _ffi.tcpchat_conn_set_read_timeout_ms
                if lock is self._recv_lock
                else _ffi.tcpchat_conn_set_write_timeout_ms
            )
            try:
                with self._handle as ptr:
                    check(setter(ptr, left_ms))
            except BaseException:
                lock.release()
                raise
            if lock is self._recv_lock:
                self._restore_read = True
            else:
                self._restore_write = True

    def _release_recv(self) -> None:
        if self._restore_read:
            self._restore_read = False
            self._restore_timeout(_ffi.tcpchat_conn_set_read_timeout_ms, "read_timeout", self._read_timeout)
        self._recv_lock.release()

    def _release_send(self) -> None:
        if self._restore_write:
            self._restore_write = False
            self._restore_timeout(_ffi.tcpchat_conn_set_write_timeout_ms, "write_timeout", self._write_timeout)
        self._send_lock.release()

    def _restore_timeout(self, setter: "ctypes._NamedFuncPointer", name: str, seconds: Optional[float]) -> None:
        try:
            with self._handle as ptr:
                setter(ptr, timeout_ms(name, seconds))
        except ClosedError:
            pass

    def _acquire_now(self, lock: threading.Lock, what: str) -> None:
        if not lock.acquire(False):
            if self._session_thread == threading.get_ident():
                raise InvalidArgumentError(
                    "a Connection method was called on a connection from a callback of its own "
                    "chat session; return from the callback first"
                )
            raise WouldBlockError(f"another thread is {what} on this connection")

    # ----- settings -------------------------------------------------------

    @property
    def config(self) -> Config:
        """The settings the connection was made with."""
        return self._config

    @property
    def framing(self) -> Framing:
        """How messages are delimited on the wire (``LINE``, ``FRAME`` or ``RAW``)."""
        return self._config.framing

    @property
    def read_timeout(self) -> Optional[float]:
        """Seconds a receive waits for a message (None = for ever); a
        :class:`TimeoutError` leaves the connection usable."""
        return self._read_timeout

    @read_timeout.setter
    def read_timeout(self, seconds: Optional[float]) -> None:
        ms = timeout_ms("read_timeout", seconds)
        with self._handle as ptr:
            check(_ffi.tcpchat_conn_set_read_timeout_ms(ptr, ms))
        self._read_timeout = seconds

    @property
    def write_timeout(self) -> Optional[float]:
        """Seconds a send waits for the peer to make room (None = for ever)."""
        return self._write_timeout

    @write_timeout.setter
    def write_timeout(self, seconds: Optional[float]) -> None:
        ms = timeout_ms("write_timeout", seconds)
        with self._handle as ptr:
            check(_ffi.tcpchat_conn_set_write_timeout_ms(ptr, ms))
        self._write_timeout = seconds

    @property
    def peer_address(self) -> Address:
        """The peer's ``(host, port)``."""
        if self._peer is None:
            self._peer = self._address(_ffi.tcpchat_conn_peer_addr)
        return self._peer

    @property
    def local_address(self) -> Address:
        """This end's ``(host, port)``."""
        if self._local is None:
            self._local = self._address(_ffi.tcpchat_conn_local_addr)
        return self._local

    def _address(self, fn: "ctypes._NamedFuncPointer") -> Address:
        buf = ctypes.create_string_buffer(_ffi.TCPCHAT_ADDR_MAX)
        with self._handle as ptr:
            check(fn(ptr, buf, len(buf), None))
        return Address.parse(buf.value.decode("utf-8", "replace"))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._handle.closed

    # ----- sending --------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Send one message and wait until the kernel has taken all of it.

        Raises :class:`InvalidArgumentError` (a ``\\n`` in ``LINE`` framing)
        or :class:`MessageTooLargeError` with nothing sent;
        :class:`TimeoutError` (write timeout; the unsent rest stays queued),
        :class:`ClosedError`, :class:`ResetError`, :class:`CancelledError`.
        """
        data = as_bytes(msg)
        self._acquire(self._send_lock, self._write_timeout, "sending")
        try:
            self._send_one(data)
        finally:
            self._release_send()

    def _send_one(self, data: bytes) -> None:
        with self._handle as ptr:
            if self._raw:
                # Through the library's queue (not the direct raw write), so
                # that an interrupted send can be finished by a flush.
                lens = (ctypes.c_size_t * 1)(len(data))
                status = _ffi.tcpchat_conn_send_packed(ptr, data, len(data), lens, 1)
            else:
                status = _ffi.tcpchat_conn_send(ptr, data, len(data))
            self._finish_send(ptr, status)

    def send_many(self, msgs: Iterable[Message]) -> None:
        """Send every message of ``msgs`` in one library call, with as few
        system calls as possible. All or nothing on refusal: if one message
        is refused (too large, a newline in ``LINE`` framing) none is sent
        and the error names its index."""
        parts = [as_bytes(m) for m in msgs]
        if not parts:
            return
        data = b"".join(parts)
        # The lengths as a C size_t array without a Python-level loop over
        # ctypes objects: array.array fills it at C speed (5x cheaper per
        # message than c_size_t_Array(*lens)), ctypes reads it in place.
        lens_buf = array.array(_SIZE_T_CODE, map(len, parts))
        lens = (ctypes.c_size_t * len(parts)).from_buffer(lens_buf)
        self._acquire(self._send_lock, self._write_timeout, "sending")
        try:
            with self._handle as ptr:
                status = _ffi.tcpchat_conn_send_packed(ptr, data, len(data), lens, len(parts))
                self._finish_send(ptr, status)
        finally:
            self._release_send()

    def _finish_send(self, ptr: "ConnPtr", status: int) -> None:
        if status == _ffi.TCPCHAT_STATUS_INTERRUPTED:
            # The message is encoded in the library's queue; what was not
            # written yet stays there. Run the signal handlers (KeyboardInterrupt
            # propagates), then finish with a flush (PEP 475).
            signal_checkpoint()
            status = call(_ffi.tcpchat_conn_flush, ptr)
        check(status)

    # ----- receiving ------------------------------------------------------

    def _buffer(self, needed: int = 0) -> "ctypes.Array[ctypes.c_uint8]":
        """The receive buffer, (re)allocated to hold at least ``needed`` bytes."""
        buf = self._buf
        if buf is None or needed > self._cap:
            cap = max(needed, INITIAL_RECV_BUFFER)
            buf = self._buf = (ctypes.c_uint8 * cap)()
            self._cap = cap
        return buf

    def recv(self) -> Optional[bytes]:
        """Receive the next message; ``None`` once the peer has closed and
        every message it sent has been received.

        Waits up to :attr:`read_timeout`. Raises :class:`TimeoutError` (the
        connection stays usable), :class:`MessageTooLargeError` or
        :class:`ProtocolError` (the peer broke the format; the connection is
        closed), :class:`ResetError`, :class:`CancelledError`,
        :class:`ClosedError` (closed locally or after an error).
        """
        self._acquire(self._recv_lock, self._read_timeout, "receiving")
        try:
            return self._receive(_ffi.tcpchat_conn_recv)
        finally:
            self._release_recv()

    def recv_text(self, encoding: str = "utf-8", errors: str = "strict") -> Optional[str]:
        """:meth:`recv`, decoded; ``None`` at end of stream."""
        msg = self.recv()
        return None if msg is None else msg.decode(encoding, errors)

    def recv_many(self, max: int = 64) -> List[bytes]:  # noqa: A002 - the documented name
        """Receive up to ``max`` messages (at most 4,096) in one library
        call: waits (up to :attr:`read_timeout`) for the first, then takes
        every further one already received. Returns an empty list at end of stream. Same errors
        as :meth:`recv`."""
        if isinstance(max, bool) or not isinstance(max, int) or max < 1:
            raise InvalidArgumentError(f"max must be a positive int, got {max!r}")
        # The lengths array is allocated up front: cap it, so that a huge
        # max cannot ask for gigabytes. More messages come with the next call.
        max = min(max, RECV_MANY_CAP)
        self._acquire(self._recv_lock, self._read_timeout, "receiving")
        try:
            return self._recv_many(max)
        finally:
            self._release_recv()

    def _recv_many(self, max: int) -> List[bytes]:  # noqa: A002
        with self._handle as ptr:
            buf = self._buffer()
            if self._lens is None or len(self._lens) < max:
                self._lens = (ctypes.c_size_t * max)()
            lens = self._lens
            count = self._n
            while True:
                count.value = _SIZE_MAX
                status = _ffi.tcpchat_conn_recv_many(
                    ptr, buf, self._cap, lens, max, ctypes.byref(count)
                )
                if status == _ffi.TCPCHAT_STATUS_OK:
                    sizes = lens[: count.value]
                    blob = ctypes.string_at(buf, sum(sizes))
                    out: List[bytes] = []
                    at = 0
                    for size in sizes:
                        out.append(blob[at : at + size])
                        at += size
                    return out
                if status == _ffi.TCPCHAT_STATUS_BUFFER_TOO_SMALL:
                    buf = self._buffer(lens[0])
                    continue
                if status == _ffi.TCPCHAT_STATUS_INTERRUPTED:
                    signal_checkpoint()
                    continue
                if status == _ffi.TCPCHAT_STATUS_CLOSED and count.value == 0:
                    return []
                raise from_status(status)

    def __iter__(self) -> Iterator[bytes]:
        """Yield each message until the peer closes."""
        while True:
            msg = self.recv()
            if msg is None:
                return
            yield msg

    # ----- for event loops ------------------------------------------------

    def fileno(self) -> int:
        """A descriptor for select/selectors/``loop.add_reader``: readable
        while :meth:`try_recv` can return without blocking (and, while output
        is queued, while :meth:`try_flush` can make progress). Poll it for
        reading only; it belongs to the connection (never close it)."""
        fd = ctypes.c_int32(-1)
        with self._handle as ptr:
            check(_ffi.tcpchat_conn_fd(ptr, ctypes.byref(fd)))
        return fd.value

    def try_recv(self) -> Optional[bytes]:
        """:meth:`recv` without waiting: the next message, ``None`` at end of
        stream, or :class:`WouldBlockError` (a :class:`BlockingIOError`) when
        no complete message has arrived yet, or while another thread is in a
        receive on this connection. Never waits."""
        self._acquire_now(self._recv_lock, "receiving")
        try:
            return self._receive(_ffi.tcpchat_conn_try_recv)
        finally:
            self._release_recv()

    def _receive(self, fn: "ctypes._NamedFuncPointer") -> Optional[bytes]:
        """One message through ``tcpchat_conn_recv`` or ``_try_recv``: grow
        the buffer when the library says the message (still queued) needs
        more, resume after a signal handler that returned (PEP 475), ``None``
        at end of stream, the status's exception otherwise."""
        with self._handle as ptr:
            buf = self._buffer()
            n = self._n
            while True:
                n.value = _SIZE_MAX
                status = fn(ptr, buf, self._cap, ctypes.byref(n))
                if status == _ffi.TCPCHAT_STATUS_OK:
                    return ctypes.string_at(buf, n.value)
                if status == _ffi.TCPCHAT_STATUS_BUFFER_TOO_SMALL:
                    # The message stays queued: grow to its size and ask again.
                    buf = self._buffer(n.value)
                    continue
                if status == _ffi.TCPCHAT_STATUS_INTERRUPTED:
                    signal_checkpoint()
                    continue
                if status == _ffi.TCPCHAT_STATUS_CLOSED and n.value == 0:
                    return None  # end of stream: the library wrote 0
                raise from_status(status)

    def try_send(self, msg: Message) -> None:
        """Send one message without waiting for the peer: it is accepted and
        sent as far as the socket takes it (the rest is queued for
        :meth:`try_flush`), or, when earlier output is still stuck or another
        thread is sending, refused with :class:`WouldBlockError`. Never waits."""
        data = as_bytes(msg)
        self._acquire_now(self._send_lock, "sending")
        try:
            with self._handle as ptr:
                check(_ffi.tcpchat_conn_try_send(ptr, data, len(data)))
        finally:
            self._release_send()

    def try_flush(self) -> bool:
        """Send queued output as far as the socket takes it now; True when
        all of it went, False when some is still queued (or another thread
        is sending). Never waits."""
        if not self._send_lock.acquire(False):
            return False
        try:
            with self._handle as ptr:
                status = _ffi.tcpchat_conn_try_flush(ptr)
        finally:
            self._release_send()
        if status == _ffi.TCPCHAT_STATUS_WOULD_BLOCK:
            return False
        check(status)
        return True

    # ----- the chat session -----------------------------------------------

    def run_session(
        self,
        role: Union[Role, str],
        next_message: NextMessage,
        on_message: OnMessage,
    ) -> SessionEnd:
        """Run one turn-based chat session as ``role`` until either side
        sends the end word or the peer closes; return how it ended.

        ``next_message()`` returns the next message to send (bytes or str),
        or ``None`` to end the session (the end word is sent).
        ``on_message(msg)`` gets each message received (never the end word).
        Both run on this thread. An exception they raise ends the session and
        is re-raised here with its traceback. The connection stays open.
        """
        r = parse_role(role)
        cbs = ChatCallbacks(next_message, on_message)
        end = ctypes.c_int(0)
        self._acquire(self._recv_lock, self._read_timeout, "receiving")
        try:
            self._acquire(self._send_lock, self._write_timeout, "sending")
        except BaseException:
            self._release_recv()
            raise
        try:
            status, message = self._run_session(r, cbs, end)
        finally:
            self._release_send()
            self._release_recv()
        cbs.raise_pending(status)
        if status == _ffi.TCPCHAT_STATUS_INTERRUPTED:
            signal_checkpoint()  # KeyboardInterrupt, if that is what it was
            raise InterruptedError(message)
        if status != _ffi.TCPCHAT_STATUS_OK:
            raise from_status(status, message)
        return SessionEnd(end.value)

    def _run_session(self, r: Role, cbs: ChatCallbacks, end: "ctypes.c_int") -> "tuple[int, str]":
        with self._handle as ptr:
            # While the session runs, its callbacks run on this thread: a
            # call they make on this connection is refused, as in C, instead
            # of waiting for the locks this thread holds.
            self._session_thread = threading.get_ident()
            try:
                status = _ffi.tcpchat_conn_run_session(
                    ptr, r.value, ctypes.byref(cbs.struct), ctypes.byref(end)
                )
                message = _ffi.last_error_message() if status else ""
            finally:
                self._session_thread = None
                cbs.release()
        return status, message

    # ----- ending ---------------------------------------------------------

    def cancel(self) -> None:
        """Stop this connection's blocked call from any thread: it raises
        :class:`CancelledError`, and so does every later blocking call (close
        the connection next). Safe at any time, any number of times."""
        try:
            with self._handle as ptr:
                check(_ffi.tcpchat_conn_cancel(ptr))
        except ClosedError:
            if not self._handle.closed:
                raise

    def shutdown_write(self) -> None:
        """Send what is queued, then shut down the write half: the peer reads
        end of stream after our last message; we can still receive."""
        self._acquire(self._send_lock, self._write_timeout, "sending")
        try:
            with self._handle as ptr:
                check(call(_ffi.tcpchat_conn_shutdown_write, ptr))
        finally:
            self._release_send()

    def close(self) -> None:
        """Close gracefully (send what is queued, shut down the write half,
        wait up to ``close_timeout`` for the peer to finish) and free the
        connection. Idempotent. Raises the error of the final send, if any.

        May be called from any thread: calls blocked in other threads on
        this connection are woken and raise :class:`ClosedError`.
        """
        if self._handle.closed:
            return
        if self._session_thread == threading.get_ident():
            raise InvalidArgumentError(
                "close() was called from a callback of this connection's own chat session; "
                "return from the callback first (the connection stays open)"
            )
        status = _ffi.TCPCHAT_STATUS_INTERNAL
        message = ""
        try:
            with self._handle as ptr:
                status = _ffi.tcpchat_conn_close(ptr)
                message = _ffi.last_error_message() if status else ""
        finally:
            # Refused (called back from inside a call on this connection):
            # the connection stays open, as in C.
            if status != _ffi.TCPCHAT_STATUS_INVALID_ARGUMENT:
                self._handle.close()
        if status == _ffi.TCPCHAT_STATUS_INTERRUPTED:
            signal_checkpoint()
        if status not in (_ffi.TCPCHAT_STATUS_OK, _ffi.TCPCHAT_STATUS_CLOSED, _ffi.TCPCHAT_STATUS_LOCALLY_CLOSED):
            raise from_status(status, message)

    def __enter__(self) -> "Connection":
        return self

    def __exit__(
        self, exc_type: Optional[type], exc: Optional[BaseException], tb: object
    ) -> None:
        if exc is not None and not isinstance(exc, Exception):
            # KeyboardInterrupt, SystemExit: the program is leaving; close
            # without waiting for the peer (what was sent is still sent).
            self.cancel()
        self.close()

    def __repr__(self) -> str:
        if self._handle.closed:
            return "<tcpchat.Connection closed>"
        try:
            return f"<tcpchat.Connection {self.local_address} -> {self.peer_address} {self.framing.name}>"
        except Exception:
            return "<tcpchat.Connection>"
