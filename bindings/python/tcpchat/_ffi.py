"""The raw layer: find and load libtcpchat, and declare every C function.

This module mirrors ``include/tcpchat.h`` one to one. Each binding is declared
exactly once, with its C prototype in a comment above it, and its
``argtypes``/``restype`` set right after lookup. Nothing here is public: the
classes in the ``tcpchat`` package are the API. ``tests/python/
test_binding_matches_header.py`` checks this module against the header, so
the two cannot drift apart.

ctypes.CDLL releases the GIL around every call, so a blocking call (accept,
recv, a serve loop) lets other Python threads run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, List, Optional, Sequence, Tuple

# ----------------------------------------------------------------------------
# Loading the library
# ----------------------------------------------------------------------------

ENV_VAR = "TCPCHAT_LIB"
BUILD_COMMAND = "cargo build --release"


def _file_name() -> str:
    if sys.platform == "darwin":
        return "libtcpchat.dylib"
    if sys.platform == "win32":
        return "tcpchat.dll"
    return "libtcpchat.so"


def _checkout_root(package_dir: str) -> Optional[str]:
    """The tcpchat repository root when this package is its
    ``bindings/python/tcpchat`` (an editable install, or run from a clone);
    None for an installed copy (site-packages), where the repository's
    build directories mean nothing."""
    root = os.path.normpath(os.path.join(package_dir, "..", "..", ".."))
    layout = os.path.join(root, "bindings", "python", "tcpchat")
    if not os.path.isfile(os.path.join(root, "Cargo.toml")):
        return None
    if os.path.normcase(os.path.realpath(layout)) != os.path.normcase(os.path.realpath(package_dir)):
        return None
    return root


def _candidates() -> List[Tuple[str, str]]:
    """(where, path) pairs in the order they are tried, after TCPCHAT_LIB:
    the copy inside the package (what a wheel ships), then, in a
    repository checkout only, its ``target/release`` and ``target/debug``."""
    here = os.path.dirname(os.path.abspath(__file__))
    name = _file_name()
    found = [("shipped in the package", os.path.join(here, name))]
    root = _checkout_root(here)
    if root is not None:
        target = os.path.join(root, "target")
        found.append(("the repository's release build", os.path.join(target, "release", name)))
        found.append(("the repository's debug build", os.path.join(target, "debug", name)))
    return found


def _how_to_fix() -> str:
    """What to do when nothing loads, for this kind of install."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = _checkout_root(here)
    if root is not None:
        return (
            f"Build it with `{BUILD_COMMAND}` in the tcpchat repository root ({root}; it lands "
            f"in target/release/), or set {ENV_VAR} to its path."
        )
    return (
        "This tcpchat package was installed without its library (a wheel built by "
        "`pip wheel ./bindings/python` or `pip install ./bindings/python` from a tcpchat "
        "clone with cargo on PATH has it inside). Reinstall it that way, install "
        f"libtcpchat where the system loader finds it, or set {ENV_VAR} to its path."
    )


def _load() -> Tuple[ctypes.CDLL, str]:
    """Load libtcpchat; return it with the path it came from.

    Order: the ``TCPCHAT_LIB`` environment variable (authoritative when set),
    the copy inside the package (a wheel's), the repository's
    ``target/release`` then ``target/debug`` (only when the package is the
    one in a repository checkout), then ``ctypes.util.find_library("tcpchat")``.
    The ImportError lists every place tried.
    """
    tried: List[str] = []
    override = os.environ.get(ENV_VAR)
    if override:
        try:
            return ctypes.CDLL(override), override
        except OSError as e:
            raise ImportError(
                f"tcpchat: cannot load the library named by {ENV_VAR}={override!r}: {e}\n"
                f"Unset {ENV_VAR} to search the default places, or point it at a "
                f"{_file_name()} built with `{BUILD_COMMAND}` in the tcpchat repository."
            ) from None
    tried.append(f"  ${ENV_VAR}: not set")
    for where, path in _candidates():
        if not os.path.exists(path):
            tried.append(f"  {path} ({where}): not found")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(f"  {path} ({where}): cannot be loaded: {e}")
    found = ctypes.util.find_library("tcpchat")
    if found is None:
        tried.append("  ctypes.util.find_library('tcpchat') (the system loader): not found")
    else:
        try:
            return ctypes.CDLL(found), found
        except OSError as e:
            tried.append(f"  {found} (the system loader): cannot be loaded: {e}")
    raise ImportError(
        "tcpchat: cannot find the tcpchat shared library (" + _file_name() + "). Looked in:\n"
        + "\n".join(tried)
        + "\n"
        + _how_to_fix()
    )


