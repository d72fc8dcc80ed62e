"""asyncio for tcpchat: :func:`connect`, :func:`start_server`, and the
awaitable :class:`Connection` and :class:`Server`.

The same conventions as :func:`asyncio.open_connection` and
:func:`asyncio.start_server`::

    import asyncio
    import tcpchat.aio

    async def echo(conn: tcpchat.aio.Connection) -> None:
        async for msg in conn:               # until the peer closes
            await conn.send(msg)

    async def main() -> None:
        async with await tcpchat.aio.start_server(echo, port=0) as server:
            async with await tcpchat.aio.connect("127.0.0.1", server.port) as conn:
                await conn.send("hello")
                print(await conn.recv())     # b'hello'

    asyncio.run(main())

Nothing here blocks the event loop. Connections are driven through their
pollable descriptor (``loop.add_reader``) and the library's non-blocking
calls (``try_recv``, ``try_send``, ``try_flush``, ``try_accept``); what can
only block (resolving and connecting, binding a server) runs in the loop's
default executor. A connection is full-duplex: a task may await
:meth:`Connection.recv` while another awaits :meth:`Connection.send`.

Use an object of this module from its event loop's thread only (asyncio
objects are not thread-safe); the underlying :class:`tcpchat.Connection`
(:attr:`Connection.sync`) must not be used meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import select
import warnings
from typing import (
    TYPE_CHECKING,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    List,
    Optional,
    Set,
    Tuple,
    Type,
    TypeVar,
)

from ._callbacks import Address, Message, as_bytes
from ._config import Config, Framing, merge
from ._conn import Connection as _SyncConnection
from ._conn import connect as _sync_connect
from ._errors import (
    ClosedError,
    Error,
    LocallyClosedError,
    InvalidArgumentError,
    MessageTooLargeError,
    TimeoutError,
    WouldBlockError,
)
from ._server import Server as _SyncServer

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Unpack

    from ._config import ConfigOptions

__all__ = ["Connection", "Server", "ClientConnected", "connect", "start_server"]

#: The logger of this module: failures of client handlers and of accepting.
logger = logging.getLogger("tcpchat.aio")

#: What :func:`start_server` calls for each client: a coroutine function
#: taking the client's :class:`Connection`.
ClientConnected = Callable[["Connection"], Awaitable[object]]

T = TypeVar("T")

# While the peer has sent something that no task is receiving (or after its
# end of stream), the descriptor stays readable and cannot say when the
# socket takes more output: queued output is then flushed on a timer, every
# _STALL_MIN seconds at first, doubling up to _STALL_MAX.
_STALL_MIN = 0.001
_STALL_MAX = 0.02
# How many clients one readiness of the listening socket accepts at most
# (then the loop runs other work before accepting more).
_ACCEPT_BATCH = 64
# After an accept fails (e.g. out of descriptors), wait this long.
_ACCEPT_RETRY = 1.0


async def _in_executor(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], T], discard: Callable[[T], None]
) -> T:
    """``fn()`` in the loop's default executor. When the awaiting task is
    cancelled, the call still finishes on its thread; ``discard`` then gets
    its result on the loop's thread, so nothing is leaked."""
    fut = loop.run_in_executor(None, fn)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:

        def abandoned(f: "asyncio.Future[T]") -> None:
            if f.cancelled() or f.exception() is not None:
                return
            discard(f.result())

        fut.add_done_callback(abandoned)
        raise


def _abort_sync(conn: _SyncConnection) -> None:
    """Close a connection nobody will use, without waiting for its peer."""
    try:
        conn.cancel()
        conn.close()
    except Error:
        pass


