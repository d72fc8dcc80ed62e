"""Servers: :class:`Server`, the chat loop and the echo service."""

from __future__ import annotations

import ctypes
import dataclasses
import time
from typing import TYPE_CHECKING, Optional

from . import _ffi
from ._callbacks import Address, ChatCallbacks, NextMessage, OnConnect, OnEnd, OnMessage
from ._config import Config, c_config, merge, timeout_ms
from ._conn import Connection, check_port, encode_host
from ._errors import ClosedError, InterruptedError, check, from_status
from ._handle import Handle, call, signal_checkpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._config import ConfigOptions

    ServerPtr = ctypes._Pointer[_ffi.tcpchat_server]


@dataclasses.dataclass(frozen=True)
class EchoStats:
    """What :meth:`Server.serve_echo` did."""

    #: Clients served (accepted and not refused).
    clients: int
    #: Clients refused because the server was full.
    refused: int
    #: Messages echoed (in ``RAW`` framing: reads echoed).
    messages: int
    #: Clients whose connection ended with an error.
    errors: int


class Server:
    """A listening TCP server.

    ``Server()`` listens on 127.0.0.1 on a free port; :attr:`address` and
    :attr:`port` give the real one. Settings come from ``config`` and the
    keyword arguments, as for :func:`connect`; accepted connections use them.

    Use :meth:`accept` for connections one by one, or a service:
    :meth:`serve_chat` (the tutorial's turn-based chat) or :meth:`serve_echo`.

    Threads: a server may be used from several threads at once;
    :meth:`shutdown` from another thread (or a signal handler) stops a
    blocked :meth:`accept` or service. Blocking calls release the GIL, and
    Ctrl-C stops them in the main thread with KeyboardInterrupt.

    A context manager; closed on ``with`` exit, by :meth:`close`, or when
    garbage-collected.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: Optional[Config] = None,
        **options: "Unpack[ConfigOptions]",
    ) -> None:
        cfg = merge(config, options)
        c_host = encode_host(host)
        c_port = check_port(port, 0)
        out = ctypes.POINTER(_ffi.tcpchat_server)()
        with c_config(cfg) as c_cfg:
            check(_ffi.tcpchat_server_bind(c_host, c_port, c_cfg, ctypes.byref(out)))
        self._handle: Handle[ServerPtr] = Handle(self, out, _ffi.tcpchat_server_free, "server")
        self._config = cfg
        self._stopping = False
        buf = ctypes.create_string_buffer(_ffi.TCPCHAT_ADDR_MAX)
        with self._handle as ptr:
            check(_ffi.tcpchat_server_local_addr(ptr, buf, len(buf), None))
        self._address = Address.parse(buf.value.decode("utf-8", "replace"))

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
        return self._config

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def accept(self, timeout: Optional[float] = None) -> Connection:
        """Wait for the next client (at most ``timeout`` seconds; None = for
        ever) and return its :class:`Connection`.

        Raises :class:`TimeoutError` when no client came in time,
        :class:`CancelledError` once the server is shut down,
        :class:`NetworkError` on a system error (e.g. out of descriptors).
        """
        out = ctypes.POINTER(_ffi.tcpchat_conn)()
        deadline = None if timeout is None else time.monotonic() + timeout
        timeout_ms("timeout", timeout)  # validate
        with self._handle as ptr:
            while True:
                if deadline is None:
                    status = _ffi.tcpchat_server_accept(ptr, ctypes.byref(out))
                else:
                    left = timeout_ms("timeout", max(deadline - time.monotonic(), 0.001))
                    status = _ffi.tcpchat_server_accept_timeout(ptr, left, ctypes.byref(out))
                if status != _ffi.TCPCHAT_STATUS_INTERRUPTED:
                    break
                signal_checkpoint()  # KeyboardInterrupt, or resume (PEP 475)
            check(status)
        return Connection._wrap(out, self._config)

    def fileno(self) -> int:
        """The listening descriptor, for select/selectors/``loop.add_reader``:
        readable while a client waits; then call :meth:`try_accept`. It
        belongs to the server (never close it)."""
        fd = ctypes.c_int32(-1)
        with self._handle as ptr:
            check(_ffi.tcpchat_server_fd(ptr, ctypes.byref(fd)))
        return fd.value

    def try_accept(self) -> Connection:
        """Accept a client that is already waiting, or raise
        :class:`WouldBlockError` (a :class:`BlockingIOError`) when none is
        (also after closing a client refused by the access lists)."""
        out = ctypes.POINTER(_ffi.tcpchat_conn)()
        with self._handle as ptr:
            check(_ffi.tcpchat_server_try_accept(ptr, ctypes.byref(out)))
        return Connection._wrap(out, self._config)

    def shutdown(self) -> None:
        """Stop the server, from any thread: a blocked or later
        :meth:`accept` raises :class:`CancelledError`, :meth:`serve_chat` and
        :meth:`serve_echo` return, and the blocking calls of the connections
        this server accepted are cancelled. Returns at once. Idempotent; a
        no-op on a closed server."""
        self._stopping = True
        try:
            with self._handle as ptr:
                check(_ffi.tcpchat_server_shutdown(ptr))
        except ClosedError:
            if not self._handle.closed:
                raise

    def close(self) -> None:
        """Stop listening and free the server. Idempotent. Connections it
        accepted stay open, unless a call was still running in another
        thread: then the server is shut down (see :meth:`shutdown`) to stop
        that call, and freed when it returns."""
        if self._handle.in_use:
            self.shutdown()
        self._handle.close()

    def serve_chat(
        self,
        next_message: NextMessage,
        on_message: OnMessage,
        once: bool = False,
        on_connect: Optional[OnConnect] = None,
        on_end: Optional[OnEnd] = None,
    ) -> None:
        """The tutorial's server loop: accept a client, run a chat session
        with it (this side sends first), close it gracefully, and serve the
        next client, until :meth:`shutdown` (or after one session with
        ``once=True``).

        ``next_message()`` returns the next message (bytes or str) or ``None``
        to end the session; ``on_message(msg)`` gets each message received;
        ``on_connect(address)`` is called when a client connects and
        ``on_end(address, outcome)`` when its session is over, with a
        :class:`SessionEnd` or the :class:`Error` it failed with (a failing
        client does not stop the loop). All run on this thread. An exception
        raised by one of them ends the loop and is re-raised here with its
        traceback.

        A signal handler that returns normally (not Ctrl-C) restarts the loop
        (the interrupted client, if any, is closed), except with
        ``once=True``, where :class:`InterruptedError` is raised.
        """
        cbs = ChatCallbacks(next_message, on_message, on_connect, on_end)
        with self._handle as ptr:
            try:
                # One library call per client (its `once` mode), looping here,
                # so that a signal handler that returns normally (PEP 475)
                # resumes the loop at the next client instead of ending it.
                while True:
                    status = _ffi.tcpchat_server_serve_chat(ptr, ctypes.byref(cbs.struct), True)
                    message = _ffi.last_error_message() if status else ""
                    cbs.raise_pending(status)
                    if status == _ffi.TCPCHAT_STATUS_INTERRUPTED:
                        signal_checkpoint()  # KeyboardInterrupt, or go on (PEP 475)
                        if once:
                            raise InterruptedError(message)
                        continue
                    if status != _ffi.TCPCHAT_STATUS_OK:
                        raise from_status(status, message)
                    if once or self._stopping:
                        return
            finally:
                cbs.release()

    def serve_echo(self) -> EchoStats:
        """Run the echo service until :meth:`shutdown`: every message a
        client sends comes back to it, for up to ``max_clients`` clients at
        once, each served on a library thread. Returns what it did.

        Ctrl-C raises KeyboardInterrupt (the clients are closed first); a
        signal handler that returns normally restarts the service (and the
        statistics).
        """
        stats = _ffi.tcpchat_echo_stats()
        with self._handle as ptr:
            check(call(_ffi.tcpchat_server_serve_echo, ptr, ctypes.byref(stats)))
        return EchoStats(
            clients=stats.clients,
            refused=stats.refused,
            messages=stats.messages,
            errors=stats.errors,
        )

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._handle.closed else f"listening on {self._address}"
        return f"<tcpchat.Server {state}>"
