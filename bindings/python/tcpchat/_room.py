"""Chat rooms: :class:`Room`, its events and its statistics.

How the handler set with :meth:`Room.on_event` is called, and what happens
when it raises, is decided here (see :class:`_Bridge`):

* The C callback is one ``CFUNCTYPE`` object per room, referenced by the
  room's :class:`Handle` (through its free function) for as long as the
  library may call it, and never freed while the room's own thread may still
  be inside it.
* The bridge holds the :class:`Room` weakly, so a handler that refers to its
  room (the usual case) does not keep it alive: a dropped room is still
  collected, and closed by its finalizer.
* The first exception the handler raises (any ``BaseException``) is stored,
  the room is asked to shut down (every client gets the closing line), and
  the handler is not called again. It is re-raised, with its traceback, by
  :meth:`Room.run` when it happened there, else by the next
  :meth:`Room.shutdown` or :meth:`Room.close`. When it happened on the
  room's own thread (after :meth:`Room.start`), where no caller can catch
  it, it is also reported at once through :func:`sys.unraisablehook` (ctypes
  reports it: printed to stderr by default).
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import threading
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, TypeVar, overload

from . import _ffi
from ._callbacks import Address
from ._config import Config, c_config, merge, timeout_ms
from ._conn import check_port, encode_host
from ._errors import ClosedError, InvalidArgumentError, check, from_status
from ._handle import Handle, signal_checkpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._config import ConfigOptions

    RoomPtr = ctypes._Pointer[_ffi.tcpchat_room]
    EventPtr = ctypes._Pointer[_ffi.tcpchat_room_event]


class RoomEventKind(enum.Enum):
    """What a :class:`RoomEvent` reports."""

    #: A client joined: ``name`` (its first name, ``guestN``) and ``address``.
    JOIN = _ffi.TCPCHAT_ROOM_EVENT_JOIN
    #: A member left: ``name`` (its name then) and ``reason``.
    LEAVE = _ffi.TCPCHAT_ROOM_EVENT_LEAVE
    #: A member sent a line, relayed to everyone else: ``name`` and ``text``.
    MESSAGE = _ffi.TCPCHAT_ROOM_EVENT_MESSAGE
    #: A member changed its name with ``/nick``: ``old_name`` and ``name``.
    RENAME = _ffi.TCPCHAT_ROOM_EVENT_RENAME


class LeaveReason(enum.Enum):
    """Why a member left the room."""

    #: It sent ``/quit``.
    QUIT = _ffi.TCPCHAT_LEAVE_REASON_QUIT
    #: It closed the connection.
    CLOSED = _ffi.TCPCHAT_LEAVE_REASON_CLOSED
    #: The connection failed (reset by the peer, or another I/O error).
    LOST = _ffi.TCPCHAT_LEAVE_REASON_LOST
    #: Its outgoing queue overflowed: it did not read fast enough.
    SLOW_READER = _ffi.TCPCHAT_LEAVE_REASON_SLOW_READER
    #: It held an unfinished line for ``idle_timeout`` (a member that only
    #: reads is never dropped as idle).
    IDLE_TIMEOUT = _ffi.TCPCHAT_LEAVE_REASON_IDLE_TIMEOUT
    #: It sent a line longer than the room's line limit (16 KiB, or
    #: ``max_message_size`` if smaller).
    LINE_TOO_LONG = _ffi.TCPCHAT_LEAVE_REASON_LINE_TOO_LONG
    #: The room shut down.
    SHUTDOWN = _ffi.TCPCHAT_LEAVE_REASON_SHUTDOWN
    #: It stayed over its rate (``lines_per_second``, ``bytes_per_second``)
    #: for ``flood_timeout`` and got ``error: excess flood``.
    FLOOD = _ffi.TCPCHAT_LEAVE_REASON_FLOOD

    def __str__(self) -> str:
        """The lowercase name, as the library's logs say it: ``slow_reader``."""
        return self.name.lower()