lib, lib_path = _load()


def _declare(name: str, restype: Any, argtypes: Sequence[Any]) -> Any:
    """Look up one function and set its restype and argtypes."""
    try:
        fn = getattr(lib, name)
    except AttributeError:
        raise ImportError(
            f"tcpchat: the library at {lib_path} has no function {name}: it is older than "
            f"this Python package. Rebuild it with `{BUILD_COMMAND}`."
        ) from None
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


# ----------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------

# typedef enum {...} tcpchat_status;  (a C enum: int)
tcpchat_status = c_int
# typedef enum {...} tcpchat_session_end;
tcpchat_session_end = c_int
# typedef uint32_t tcpchat_log_level;
tcpchat_log_level = c_uint32
# typedef uint32_t tcpchat_framing;
tcpchat_framing = c_uint32
# typedef uint32_t tcpchat_role;
tcpchat_role = c_uint32
# typedef enum {...} tcpchat_leave_reason;  (a C enum: int)
tcpchat_leave_reason = c_int
# typedef uint32_t tcpchat_room_event_kind;
tcpchat_room_event_kind = c_uint32


class tcpchat_config(Structure):
    """typedef struct tcpchat_config tcpchat_config;  (opaque)"""


class tcpchat_conn(Structure):
    """typedef struct tcpchat_conn tcpchat_conn;  (opaque)"""


class tcpchat_server(Structure):
    """typedef struct tcpchat_server tcpchat_server;  (opaque)"""


class tcpchat_room(Structure):
    """typedef struct tcpchat_room tcpchat_room;  (opaque)"""


# typedef void (*tcpchat_log_callback)(void *user_data, tcpchat_log_level level,
#                                      const char *message);
tcpchat_log_callback = CFUNCTYPE(None, c_void_p, tcpchat_log_level, c_char_p)

# int (*next_message)(void *user_data, const uint8_t **msg, size_t *len);
next_message_fn = CFUNCTYPE(c_int, c_void_p, POINTER(c_char_p), POINTER(c_size_t))
# int (*on_message)(void *user_data, const uint8_t *msg, size_t len);
on_message_fn = CFUNCTYPE(c_int, c_void_p, POINTER(c_uint8), c_size_t)
# int (*on_connect)(void *user_data, const char *peer);
on_connect_fn = CFUNCTYPE(c_int, c_void_p, c_char_p)
# int (*on_end)(void *user_data, const char *peer, tcpchat_status status,
#               tcpchat_session_end end);
on_end_fn = CFUNCTYPE(c_int, c_void_p, c_char_p, tcpchat_status, tcpchat_session_end)


class tcpchat_chat_callbacks(Structure):
    """typedef struct { user_data; next_message; on_message; on_connect; on_end; }
    tcpchat_chat_callbacks;"""

    _fields_ = [
        ("user_data", c_void_p),
        ("next_message", next_message_fn),
        ("on_message", on_message_fn),
        ("on_connect", on_connect_fn),
        ("on_end", on_end_fn),
    ]


class tcpchat_echo_stats(Structure):
    """typedef struct { uint64_t clients, refused, messages, errors; } tcpchat_echo_stats;"""

    _fields_ = [
        ("clients", c_uint64),
        ("refused", c_uint64),
        ("messages", c_uint64),
        ("errors", c_uint64),
    ]


