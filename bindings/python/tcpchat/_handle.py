"""Ownership of library handles, and calls that survive signals."""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Generic, Optional, TypeVar

from . import _ffi
from ._errors import LocallyClosedError

T = TypeVar("T")


class Handle(Generic[T]):
    """Owns one library handle (a ctypes pointer) for a Python object.

    * The handle is freed exactly once: by :meth:`close` or, if that never
      happens, when the owner is garbage-collected (or at interpreter exit).
      The ``weakref.finalize`` holds this Handle, i.e. the pointer, the free
      function and a use count, and never the owner.
    * It is never freed while a call is using it: ``with handle as ptr:``
      counts the call in, and a close that comes meanwhile (from another
      thread, or the exit-time finalizer while a daemon thread is blocked in
      a call) leaves the free to the last call out. So the pointer is never
      pulled from under a call.
    """

    __slots__ = ("_ptr", "_free_fn", "_lock", "_users", "_closing", "_finalizer", "_what")

    def __init__(self, owner: object, ptr: T, free: Callable[[T], None], what: str) -> None:
        self._ptr: Optional[T] = ptr
        self._free_fn = free
        self._lock = threading.Lock()
        self._users = 0
        self._closing = False
        self._what = what
        self._finalizer = weakref.finalize(owner, self.close)

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def in_use(self) -> bool:
        """Whether a call is using the handle right now (on any thread)."""
        return self._users > 0

    def __enter__(self) -> T:
        with self._lock:
            if self._closing or self._ptr is None:
                raise LocallyClosedError(f"the {self._what} is closed")
            self._users += 1
            return self._ptr

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            free_now = self._closing and self._users == 0
        if free_now:
            self._free()

    def close(self) -> bool:
        """Mark closed; free now if no call is in progress, else when the
        last one returns. True the first time, False afterwards."""
        with self._lock:
            if self._closing:
                return False
            self._closing = True
            free_now = self._users == 0
        if free_now:
            self._free()
        return True

    def _free(self) -> None:
        self._finalizer.detach()
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._free_fn(ptr)


def signal_checkpoint() -> None:
    """Let Python run pending signal handlers.

    Called after the library returned ``TCPCHAT_STATUS_INTERRUPTED``: the
    interpreter runs a pending handler at the next bytecode boundary, so a
    SIGINT raises KeyboardInterrupt here (in the main thread). When no
    handler raises, the caller resumes the call (PEP 475).
    """
    # Entering this function and returning is such a boundary; nothing else
    # is needed. (Kept as a function so tests and readers see where it
    # happens.)
    return None


def call(fn: Callable[..., Any], *args: Any) -> int:
    """Call a status-returning function, resuming it after signal handlers
    that did not raise (for single operations that lose nothing when
    interrupted: receive, accept, flush)."""
    while True:
        status = int(fn(*args))
        if status != _ffi.TCPCHAT_STATUS_INTERRUPTED:
            return status
        signal_checkpoint()