@dataclasses.dataclass(frozen=True)
class RoomEvent:
    """Something that happened in the room, as the handler of
    :meth:`Room.on_event` sees it. Fields that do not apply to the
    :attr:`kind` are ``None``."""

    #: What happened.
    kind: RoomEventKind
    #: The client it is about: 1, 2, ... in the order clients joined, never
    #: reused, whatever its name.
    client_id: int
    #: The client's name (after a rename: the new one).
    name: str
    #: ``RENAME``: the name it had.
    old_name: Optional[str] = None
    #: ``MESSAGE``: the line, without its newline.
    text: Optional[str] = None
    #: ``JOIN``: the client's address.
    address: Optional[Address] = None
    #: ``LEAVE``: why it left.
    reason: Optional[LeaveReason] = None


@dataclasses.dataclass(frozen=True)
class RoomStats:
    """What a room has done so far (:meth:`Room.stats`, :meth:`Room.run`)."""

    #: Clients that joined.
    joined: int
    #: Clients refused because the room was full.
    refused: int
    #: Messages relayed (each counted once, however many received it).
    messages: int
    #: Members dropped by the room: too slow to read, idle, or a line too long.
    dropped: int
    #: Members in the room now.
    online: int


EventHandler = Callable[[RoomEvent], object]
H = TypeVar("H", bound=EventHandler)

# Bridges whose room was freed from inside its own handler, on the room's
# thread (start()): that loop goes on after the handler returns. The library
# does not call back once tcpchat_room_free() has returned, but the callback
# is still executing then; keeping its bridge for the life of the process
# (one small object per such room) makes that safe whatever the library.
_retired: List["_Bridge"] = []


def _stats(s: _ffi.tcpchat_room_stats) -> RoomStats:
    return RoomStats(
        joined=s.joined, refused=s.refused, messages=s.messages, dropped=s.dropped, online=s.online
    )


def _str(raw: Optional[bytes]) -> str:
    return (raw or b"").decode("utf-8", "replace")


def _event(ev: _ffi.tcpchat_room_event) -> Optional[RoomEvent]:
    """The Python event for a C one; None for a kind this binding does not
    know (a newer library)."""
    try:
        kind = RoomEventKind(ev.kind)
    except ValueError:
        return None
    text = None
    if ev.text:
        # text_len, not the NUL: a message may contain a NUL byte.
        text = ctypes.string_at(ev.text, ev.text_len).decode("utf-8", "replace")
    return RoomEvent(
        kind=kind,
        client_id=int(ev.client_id),
        name=_str(ev.name),
        old_name=_str(ev.old_name) if ev.old_name is not None else None,
        text=text,
        address=Address.parse(_str(ev.address)) if ev.address else None,
        reason=LeaveReason(ev.reason) if kind is RoomEventKind.LEAVE else None,
    )