class tcpchat_room_event(Structure):
    """typedef struct { kind; client_id; name; old_name; text; address; reason;
    text_len; } tcpchat_room_event;

    ``text`` is a ``c_void_p`` (read ``text_len`` bytes there): a message may
    contain a NUL byte, which a ``c_char_p`` would cut it at. The other
    strings are NUL-free (``c_char_p``: ctypes copies them to bytes)."""

    _fields_ = [
        ("kind", tcpchat_room_event_kind),
        ("client_id", c_uint64),
        ("name", c_char_p),
        ("old_name", c_char_p),
        ("text", c_void_p),
        ("address", c_char_p),
        ("reason", tcpchat_leave_reason),
        ("text_len", c_size_t),
    ]


# typedef void (*tcpchat_room_callback)(void *user_data, const tcpchat_room_event *event);
tcpchat_room_callback = CFUNCTYPE(None, c_void_p, POINTER(tcpchat_room_event))


class tcpchat_room_stats(Structure):
    """typedef struct { uint64_t joined, refused, messages, dropped, online; }
    tcpchat_room_stats;"""

    _fields_ = [
        ("joined", c_uint64),
        ("refused", c_uint64),
        ("messages", c_uint64),
        ("dropped", c_uint64),
        ("online", c_uint64),
    ]


# ----------------------------------------------------------------------------
# Constants (#define in the header; the status enum's values)
# ----------------------------------------------------------------------------

# The version of the header this module mirrors (tcpchat_version() gives the
# loaded library's).
TCPCHAT_VERSION_MAJOR = 0
TCPCHAT_VERSION_MINOR = 1
TCPCHAT_VERSION_PATCH = 0

TCPCHAT_ADDR_MAX = 64

TCPCHAT_STATUS_OK = 0
TCPCHAT_STATUS_INVALID_ARGUMENT = 1
TCPCHAT_STATUS_IO = 2
TCPCHAT_STATUS_TIMEOUT = 3
TCPCHAT_STATUS_CLOSED = 4
TCPCHAT_STATUS_MESSAGE_TOO_LARGE = 5
TCPCHAT_STATUS_PROTOCOL = 6
TCPCHAT_STATUS_ADDRESS_IN_USE = 7
TCPCHAT_STATUS_CONNECTION_REFUSED = 8
TCPCHAT_STATUS_RESOLVE = 9
TCPCHAT_STATUS_CANCELLED = 10
TCPCHAT_STATUS_INTERRUPTED = 11
TCPCHAT_STATUS_BUFFER_TOO_SMALL = 12
TCPCHAT_STATUS_CALLBACK = 13
TCPCHAT_STATUS_SERVER_FULL = 14
TCPCHAT_STATUS_CONNECTION_RESET = 15
TCPCHAT_STATUS_INTERNAL = 16
TCPCHAT_STATUS_WOULD_BLOCK = 17
TCPCHAT_STATUS_LOCALLY_CLOSED = 18

TCPCHAT_SESSION_END_LOCAL_END = 0
TCPCHAT_SESSION_END_PEER_END = 1
TCPCHAT_SESSION_END_PEER_CLOSED = 2

TCPCHAT_FRAMING_RAW = 0
TCPCHAT_FRAMING_LINE = 1
TCPCHAT_FRAMING_FRAME = 2

TCPCHAT_ROLE_SERVER = 0
TCPCHAT_ROLE_CLIENT = 1

TCPCHAT_LOG_OFF = 0
TCPCHAT_LOG_ERROR = 1
TCPCHAT_LOG_WARN = 2
TCPCHAT_LOG_INFO = 3
TCPCHAT_LOG_DEBUG = 4

