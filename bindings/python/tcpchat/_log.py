"""The library's log records, handed to a Python callable."""

from __future__ import annotations

import atexit
import enum
import sys
import threading
import traceback
from typing import Any, Callable, List, Optional, Union

from . import _ffi
from ._errors import check


class LogLevel(enum.IntEnum):
    """How important a log record is. A handler set at one level receives
    records of that level and every more important (lower) one."""

    OFF = _ffi.TCPCHAT_LOG_OFF
    ERROR = _ffi.TCPCHAT_LOG_ERROR
    WARN = _ffi.TCPCHAT_LOG_WARN
    INFO = _ffi.TCPCHAT_LOG_INFO
    DEBUG = _ffi.TCPCHAT_LOG_DEBUG


LogHandler = Callable[[LogLevel, str], object]

_lock = threading.Lock()
# The CFUNCTYPE object the library holds now. Replaced ones are kept too: a
# library thread may still be inside one when it is replaced, so they are
# never freed (one small object per set_log_handler call).
_current: Optional[Any] = None
_retired: List[Any] = []
_atexit_registered = False


def _make_callback(handler: LogHandler) -> Any:
    def log_callback(_user_data: Optional[int], level: int, message: Optional[bytes]) -> None:
        # Runs on whichever thread logs, library threads included (ctypes
        # takes the GIL). Nothing may propagate into C.
        try:
            try:
                lvl = LogLevel(level)
            except ValueError:
                lvl = LogLevel.DEBUG
            handler(lvl, (message or b"").decode("utf-8", "replace"))
        except BaseException:  # noqa: B036 - a log handler cannot fail the library
            try:
                sys.stderr.write("tcpchat: exception in the log handler:\n")
                traceback.print_exc()
            except BaseException:  # noqa: B036
                pass

    return _ffi.tcpchat_log_callback(log_callback)


def set_log_handler(
    handler: Optional[LogHandler], level: Union[LogLevel, int] = LogLevel.INFO
) -> None:
    """Send the library's log records at ``level`` and above to
    ``handler(level, message)``; ``None`` (or ``LogLevel.OFF``) turns
    logging off. Process-wide; replaces any previous handler. Nothing is
    logged until this is called.

    The handler may run on library threads (the echo service's), possibly
    several at once, so it must be thread-safe; an exception it raises is
    printed to stderr and otherwise ignored. Bridge to :mod:`logging` with
    e.g. ``set_log_handler(lambda lvl, msg: log.log(LEVELS[lvl], msg))``.
    """
    global _current, _atexit_registered
    lvl = LogLevel(level)
    with _lock:
        if handler is None or lvl == LogLevel.OFF:
            check(_ffi.tcpchat_set_log_callback(_ffi.TCPCHAT_LOG_OFF, _ffi.tcpchat_log_callback(), None))
            new = None
        else:
            if not callable(handler):
                raise TypeError("the log handler must be callable or None")
            new = _make_callback(handler)
            check(_ffi.tcpchat_set_log_callback(int(lvl), new, None))
            if not _atexit_registered:
                # Library threads must not call into an interpreter that is
                # shutting down: turn logging off at exit.
                atexit.register(_off_at_exit)
                _atexit_registered = True
        if _current is not None:
            _retired.append(_current)
        _current = new


def _off_at_exit() -> None:
    _ffi.tcpchat_set_log_callback(_ffi.TCPCHAT_LOG_OFF, _ffi.tcpchat_log_callback(), None)