class _Bridge:
    """Between the library's callback and the room's Python handler; owns
    the ``CFUNCTYPE`` object, the stored exception, and the room's free
    function. Holds the Room weakly, never the handler."""

    def __init__(self, room: "Room") -> None:
        self._room = weakref.ref(room)
        #: The room's address, for messages.
        self.where = "?"
        self._lock = threading.Lock()
        #: The first exception the handler raised, until a caller takes it.
        self._error: Optional[BaseException] = None
        #: The same, kept after it is taken (the cause of later refusals).
        self.failure: Optional[BaseException] = None
        # Threads inside a run/shutdown/close of this room (ident -> depth):
        # an exception raised on one of them is re-raised by that call.
        self._callers: Dict[int, int] = {}
        #: The thread inside the callback right now, if any.
        self.inside: Optional[int] = None
        self.handle: Optional[Handle["RoomPtr"]] = None
        self.c_callback = _ffi.tcpchat_room_callback(self._on_event)

    def __repr__(self) -> str:
        return f"<tcpchat.Room event handler on {self.where}>"

    @contextmanager
    def calling(self) -> Iterator[None]:
        """Mark the calling thread as inside a blocking call of the room."""
        me = threading.get_ident()
        with self._lock:
            self._callers[me] = self._callers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                depth = self._callers.pop(me) - 1
                if depth:
                    self._callers[me] = depth

    def _on_event(self, _user_data: Optional[int], event: "EventPtr") -> None:
        # Runs on the thread that runs the room (ctypes takes the GIL). No
        # exception may reach C, except the one re-raised below on purpose:
        # ctypes then reports it to sys.unraisablehook and returns.
        me = threading.get_ident()
        outer = self.inside
        self.inside = me
        try:
            if self.failure is not None:
                return
            room = self._room()
            handler = room._handler if room is not None else None
            if handler is None:
                return
            ev = _event(event.contents)
            if ev is not None:
                handler(ev)
        except BaseException as e:  # noqa: B036 - handed to a caller (or reported)
            if self._failed(e, me):
                raise  # on the room's own thread: reported by ctypes, not lost
        finally:
            self.inside = outer

    def _failed(self, error: BaseException, thread: int) -> bool:
        """Store the handler's exception and stop the room; True when no
        call of ours is waiting on this thread to re-raise it."""
        with self._lock:
            if self.failure is not None:
                return False
            self.failure = self._error = error
            ours = thread in self._callers
        # From the callback, shutdown only asks: the room stops (every client
        # gets the closing line) once the callback returns.
        handle = self.handle
        if handle is not None:
            try:
                with handle as ptr:
                    _ffi.tcpchat_room_shutdown(ptr)
            except ClosedError:
                pass  # already freed, hence shutting down
        return not ours

    def take_error(self) -> Optional[BaseException]:
        with self._lock:
            error, self._error = self._error, None
        return error

    def free(self, ptr: "RoomPtr") -> None:
        """The Handle's free function: shut the room down and free it.

        Not a call that re-raises: when it runs the last events (a room
        dropped without close(), or still open at exit), an exception the
        handler raises there is reported through sys.unraisablehook."""
        if self.inside == threading.get_ident():
            # Freed from inside the handler on the room's own thread: the
            # loop goes on when the handler returns (see _retired).
            _retired.append(self)
        _ffi.tcpchat_room_free(ptr)


def _stop_at_exit(handle: Handle["RoomPtr"]) -> None:
    """A second finalizer: at interpreter exit (or collection), a room still
    served by ``run()`` on another thread is shut down first, so its clients
    get the closing line and that thread returns while Python still runs;
    the handle's own finalizer frees it after (finalizers run newest first)."""
    if handle.in_use:
        try:
            with handle as ptr:
                _ffi.tcpchat_room_shutdown(ptr)
        except ClosedError:
            pass