TCPCHAT_LEAVE_REASON_QUIT = 0
TCPCHAT_LEAVE_REASON_CLOSED = 1
TCPCHAT_LEAVE_REASON_LOST = 2
TCPCHAT_LEAVE_REASON_SLOW_READER = 3
TCPCHAT_LEAVE_REASON_IDLE_TIMEOUT = 4
TCPCHAT_LEAVE_REASON_LINE_TOO_LONG = 5
TCPCHAT_LEAVE_REASON_SHUTDOWN = 6
TCPCHAT_LEAVE_REASON_FLOOD = 7

TCPCHAT_ROOM_EVENT_JOIN = 0
TCPCHAT_ROOM_EVENT_LEAVE = 1
TCPCHAT_ROOM_EVENT_MESSAGE = 2
TCPCHAT_ROOM_EVENT_RENAME = 3

# ----------------------------------------------------------------------------
# Functions, in header order
# ----------------------------------------------------------------------------

_config_p = POINTER(tcpchat_config)
_conn_p = POINTER(tcpchat_conn)
_server_p = POINTER(tcpchat_server)
_room_p = POINTER(tcpchat_room)
_size_p = POINTER(c_size_t)

# --- library -----------------------------------------------------------------

# const char *tcpchat_version(void);
tcpchat_version = _declare("tcpchat_version", c_char_p, [])
# const char *tcpchat_status_name(int32_t status);
tcpchat_status_name = _declare("tcpchat_status_name", c_char_p, [c_int32])
# const char *tcpchat_last_error_message(void);
tcpchat_last_error_message = _declare("tcpchat_last_error_message", c_char_p, [])
# tcpchat_status tcpchat_set_log_callback(tcpchat_log_level level,
#     tcpchat_log_callback callback, void *user_data);
tcpchat_set_log_callback = _declare(
    "tcpchat_set_log_callback", tcpchat_status, [tcpchat_log_level, tcpchat_log_callback, c_void_p]
)

# tcpchat_status tcpchat_escape_text(const uint8_t *text, size_t len, char *buf,
#     size_t cap, size_t *out_len);
tcpchat_escape_text = _declare(
    "tcpchat_escape_text", tcpchat_status, [c_char_p, c_size_t, c_char_p, c_size_t, _size_p]
)

# --- config ------------------------------------------------------------------