async def connect(
    host: str,
    port: int,
    *,
    config: Optional[Config] = None,
    **settings: "Unpack[ConfigOptions]",
) -> "Connection":
    """Connect to ``host``:``port`` and return the :class:`Connection`.

    The same arguments, settings and errors as :func:`tcpchat.connect`
    (:class:`tcpchat.RefusedError` when nothing listens,
    :class:`tcpchat.ResolveError`, :class:`tcpchat.TimeoutError` after
    ``connect_timeout``, ...). Resolving and connecting run in the loop's
    default executor, so the loop goes on meanwhile. If the awaiting task is
    cancelled, a connection that is made anyway is closed at once.
    """
    cfg = merge(config, settings)
    loop = asyncio.get_running_loop()
    sync = await _in_executor(
        loop, functools.partial(_sync_connect, host, port, config=cfg), _abort_sync
    )
    try:
        return Connection(sync)
    except BaseException:
        _abort_sync(sync)
        raise


class Connection:
    """One framed TCP connection, driven by the running event loop.

    Get one from :func:`connect`, as the argument of a :func:`start_server`
    handler, or by wrapping a connected :class:`tcpchat.Connection` (from
    then on, use it only through this object; call from a coroutine, the
    connection belongs to the running loop).

    Messages are ``bytes`` (``str`` is accepted on send and encoded as
    UTF-8). :meth:`recv` returns ``None`` once the peer has closed and every
    message it sent has been received; ``async for msg in conn`` yields the
    messages until then.

    Tasks: a task may receive while another sends, and neither waits for the
    other. Several receiving tasks are served one at a time, in the order they
    called, each getting different messages; several sending tasks likewise
    (each message goes out whole, in the order the sends were called).

    Cancellation: a cancelled :meth:`recv` loses no message (a message leaves
    the library only into the task that returns it). A cancelled :meth:`send`
    either sent nothing, or its whole message was already accepted and still
    goes out (in the background, as the socket takes it).

    Timeouts: ``read_timeout`` bounds each :meth:`recv` and ``write_timeout``
    each :meth:`send` (:class:`tcpchat.TimeoutError`, as in the blocking API;
    after a send timed out, an accepted message stays queued and is still
    sent). Prefer them to ``asyncio.wait_for`` around :meth:`recv`: before
    Python 3.12, ``wait_for`` could drop a result that arrived just as it
    timed out.

    Closing: :meth:`close` (or leaving ``async with``) is graceful and never
    blocks the loop; tasks still waiting on the connection get
    :class:`tcpchat.ClosedError`. :meth:`abort` closes at once.
    """

    def __init__(self, conn: _SyncConnection) -> None:
        """Wrap a connected :class:`tcpchat.Connection` for the running loop."""
        if not isinstance(conn, _SyncConnection):
            raise TypeError(f"expected a tcpchat.Connection, not {type(conn).__name__}")
        self._loop = asyncio.get_running_loop()
        self._sync = conn
        self._freed = False  # the underlying connection is closed and freed
        self._fd = conn.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self._reading = False  # add_reader is in effect
        self._rx: List["asyncio.Future[None]"] = []  # tasks waiting to receive
        self._tx: List["asyncio.Future[None]"] = []  # tasks waiting for output to move
        self._out_queued = False  # the library may hold output not yet sent
        self._flush_error: Optional[Error] = None
        self._stall: Optional[asyncio.TimerHandle] = None
        self._stall_delay = _STALL_MIN
        self._recv_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._closed: "asyncio.Future[None]" = self._loop.create_future()

    # ----- what it is -----------------------------------------------------

    @property
    def sync(self) -> _SyncConnection:
        """The underlying :class:`tcpchat.Connection` (for its settings and
        addresses; do not send or receive through it while this object is
        in use)."""
        return self._sync

    @property
    def config(self) -> Config:
        """The settings the connection was made with."""
        return self._sync.config

    @property
    def framing(self) -> Framing:
        """The wire format."""
        return self._sync.config.framing

    @property
    def peer_address(self) -> Address:
        """The peer's ``(host, port)``."""
        return self._sync.peer_address

    @property
    def local_address(self) -> Address:
        """This end's ``(host, port)``."""
        return self._sync.local_address

    @property
    def read_timeout(self) -> Optional[float]:
        """Seconds a :meth:`recv` waits for a message (None = for ever);
        settable. A timeout leaves the connection usable."""
        return self._sync.read_timeout

    @read_timeout.setter
    def read_timeout(self, seconds: Optional[float]) -> None:
        self._sync.read_timeout = seconds

    @property
    def write_timeout(self) -> Optional[float]:
        """Seconds a :meth:`send` waits for the peer to make room (None =
        for ever); settable."""
        return self._sync.write_timeout

    @write_timeout.setter
    def write_timeout(self, seconds: Optional[float]) -> None:
        self._sync.write_timeout = seconds

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` was called."""
        return self._closing

    def __repr__(self) -> str:
        if self._closing:
            return "<tcpchat.aio.Connection closed>"
        try:
            return (
                f"<tcpchat.aio.Connection {self.local_address} -> {self.peer_address} "
                f"{self.framing.name}>"
            )
        except Exception:
            return "<tcpchat.aio.Connection>"

    # ----- readiness ------------------------------------------------------

    def _on_ready(self) -> None:
        """The descriptor is readable (or the stall timer fired): move queued
        output, wake every waiting task to retry, then decide how to wait
        next. Never takes a message: only tasks do that."""
        if self._freed:
            return
        receiving = bool(self._rx)
        if self._out_queued:
            self._flush_now()
        woke = 0
        for waiters in (self._rx, self._tx):
            woken, waiters[:] = waiters[:], []
            for fut in woken:
                if not fut.done():
                    fut.set_result(None)
                    woke += 1
        if self._out_queued and not receiving and self._stall is None and self._input_ready():
            # Readable only because input waits for nobody: the descriptor
            # cannot tell when the socket takes more, so flush on a timer.
            self._stall = self._loop.call_later(self._stall_delay, self._stall_over)
            self._stall_delay = min(self._stall_delay * 2, _STALL_MAX)
        elif self._stall is None:
            self._stall_delay = _STALL_MIN
            if woke:
                # Keep watching: the woken tasks most likely wait again at
                # once. If they do not, the next readiness stops the watch.
                return
        self._update()

    def _stall_over(self) -> None:
        self._stall = None
        self._on_ready()

    def _input_ready(self) -> bool:
        try:
            return bool(self._poller.poll(0))
        except OSError:
            return False

    def _flush_now(self) -> None:
        """Send queued output as far as the socket takes it now."""
        try:
            done = self._sync.try_flush()
        except Error as e:
            self._flush_error = e
            done = True
        if done:
            self._out_queued = False

    def _update(self) -> None:
        """Watch the descriptor while some task waits, or output is queued
        (unless the stall timer serves the output)."""
        if self._freed:
            return
        want = bool(self._rx) or (
            (bool(self._tx) or self._out_queued) and self._stall is None
        )
        if want and not self._reading:
            self._loop.add_reader(self._fd, self._on_ready)
            self._reading = True
        elif not want and self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        return None if timeout is None else self._loop.time() + timeout

    def _expire(self, fut: "asyncio.Future[None]", timeout: float, what: str) -> None:
        if not fut.done():
            try:
                peer = str(self.peer_address)
            except Error:
                peer = "peer"
            fut.set_exception(TimeoutError(f"timed out after {timeout:g} s while {what} ({peer})"))

    async def _wait(
        self,
        waiters: List["asyncio.Future[None]"],
        deadline: Optional[float],
        timeout: Optional[float],
        what: str,
    ) -> None:
        """Wait until the descriptor is readable, or :class:`TimeoutError`
        at ``deadline``, or :class:`ClosedError` when the connection closes."""
        if self._freed:
            raise LocallyClosedError("the connection was closed locally")
        fut: "asyncio.Future[None]" = self._loop.create_future()
        waiters.append(fut)
        timer = None
        if deadline is not None:
            timer = self._loop.call_at(deadline, self._expire, fut, timeout or 0.0, what)
        self._update()
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if fut in waiters:
                waiters.remove(fut)

    def _check_open(self) -> None:
        if self._closing:
            raise LocallyClosedError("the connection was closed locally")

    # ----- sending --------------------------------------------------------

    def _check_message(self, index: Optional[int], data: bytes) -> None:
        """Refuse what the library would refuse, before anything is sent."""
        cfg = self._sync.config
        if cfg.framing is Framing.RAW:
            return
        where = "" if index is None else f"message {index}: "
        if len(data) > cfg.max_message_size:
            raise MessageTooLargeError(
                f"{where}message of {len(data)} bytes exceeds the maximum message size of "
                f"{cfg.max_message_size} bytes (refused on send)"
            )
        if cfg.framing is Framing.LINE:
            at = data.find(b"\n")
            if at >= 0:
                raise InvalidArgumentError(
                    f"{where}a message in line framing cannot contain a newline "
                    f"(found one at byte {at})"
                )

    async def send(self, msg: Message) -> None:
        """Send one message; return once the kernel has taken all of it.

        Waits (without blocking the loop) while the peer does not read and
        the socket's buffer is full, up to ``write_timeout``.

        Raises :class:`tcpchat.InvalidArgumentError` (a ``\\n`` in ``LINE``
        framing) or :class:`tcpchat.MessageTooLargeError` with nothing sent;
        :class:`tcpchat.TimeoutError` (the accepted message stays queued and
        still goes out), :class:`tcpchat.ClosedError` (closed locally, or the
        write half shut down), :class:`tcpchat.ResetError`.
        """
        data = as_bytes(msg)
        self._check_message(None, data)
        await self._send_all([data])

    async def send_many(self, msgs: Iterable[Message]) -> None:
        """Send every message of ``msgs``, in order; return once the kernel
        has taken all of them. All or nothing on refusal: if one message is
        refused (too large, a newline in ``LINE`` framing) none is sent and
        the error names its index. If cancelled, the messages accepted so far
        (a prefix, each whole) still go out."""
        parts = [as_bytes(m) for m in msgs]
        for i, data in enumerate(parts):
            self._check_message(i, data)
        if self._sync.config.framing is Framing.RAW and len(parts) > 1:
            parts = [b"".join(parts)]  # raw bytes: one write is the same
        await self._send_all(parts)

    async def _send_all(self, parts: List[bytes]) -> None:
        async with self._send_lock:
            self._check_open()
            timeout = self._sync.write_timeout
            deadline = self._deadline(timeout)
            self._flush_error = None
            for data in parts:
                while True:
                    self._check_open()
                    try:
                        self._sync.try_send(data)
                        break
                    except WouldBlockError:
                        # Earlier output is stuck: nothing was accepted.
                        self._out_queued = True
                    await self._wait(self._tx, deadline, timeout, "sending")
                # Accepted whole; the rest of it may wait in the library.
                self._out_queued = True
            await self._drain_output(deadline, timeout, "sending")

    async def _drain_output(
        self, deadline: Optional[float], timeout: Optional[float], what: str, closing: bool = False
    ) -> None:
        """Wait until the library has no output queued (``closing``: for
        :meth:`close` itself, which may wait while the connection closes)."""
        while True:
            if self._out_queued:
                self._flush_now()
            if self._flush_error is not None:
                error, self._flush_error = self._flush_error, None
                raise error
            if not self._out_queued:
                return
            if not closing:
                self._check_open()
            await self._wait(self._tx, deadline, timeout, what)

    async def shutdown_write(self) -> None:
        """Send what is queued, then shut down the write half: the peer
        receives end of stream after the last message; this side can still
        receive. Later sends raise :class:`tcpchat.ClosedError`."""
        async with self._send_lock:
            self._check_open()
            timeout = self._sync.write_timeout
            self._out_queued = True  # whatever the library holds
            await self._drain_output(self._deadline(timeout), timeout, "shutting down")
            self._check_open()
            self._sync.shutdown_write()  # nothing queued: returns at once

    # ----- receiving ------------------------------------------------------

    async def recv(self) -> Optional[bytes]:
        """Receive the next message; ``None`` once the peer has closed and
        every message it sent has been received (and again after that).

        Waits up to ``read_timeout``. Raises :class:`tcpchat.TimeoutError`
        (the connection stays usable), :class:`tcpchat.MessageTooLargeError`
        or :class:`tcpchat.ProtocolError` (the peer broke the format; the
        connection is closed), :class:`tcpchat.ResetError`,
        :class:`tcpchat.ClosedError` (closed locally, also while waiting).
        """
        async with self._recv_lock:
            timeout = self._sync.read_timeout
            deadline: Optional[float] = None
            while True:
                self._check_open()
                try:
                    return self._sync.try_recv()
                except WouldBlockError:
                    pass
                if deadline is None:
                    deadline = self._deadline(timeout)
                await self._wait(self._rx, deadline, timeout, "receiving")

    async def recv_text(self, encoding: str = "utf-8", errors: str = "strict") -> Optional[str]:
        """:meth:`recv`, decoded; ``None`` at end of stream."""
        msg = await self.recv()
        return None if msg is None else msg.decode(encoding, errors)

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``async for msg in conn``: each message until the peer closes."""
        return self

    async def __anext__(self) -> bytes:
        """The next message (:meth:`recv`); StopAsyncIteration at end of stream."""
        msg = await self.recv()
        if msg is None:
            raise StopAsyncIteration
        return msg

    # ----- closing --------------------------------------------------------

    def _fail_waiters(self) -> None:
        for waiters in (self._rx, self._tx):
            failed, waiters[:] = waiters[:], []
            for fut in failed:
                if not fut.done():
                    fut.set_exception(LocallyClosedError("the connection was closed locally"))

    def _free(self, abort: bool) -> None:
        """Stop watching the descriptor, then close and free the connection
        (at once: the graceful part was done without blocking, or is
        skipped with ``abort``)."""
        if self._freed:
            return
        self._freed = True
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        if abort:
            _abort_sync(self._sync)
        else:
            try:
                self._sync.close()
            except Error:
                pass
        if not self._closed.done():
            self._closed.set_result(None)

    def abort(self) -> None:
        """Close at once, without sending what is still queued or waiting
        for the peer. Tasks waiting on the connection get
        :class:`tcpchat.ClosedError`. Idempotent."""
        self._closing = True
        self._fail_waiters()
        self._free(abort=True)

    async def close(self) -> None:
        """Close gracefully and free the connection, without blocking the
        loop: send what is queued (up to ``write_timeout``), shut down the
        write half, read and drop what the peer still sends until it closes
        (up to ``close_timeout``), then free. Tasks still waiting to send or
        receive get :class:`tcpchat.ClosedError` at once.

        Idempotent; a second call waits for the first to finish. If the
        awaiting task is cancelled, the connection is closed at once. Raises
        the error of the final send, if it failed (the connection is closed
        anyway).
        """
        if self._closing:
            await asyncio.shield(self._closed)
            return
        self._closing = True
        self._fail_waiters()
        try:
            error, clean = await self._graceful()
        except BaseException:  # cancelled: do not wait for the peer
            self._free(abort=True)
            raise
        self._free(abort=not clean)
        if error is not None:
            raise error

    async def _graceful(self) -> Tuple[Optional[Error], bool]:
        """Flush, shut down, drain. Returns the error to raise and whether
        the peer closed (so that freeing will not wait)."""
        timeout = self._sync.write_timeout
        self._out_queued = True  # whatever the library holds
        try:
            await self._drain_output(self._deadline(timeout), timeout, "closing", closing=True)
        except ClosedError:
            return None, False  # aborted meanwhile, or broken before: nothing to send
        except Error as e:
            return e, False
        if self._freed:
            return None, False
        try:
            self._sync.shutdown_write()  # nothing queued: returns at once
        except Error:
            return None, False
        linger = self._sync.config.close_timeout
        deadline = self._deadline(linger)
        while not self._freed:
            try:
                if self._sync.try_recv() is None:
                    return None, True  # the peer closed: freeing is quick
                continue  # a message nobody will read: drop it
            except WouldBlockError:
                pass
            except Error:
                return None, True  # broken: nothing to wait for
            if linger <= 0:
                break
            try:
                await self._wait(self._rx, deadline, linger, "closing")
            except (TimeoutError, ClosedError):
                break
        return None, False

    async def __aenter__(self) -> "Connection":
        """``async with conn:`` closes it on exit (see :meth:`__aexit__`)."""
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        """Close gracefully; when the block is left by a cancellation,
        KeyboardInterrupt or SystemExit, close at once instead."""
        if exc is not None and not isinstance(exc, Exception):
            self.abort()
        else:
            await self.close()

    def __del__(self) -> None:
        if not getattr(self, "_freed", True):
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            try:
                self._sync.cancel()  # its own finalizer then frees it without waiting
            except Exception:
                pass


class Server:
    """A listening server whose clients are served by tasks; from
    :func:`start_server`.

    It accepts while the loop runs; each client's :class:`Connection` is
    passed to the handler in a new task, and closed (gracefully) when the
    handler returns or raises. An exception from a handler is logged
    (logger ``tcpchat.aio``) and ends only that client.

    Like :class:`asyncio.Server`: :meth:`close` stops listening and leaves
    the clients' tasks running; :meth:`wait_closed` waits until the server is
    closed and every handler has returned; :meth:`close_clients` closes every
    client connection (their tasks then get :class:`tcpchat.ClosedError` or
    end of stream and finish). ``async with server:`` closes it on exit and
    waits for :meth:`wait_closed`, closing the clients first when the block
    is left by an exception (a cancellation included).
    """

    def __init__(self, sync: _SyncServer, client_connected: ClientConnected) -> None:
        """Serve the clients of a listening :class:`tcpchat.Server` (it
        belongs to this object from now on); :func:`start_server` is the
        usual way. Call from a coroutine: it serves on the running loop."""
        loop = asyncio.get_running_loop()
        self._sync = sync
        self._handler = client_connected
        self._loop = loop
        self._fd = sync.fileno()
        self._serving = True
        self._listener_closed: "asyncio.Future[None]" = loop.create_future()
        self._tasks: Set["asyncio.Task[None]"] = set()
        self._clients: Set[Connection] = set()
        self._closers: Set["asyncio.Task[None]"] = set()
        self._retry: Optional[asyncio.TimerHandle] = None
        loop.add_reader(self._fd, self._on_accept)

    @property
    def sync(self) -> _SyncServer:
        """The underlying :class:`tcpchat.Server` (do not accept through it)."""
        return self._sync

    @property
    def address(self) -> Address:
        """The ``(host, port)`` listened on, with the real port when bound
        to 0."""
        return self._sync.address

    @property
    def port(self) -> int:
        """The port listened on (the real one when bound to 0)."""
        return self._sync.port

    @property
    def config(self) -> Config:
        """The settings of the server and of the connections it accepts."""
        return self._sync.config

    @property
    def clients(self) -> int:
        """How many client handlers are running."""
        return len(self._tasks)

    def is_serving(self) -> bool:
        """Whether the server still accepts clients (until :meth:`close`)."""
        return self._serving

    def __repr__(self) -> str:
        state = f"listening on {self.address}" if self._serving else "closed"
        return f"<tcpchat.aio.Server {state}, {len(self._tasks)} clients>"

    def _on_accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            if not self._serving:
                return
            try:
                sync = self._sync.try_accept()
            except WouldBlockError:
                return
            except Error as e:
                # Out of descriptors, or the like: pause instead of spinning.
                logger.error("accepting a client on %s failed: %s", self.address, e)
                self._loop.remove_reader(self._fd)
                self._retry = self._loop.call_later(_ACCEPT_RETRY, self._resume)
                return
            try:
                conn = Connection(sync)
            except Error as e:
                logger.error("setting up a client of %s failed: %s", self.address, e)
                _abort_sync(sync)
                continue
            task = self._loop.create_task(self._serve_client(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resume(self) -> None:
        self._retry = None
        if self._serving:
            self._loop.add_reader(self._fd, self._on_accept)

    async def _serve_client(self, conn: Connection) -> None:
        self._clients.add(conn)
        try:
            result = self._handler(conn)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception:
            logger.exception("the handler of client %s failed", _peer(conn))
        finally:
            self._clients.discard(conn)
        try:
            await conn.close()
        except Error as e:
            logger.debug("closing client %s: %s", _peer(conn), e)

    def close(self) -> None:
        """Stop listening (at once; idempotent). The clients' tasks go on;
        see :meth:`close_clients` and :meth:`wait_closed`."""
        if not self._serving:
            return
        self._serving = False
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        else:
            self._loop.remove_reader(self._fd)
        self._sync.close()
        if not self._listener_closed.done():
            self._listener_closed.set_result(None)

    def close_clients(self) -> None:
        """Close every client connection now, gracefully (in the background;
        :meth:`wait_closed` waits for it): their tasks waiting to send or
        receive get :class:`tcpchat.ClosedError`."""
        for conn in list(self._clients):
            closer = self._loop.create_task(_close_quietly(conn))
            self._closers.add(closer)
            closer.add_done_callback(self._closers.discard)

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has been called and every client handler
        (and every close started by :meth:`close_clients`) has finished.
        Cancelling the wait cancels none of them."""
        await asyncio.shield(self._listener_closed)
        while self._tasks or self._closers:
            await asyncio.wait(self._tasks | self._closers)

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called elsewhere (then return once
        :meth:`wait_closed` does). Cancelling it closes the server (the
        listener only; the clients' tasks go on) and re-raises."""
        try:
            await asyncio.shield(self._listener_closed)
        except asyncio.CancelledError:
            self.close()
            raise
        await self.wait_closed()

    async def __aenter__(self) -> "Server":
        """``async with server:`` closes it on exit (see :meth:`__aexit__`)."""
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        """:meth:`close`, then :meth:`wait_closed`; when the block is left
        by an exception (a cancellation included), :meth:`close_clients`
        first, so that the handlers end."""
        self.close()
        if exc is not None:
            self.close_clients()
        await self.wait_closed()


def _peer(conn: Connection) -> str:
    try:
        return str(conn.peer_address)
    except Error:
        return "?"


async def _close_quietly(conn: Connection) -> None:
    try:
        await conn.close()
    except Error as e:
        logger.debug("closing client %s: %s", _peer(conn), e)


async def start_server(
    client_connected: ClientConnected,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    config: Optional[Config] = None,
    **settings: "Unpack[ConfigOptions]",
) -> Server:
    """Listen on ``host``:``port`` (port 0: any free port; see
    :attr:`Server.port`) and serve each client with
    ``await client_connected(conn)`` in its own task.

    ``client_connected`` is a coroutine function taking the client's
    :class:`Connection`; the connection is closed gracefully when it returns.
    Settings come from ``config`` and the keyword arguments, as for
    :class:`tcpchat.Server`; accepted connections use them. Raises
    :class:`tcpchat.AddressInUseError`, :class:`tcpchat.ResolveError`,
    :class:`tcpchat.InvalidArgumentError`. Binding runs in the loop's default
    executor.
    """
    if not callable(client_connected):
        raise TypeError("client_connected must be a coroutine function")
    cfg = merge(config, settings)
    loop = asyncio.get_running_loop()
    sync = await _in_executor(
        loop, functools.partial(_SyncServer, host, port, config=cfg), _SyncServer.close
    )
    try:
        return Server(sync, client_connected)
    except BaseException:
        sync.close()
        raise