class Room:
    """A chat room: every line a client sends reaches every other client as
    ``NAME: TEXT``. Clients speak plain lines, so ``nc`` and ``telnet`` can
    join; the commands are ``/nick NAME``, ``/who`` and ``/quit``, and the
    room sends join, leave and rename notices. One library thread serves
    every client (an event loop), so a room holds thousands of them; a slow
    reader is dropped rather than slowing the room. The exact lines the room
    writes are listed in the Rust documentation of ``tcpchat::room``.

    ``Room()`` listens on 127.0.0.1 on a free port (:attr:`address` and
    :attr:`port` give the real one). Settings come from ``config`` and the
    keyword arguments, as for :class:`Server`; the room uses
    ``max_message_size`` (its line limit is 16 KiB, or this if smaller; no
    line it relays is over 1 MiB with its ``NAME: `` prefix, so members with
    default settings take every one), ``idle_timeout``, ``close_timeout``,
    ``max_clients``, ``nodelay``, ``backlog``, ``allow``, ``deny`` and
    ``max_per_address``; the framing must be ``LINE`` (the default).
    ``queue_limit`` bounds each client's outgoing queue in bytes (None: the
    library's 256 KiB): a client whose unread lines exceed it is dropped.
    Lines are relayed with terminal controls shown escaped (the notation of
    :func:`tcpchat.escape_text`); ``raw_text=True`` relays them as typed,
    only for rooms whose every member is a program.

    How fast each member may send: ``lines_per_second`` lines (commands
    included) a second with bursts of ``line_burst``, and
    ``bytes_per_second`` bytes a second with bursts of ``byte_burst`` (0
    turns a limit off); the defaults, 50 lines/s, bursts of 500, 32 KiB/s,
    bursts of 64 KiB, are generous for people and ordinary bots. A member
    over its rate is not read from (its data waits in the kernel) until it
    is within it again; one that stays over it, never catching up, for
    ``flood_timeout`` seconds (10; None = never) gets ``error: excess
    flood`` and is closed (:attr:`LeaveReason.FLOOD`). A reader that keeps
    up with the rate the room allows is never dropped as too slow because
    another member floods.

    Serve with :meth:`run` (blocks this thread) or :meth:`start` (a library
    thread); observe with :meth:`on_event`; announce with :meth:`post`; stop
    with :meth:`shutdown` from any thread. A context manager; closed (shut
    down, then freed) on ``with`` exit, by :meth:`close`, or when
    garbage-collected.

    Handler exceptions: the first exception the event handler raises shuts
    the room down (every client gets the closing line; the handler is not
    called again) and is re-raised with its traceback by :meth:`run` when
    the handler ran there, otherwise by the next :meth:`shutdown` or
    :meth:`close`. On the room's own thread (after :meth:`start`) it is also
    reported at once through :func:`sys.unraisablehook` (printed to stderr
    by default), since no caller can catch it there.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: Optional[Config] = None,
        queue_limit: Optional[int] = None,
        raw_text: bool = False,
        lines_per_second: int = 50,
        line_burst: int = 500,
        bytes_per_second: int = 32 * 1024,
        byte_burst: int = 64 * 1024,
        flood_timeout: Optional[float] = 10.0,
        **options: "Unpack[ConfigOptions]",
    ) -> None:
        cfg = merge(config, options)
        c_host = encode_host(host)
        c_port = check_port(port, 0)
        limit = _queue_limit(queue_limit)
        out = ctypes.POINTER(_ffi.tcpchat_room)()
        with c_config(cfg) as c_cfg:
            check(_ffi.tcpchat_room_bind(c_host, c_port, c_cfg, limit, ctypes.byref(out)))
        self._handler: Optional[EventHandler] = None
        self._bridge = _Bridge(self)
        self._handle: Handle[RoomPtr] = Handle(self, out, self._bridge.free, "room")
        self._bridge.handle = self._handle
        weakref.finalize(self, _stop_at_exit, self._handle)
        self._config = cfg
        self._queue_limit = queue_limit
        self._stopping = False
        buf = ctypes.create_string_buffer(_ffi.TCPCHAT_ADDR_MAX)
        with self._handle as ptr:
            check(_ffi.tcpchat_room_local_addr(ptr, buf, len(buf), None))
        self._address = Address.parse(buf.value.decode("utf-8", "replace"))
        self._bridge.where = str(self._address)
        self._raw_text = False
        if raw_text:
            self.raw_text = True
        rate = (
            _count("lines_per_second", lines_per_second, 2**32 - 1),
            _count("line_burst", line_burst, 2**32 - 1),
            _count("bytes_per_second", bytes_per_second, 2**64 - 1),
            _count("byte_burst", byte_burst, 2**64 - 1),
            timeout_ms("flood_timeout", flood_timeout),
        )
        with self._handle as ptr:
            check(_ffi.tcpchat_room_set_rate(ptr, *rate))

    # ----- properties -----------------------------------------------------

    @property
    def address(self) -> Address:
        """The ``(host, port)`` listened on, with the real port when bound to 0;
        ``str()`` gives ``host:port``."""
        return self._address

    @property
    def port(self) -> int:
        """The port listened on (the real one when bound to 0)."""
        return self._address.port

    @property
    def config(self) -> Config:
        """The settings the room was made with."""
        return self._config

    @property
    def queue_limit(self) -> Optional[int]:
        """Each client's outgoing queue limit in bytes (None: the library's
        default, 256 KiB)."""
        return self._queue_limit

    @property
    def raw_text(self) -> bool:
        """Whether lines are relayed as typed, terminal controls included
        (False, the default: shown escaped). Settable at any time."""
        return self._raw_text

    @raw_text.setter
    def raw_text(self, raw: bool) -> None:
        with self._handle as ptr:
            check(_ffi.tcpchat_room_set_raw_text(ptr, bool(raw)))
        self._raw_text = bool(raw)

    @property
    def closed(self) -> bool:
        return self._handle.closed

    # ----- events ---------------------------------------------------------

    @overload
    def on_event(self, handler: H) -> H: ...

    @overload
    def on_event(self, handler: None) -> None: ...

    def on_event(self, handler: Optional[H]) -> Optional[H]:
        """Call ``handler(event)`` with a :class:`RoomEvent` for every join,
        leave, message and rename (``None`` stops observing). Set it before
        the room runs: :class:`InvalidArgumentError` while it runs,
        :class:`CancelledError` once it has been shut down. Returns
        ``handler``, so it also works as a decorator (``@room.on_event``).

        The handler runs on the thread that runs the room (the one in
        :meth:`run`, or the room's own thread after :meth:`start`), between
        two steps of its loop: every client waits meanwhile, so keep it short
        (hand slow work to another thread through a queue). It may call
        :meth:`post` (the line goes out after it returns), :meth:`shutdown`
        and :meth:`close` (which then return at once; the room stops after
        the handler returns). An exception it raises shuts the room down;
        see the class documentation.
        """
        if handler is not None and not callable(handler):
            raise TypeError("the event handler must be callable or None")
        c_fn = self._bridge.c_callback if handler is not None else _ffi.tcpchat_room_callback()
        with self._handle as ptr:
            check(_ffi.tcpchat_room_set_callback(ptr, c_fn, None))
        self._handler = handler
        return handler

    # ----- serving --------------------------------------------------------

    def run(self) -> RoomStats:
        """Serve the room on this thread until it is shut down (by
        :meth:`shutdown` from another thread, a signal handler or the event
        handler; every client is then closed gracefully before this returns)
        and return what it did. Returns at once if the room has already been
        shut down by :meth:`shutdown`.

        The event handler runs on this thread; an exception it raises shuts
        the room down and is re-raised here with its traceback.

        Ctrl-C raises KeyboardInterrupt, within milliseconds; nothing is
        lost: the clients stay connected (waiting) and calling :meth:`run`
        again goes on serving (or :meth:`close` closes them). A signal
        handler that returns normally lets the room go on serving (PEP 475).
        If Ctrl-C lands while the event handler itself runs, it is an
        exception in the handler: the room shuts down, then
        KeyboardInterrupt is raised.

        Raises :class:`InvalidArgumentError` if the room is already running
        (here or after :meth:`start`), :class:`NetworkError` if the event
        loop itself fails.
        """
        stats = _ffi.tcpchat_room_stats()
        with self._handle as ptr, self._bridge.calling():
            while True:
                status = _ffi.tcpchat_room_run(ptr, ctypes.byref(stats))
                message = _ffi.last_error_message() if status else ""
                self._raise_pending()
                if status == _ffi.TCPCHAT_STATUS_INTERRUPTED:
                    signal_checkpoint()  # KeyboardInterrupt, or go on (PEP 475)
                    continue
                if status == _ffi.TCPCHAT_STATUS_CANCELLED and self._stopping:
                    # Shut down before the loop ran here (say, by another
                    # thread just before this call, or by a signal handler
                    # between two calls): the clients are closed already.
                    check(_ffi.tcpchat_room_get_stats(ptr, ctypes.byref(stats)))
                    break
                if status != _ffi.TCPCHAT_STATUS_OK:
                    raise from_status(status, message)
                break
        return _stats(stats)

    def start(self) -> None:
        """Serve the room on a new library thread and return at once. Stop
        it with :meth:`shutdown` or :meth:`close` (or by dropping the room).
        The event handler then runs on that thread, which is not a Python
        thread: see the class documentation for its exceptions.

        Raises :class:`InvalidArgumentError` if the room is already running,
        :class:`CancelledError` once it has been shut down,
        :class:`NetworkError` if the thread cannot be created.
        """
        with self._handle as ptr:
            check(_ffi.tcpchat_room_start(ptr))

    def post(self, text: str) -> None:
        """Send ``* TEXT`` to every client, from any thread (the event handler
        included). Returns once the line is queued for the room's loop; no
        event is reported for it. A post made before the room runs reaches
        the clients present when it starts.

        Raises :class:`InvalidArgumentError` for a newline or NUL in
        ``text``, :class:`MessageTooLargeError` if it is longer than
        ``max_message_size`` (UTF-8 bytes), :class:`CancelledError` once the
        room is shutting down, :class:`ClosedError` once it is closed.
        """
        if not isinstance(text, str):
            raise TypeError(f"a posted message must be a str, not {type(text).__name__}")
        if "\0" in text:
            raise InvalidArgumentError("a posted message cannot contain a NUL character")
        data = text.encode("utf-8")
        with self._handle as ptr:
            status = _ffi.tcpchat_room_post(ptr, data)
            if status == _ffi.TCPCHAT_STATUS_OK:
                return
            err = from_status(status)
        cause = self._bridge.failure
        if status == _ffi.TCPCHAT_STATUS_CANCELLED and cause is not None:
            # Shut down because the handler raised: say so.
            raise err from cause
        raise err

    def shutdown(self) -> None:
        """Shut the room down, from any thread: it stops accepting, every
        client gets ``* server shutting down`` and is closed gracefully (its
        queue flushed, then up to ``close_timeout`` for it to close), and the
        call returns when the room has stopped (:meth:`run` on another thread
        returns too). Called from the event handler, it returns at once and
        the room stops after the handler returns. Idempotent; a no-op on a
        closed room.

        Raises the exception the event handler raised, if any and not raised
        yet (see the class documentation).
        """
        self._stopping = True
        try:
            with self._handle as ptr, self._bridge.calling():
                check(_ffi.tcpchat_room_shutdown(ptr))
        except ClosedError:
            if not self._handle.closed:
                raise
        self._raise_pending()

    def stats(self) -> RoomStats:
        """What the room has done so far; a snapshot, safe from any thread."""
        s = _ffi.tcpchat_room_stats()
        with self._handle as ptr:
            check(_ffi.tcpchat_room_get_stats(ptr, ctypes.byref(s)))
        return _stats(s)

    def close(self) -> None:
        """Shut the room down (see :meth:`shutdown`) and free it. Idempotent.
        A :meth:`run` blocked in another thread returns, and the room is
        freed when it has. Raises the event handler's exception, if any and
        not raised yet."""
        if self._handle.closed:
            return
        try:
            self.shutdown()
        finally:
            self._handle.close()

    def _raise_pending(self) -> None:
        """Re-raise the handler's exception, if any, with its traceback."""
        err = self._bridge.take_error()
        if err is not None:
            try:
                raise err
            finally:
                del err

    def __enter__(self) -> "Room":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._handle.closed else f"on {self._address}"
        return f"<tcpchat.Room {state}>"


def _count(name: str, value: int, maximum: int) -> int:
    """A rate setting for the C API: an int from 0 to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise InvalidArgumentError(f"{name} {value} is out of range (0 to {maximum})")
    return value


def _queue_limit(value: Optional[int]) -> int:
    """The C API's queue limit (0 = the default) for ``queue_limit``."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"queue_limit must be an int or None, not {type(value).__name__}")
    if not 1 <= value < 2**64:
        raise InvalidArgumentError(f"queue_limit must be at least 1 byte (None for the default); got {value}")
    return value