# tcpchat_config *tcpchat_config_new(void);
tcpchat_config_new = _declare("tcpchat_config_new", _config_p, [])
# void tcpchat_config_free(tcpchat_config *config);
tcpchat_config_free = _declare("tcpchat_config_free", None, [_config_p])
# tcpchat_status tcpchat_config_set_framing(tcpchat_config *config, tcpchat_framing framing);
tcpchat_config_set_framing = _declare(
    "tcpchat_config_set_framing", tcpchat_status, [_config_p, tcpchat_framing]
)
# tcpchat_status tcpchat_config_set_max_message_size(tcpchat_config *config, size_t bytes);
tcpchat_config_set_max_message_size = _declare(
    "tcpchat_config_set_max_message_size", tcpchat_status, [_config_p, c_size_t]
)
# tcpchat_status tcpchat_config_set_end_word(tcpchat_config *config, const uint8_t *word,
#     size_t len);
tcpchat_config_set_end_word = _declare(
    "tcpchat_config_set_end_word", tcpchat_status, [_config_p, c_char_p, c_size_t]
)
# tcpchat_status tcpchat_config_set_connect_timeout_ms(tcpchat_config *config, uint64_t ms);
tcpchat_config_set_connect_timeout_ms = _declare(
    "tcpchat_config_set_connect_timeout_ms", tcpchat_status, [_config_p, c_uint64]
)
# tcpchat_status tcpchat_config_set_read_timeout_ms(tcpchat_config *config, uint64_t ms);
tcpchat_config_set_read_timeout_ms = _declare(
    "tcpchat_config_set_read_timeout_ms", tcpchat_status, [_config_p, c_uint64]
)
# tcpchat_status tcpchat_config_set_write_timeout_ms(tcpchat_config *config, uint64_t ms);
tcpchat_config_set_write_timeout_ms = _declare(
    "tcpchat_config_set_write_timeout_ms", tcpchat_status, [_config_p, c_uint64]
)
# tcpchat_status tcpchat_config_set_idle_timeout_ms(tcpchat_config *config, uint64_t ms);
tcpchat_config_set_idle_timeout_ms = _declare(
    "tcpchat_config_set_idle_timeout_ms", tcpchat_status, [_config_p, c_uint64]
)
# tcpchat_status tcpchat_config_set_close_timeout_ms(tcpchat_config *config, uint64_t ms);
tcpchat_config_set_close_timeout_ms = _declare(
    "tcpchat_config_set_close_timeout_ms", tcpchat_status, [_config_p, c_uint64]
)
# tcpchat_status tcpchat_config_set_nodelay(tcpchat_config *config, bool on);
tcpchat_config_set_nodelay = _declare(
    "tcpchat_config_set_nodelay", tcpchat_status, [_config_p, c_bool]
)
# tcpchat_status tcpchat_config_set_raw_buffer_size(tcpchat_config *config, size_t bytes);
tcpchat_config_set_raw_buffer_size = _declare(
    "tcpchat_config_set_raw_buffer_size", tcpchat_status, [_config_p, c_size_t]
)
# tcpchat_status tcpchat_config_set_backlog(tcpchat_config *config, uint32_t backlog);
tcpchat_config_set_backlog = _declare(
    "tcpchat_config_set_backlog", tcpchat_status, [_config_p, c_uint32]
)
# tcpchat_status tcpchat_config_set_max_clients(tcpchat_config *config, size_t clients);
tcpchat_config_set_max_clients = _declare(
    "tcpchat_config_set_max_clients", tcpchat_status, [_config_p, c_size_t]
)
# tcpchat_status tcpchat_config_set_allow(tcpchat_config *config, const char *ranges);
tcpchat_config_set_allow = _declare("tcpchat_config_set_allow", tcpchat_status, [_config_p, c_char_p])
# tcpchat_status tcpchat_config_set_deny(tcpchat_config *config, const char *ranges);
tcpchat_config_set_deny = _declare("tcpchat_config_set_deny", tcpchat_status, [_config_p, c_char_p])
# tcpchat_status tcpchat_config_set_max_per_address(tcpchat_config *config,
#     size_t connections);
tcpchat_config_set_max_per_address = _declare(
    "tcpchat_config_set_max_per_address", tcpchat_status, [_config_p, c_size_t]
)

# --- connections -------------------------------------------------------------

# tcpchat_status tcpchat_conn_connect(const char *host, int32_t port,
#     const tcpchat_config *config, tcpchat_conn **out_conn);
tcpchat_conn_connect = _declare(
    "tcpchat_conn_connect", tcpchat_status, [c_char_p, c_int32, _config_p, POINTER(_conn_p)]
)
# tcpchat_status tcpchat_conn_send(tcpchat_conn *conn, const uint8_t *msg, size_t len);
tcpchat_conn_send = _declare("tcpchat_conn_send", tcpchat_status, [_conn_p, c_char_p, c_size_t])
# tcpchat_status tcpchat_conn_send_many(tcpchat_conn *conn, const uint8_t *const *msgs,
#     const size_t *lens, size_t count);
tcpchat_conn_send_many = _declare(
    "tcpchat_conn_send_many", tcpchat_status, [_conn_p, POINTER(c_char_p), _size_p, c_size_t]
)
# tcpchat_status tcpchat_conn_send_packed(tcpchat_conn *conn, const uint8_t *data,
#     size_t data_len, const size_t *lens, size_t count);
tcpchat_conn_send_packed = _declare(
    "tcpchat_conn_send_packed", tcpchat_status, [_conn_p, c_char_p, c_size_t, _size_p, c_size_t]
)
# tcpchat_status tcpchat_conn_queue(tcpchat_conn *conn, const uint8_t *msg, size_t len);
tcpchat_conn_queue = _declare("tcpchat_conn_queue", tcpchat_status, [_conn_p, c_char_p, c_size_t])
# tcpchat_status tcpchat_conn_flush(tcpchat_conn *conn);
tcpchat_conn_flush = _declare("tcpchat_conn_flush", tcpchat_status, [_conn_p])
# tcpchat_status tcpchat_conn_recv(tcpchat_conn *conn, uint8_t *buf, size_t cap,
#     size_t *out_len);
tcpchat_conn_recv = _declare(
    "tcpchat_conn_recv", tcpchat_status, [_conn_p, POINTER(c_uint8), c_size_t, _size_p]
)
# tcpchat_status tcpchat_conn_recv_many(tcpchat_conn *conn, uint8_t *buf, size_t cap,
#     size_t *lens, size_t max_msgs, size_t *out_count);
tcpchat_conn_recv_many = _declare(
    "tcpchat_conn_recv_many",
    tcpchat_status,
    [_conn_p, POINTER(c_uint8), c_size_t, _size_p, c_size_t, _size_p],
)
# tcpchat_status tcpchat_conn_set_read_timeout_ms(tcpchat_conn *conn, uint64_t ms);
tcpchat_conn_set_read_timeout_ms = _declare(
    "tcpchat_conn_set_read_timeout_ms", tcpchat_status, [_conn_p, c_uint64]
)
# tcpchat_status tcpchat_conn_set_write_timeout_ms(tcpchat_conn *conn, uint64_t ms);
tcpchat_conn_set_write_timeout_ms = _declare(
    "tcpchat_conn_set_write_timeout_ms", tcpchat_status, [_conn_p, c_uint64]
)
# tcpchat_status tcpchat_conn_peer_addr(tcpchat_conn *conn, char *buf, size_t len,
#     size_t *out_len);
tcpchat_conn_peer_addr = _declare(
    "tcpchat_conn_peer_addr", tcpchat_status, [_conn_p, c_char_p, c_size_t, _size_p]
)
# tcpchat_status tcpchat_conn_local_addr(tcpchat_conn *conn, char *buf, size_t len,
#     size_t *out_len);
tcpchat_conn_local_addr = _declare(
    "tcpchat_conn_local_addr", tcpchat_status, [_conn_p, c_char_p, c_size_t, _size_p]
)
# tcpchat_status tcpchat_conn_cancel(tcpchat_conn *conn);
tcpchat_conn_cancel = _declare("tcpchat_conn_cancel", tcpchat_status, [_conn_p])
# tcpchat_status tcpchat_conn_shutdown_write(tcpchat_conn *conn);
tcpchat_conn_shutdown_write = _declare("tcpchat_conn_shutdown_write", tcpchat_status, [_conn_p])
# tcpchat_status tcpchat_conn_run_session(tcpchat_conn *conn, tcpchat_role role,
#     const tcpchat_chat_callbacks *callbacks, tcpchat_session_end *out_end);
tcpchat_conn_run_session = _declare(
    "tcpchat_conn_run_session",
    tcpchat_status,
    [_conn_p, tcpchat_role, POINTER(tcpchat_chat_callbacks), POINTER(tcpchat_session_end)],
)
# tcpchat_status tcpchat_conn_close(tcpchat_conn *conn);
tcpchat_conn_close = _declare("tcpchat_conn_close", tcpchat_status, [_conn_p])
# void tcpchat_conn_free(tcpchat_conn *conn);
tcpchat_conn_free = _declare("tcpchat_conn_free", None, [_conn_p])
# tcpchat_status tcpchat_conn_fd(tcpchat_conn *conn, int32_t *out_fd);
tcpchat_conn_fd = _declare("tcpchat_conn_fd", tcpchat_status, [_conn_p, POINTER(c_int32)])
# tcpchat_status tcpchat_conn_try_recv(tcpchat_conn *conn, uint8_t *buf, size_t cap,
#     size_t *out_len);
tcpchat_conn_try_recv = _declare(
    "tcpchat_conn_try_recv", tcpchat_status, [_conn_p, POINTER(c_uint8), c_size_t, _size_p]
)
# tcpchat_status tcpchat_conn_try_send(tcpchat_conn *conn, const uint8_t *msg, size_t len);
tcpchat_conn_try_send = _declare(
    "tcpchat_conn_try_send", tcpchat_status, [_conn_p, c_char_p, c_size_t]
)
# tcpchat_status tcpchat_conn_try_flush(tcpchat_conn *conn);
tcpchat_conn_try_flush = _declare("tcpchat_conn_try_flush", tcpchat_status, [_conn_p])

# --- rooms -------------------------------------------------------------------

# tcpchat_status tcpchat_room_bind(const char *host, int32_t port,
#     const tcpchat_config *config, size_t queue_limit, tcpchat_room **out_room);
tcpchat_room_bind = _declare(
    "tcpchat_room_bind", tcpchat_status, [c_char_p, c_int32, _config_p, c_size_t, POINTER(_room_p)]
)
# tcpchat_status tcpchat_room_local_addr(const tcpchat_room *room, char *buf, size_t len,
#     size_t *out_len);
tcpchat_room_local_addr = _declare(
    "tcpchat_room_local_addr", tcpchat_status, [_room_p, c_char_p, c_size_t, _size_p]
)
# tcpchat_status tcpchat_room_local_port(const tcpchat_room *room, int32_t *out_port);
tcpchat_room_local_port = _declare(
    "tcpchat_room_local_port", tcpchat_status, [_room_p, POINTER(c_int32)]
)
# tcpchat_status tcpchat_room_set_callback(const tcpchat_room *room,
#     tcpchat_room_callback callback, void *user_data);
tcpchat_room_set_callback = _declare(
    "tcpchat_room_set_callback", tcpchat_status, [_room_p, tcpchat_room_callback, c_void_p]
)
# tcpchat_status tcpchat_room_run(const tcpchat_room *room, tcpchat_room_stats *out_stats);
tcpchat_room_run = _declare(
    "tcpchat_room_run", tcpchat_status, [_room_p, POINTER(tcpchat_room_stats)]
)
# tcpchat_status tcpchat_room_start(const tcpchat_room *room);
tcpchat_room_start = _declare("tcpchat_room_start", tcpchat_status, [_room_p])
# tcpchat_status tcpchat_room_post(const tcpchat_room *room, const char *text);
tcpchat_room_post = _declare("tcpchat_room_post", tcpchat_status, [_room_p, c_char_p])
# tcpchat_status tcpchat_room_set_raw_text(const tcpchat_room *room, bool raw);
tcpchat_room_set_raw_text = _declare("tcpchat_room_set_raw_text", tcpchat_status, [_room_p, c_bool])
# tcpchat_status tcpchat_room_set_rate(const tcpchat_room *room,
#     uint32_t lines_per_second, uint32_t line_burst, uint64_t bytes_per_second,
#     uint64_t byte_burst, uint64_t flood_timeout_ms);
tcpchat_room_set_rate = _declare(
    "tcpchat_room_set_rate", tcpchat_status, [_room_p, c_uint32, c_uint32, c_uint64, c_uint64, c_uint64]
)
# tcpchat_status tcpchat_room_shutdown(const tcpchat_room *room);
tcpchat_room_shutdown = _declare("tcpchat_room_shutdown", tcpchat_status, [_room_p])
# tcpchat_status tcpchat_room_get_stats(const tcpchat_room *room,
#     tcpchat_room_stats *out_stats);
tcpchat_room_get_stats = _declare(
    "tcpchat_room_get_stats", tcpchat_status, [_room_p, POINTER(tcpchat_room_stats)]
)
# void tcpchat_room_free(tcpchat_room *room);
tcpchat_room_free = _declare("tcpchat_room_free", None, [_room_p])

# --- servers -----------------------------------------------------------------

# tcpchat_status tcpchat_server_bind(const char *host, int32_t port,
#     const tcpchat_config *config, tcpchat_server **out_server);
tcpchat_server_bind = _declare(
    "tcpchat_server_bind", tcpchat_status, [c_char_p, c_int32, _config_p, POINTER(_server_p)]
)
# tcpchat_status tcpchat_server_local_addr(const tcpchat_server *server, char *buf,
#     size_t len, size_t *out_len);
tcpchat_server_local_addr = _declare(
    "tcpchat_server_local_addr", tcpchat_status, [_server_p, c_char_p, c_size_t, _size_p]
)
# tcpchat_status tcpchat_server_local_port(const tcpchat_server *server, int32_t *out_port);
tcpchat_server_local_port = _declare(
    "tcpchat_server_local_port", tcpchat_status, [_server_p, POINTER(c_int32)]
)
# tcpchat_status tcpchat_server_accept(const tcpchat_server *server, tcpchat_conn **out_conn);
tcpchat_server_accept = _declare(
    "tcpchat_server_accept", tcpchat_status, [_server_p, POINTER(_conn_p)]
)
# tcpchat_status tcpchat_server_accept_timeout(const tcpchat_server *server, uint64_t ms,
#     tcpchat_conn **out_conn);
tcpchat_server_accept_timeout = _declare(
    "tcpchat_server_accept_timeout", tcpchat_status, [_server_p, c_uint64, POINTER(_conn_p)]
)
# tcpchat_status tcpchat_server_shutdown(const tcpchat_server *server);
tcpchat_server_shutdown = _declare("tcpchat_server_shutdown", tcpchat_status, [_server_p])
# tcpchat_status tcpchat_server_serve_chat(const tcpchat_server *server,
#     const tcpchat_chat_callbacks *callbacks, bool once);
tcpchat_server_serve_chat = _declare(
    "tcpchat_server_serve_chat",
    tcpchat_status,
    [_server_p, POINTER(tcpchat_chat_callbacks), c_bool],
)
# tcpchat_status tcpchat_server_serve_echo(const tcpchat_server *server,
#     tcpchat_echo_stats *out_stats);
tcpchat_server_serve_echo = _declare(
    "tcpchat_server_serve_echo", tcpchat_status, [_server_p, POINTER(tcpchat_echo_stats)]
)
# void tcpchat_server_free(tcpchat_server *server);
tcpchat_server_free = _declare("tcpchat_server_free", None, [_server_p])
# tcpchat_status tcpchat_server_fd(const tcpchat_server *server, int32_t *out_fd);
tcpchat_server_fd = _declare("tcpchat_server_fd", tcpchat_status, [_server_p, POINTER(c_int32)])
# tcpchat_status tcpchat_server_try_accept(const tcpchat_server *server,
#     tcpchat_conn **out_conn);
tcpchat_server_try_accept = _declare(
    "tcpchat_server_try_accept", tcpchat_status, [_server_p, POINTER(_conn_p)]
)


# --- session -----------------------------------------------------------------

# tcpchat_status tcpchat_session_wait_input(int32_t fd);
tcpchat_session_wait_input = _declare("tcpchat_session_wait_input", tcpchat_status, [c_int32])

# ----------------------------------------------------------------------------
# Small helpers shared by the public modules
# ----------------------------------------------------------------------------


def last_error_message() -> str:
    """The calling thread's last error message (call right after the failure)."""
    raw: Optional[bytes] = tcpchat_last_error_message()
    return raw.decode("utf-8", "replace") if raw else ""


def status_name(status: int) -> str:
    """``TCPCHAT_STATUS_TIMEOUT`` and so on."""
    raw: Optional[bytes] = tcpchat_status_name(status)
    return raw.decode("ascii", "replace") if raw else "TCPCHAT_STATUS_UNKNOWN"
