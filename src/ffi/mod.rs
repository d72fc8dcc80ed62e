//! The C API: `libtcpchat.so` / `libtcpchat.a` and `include/tcpchat.h`.
//!
//! A thin adapter over the Rust core: each export checks its arguments,
//! calls the core, and turns the result into a `tcpchat_status`. One file
//! per handle family; `boundary.rs` holds the panic boundary and argument
//! checks, `handles.rs` the ownership conversions.

#![allow(non_camel_case_types)]
// The constants and aliases below exist for the header (cbindgen); Rust code
// does not name them all.
#![allow(dead_code)]
#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use crate::error::{Error, Status};
use crate::log::{self, LogLevel};

pub mod boundary;
pub mod config;
pub mod conn;
pub mod handles;
pub mod room;
pub mod server;
pub mod session;

use boundary::{guard, guard_value};

/// The largest length, with its terminating NUL, of an address string
/// written by `tcpchat_conn_peer_addr` and friends (`"[ipv6%scope]:port"`).
pub const TCPCHAT_ADDR_MAX: usize = 64;

/// How messages are delimited on the wire; one of the `TCPCHAT_FRAMING_*`
/// values.
pub type tcpchat_framing = u32;
/// `raw`: a send writes the bytes as they are; a receive returns what one
/// read returns, up to the raw buffer size (default 1024). No boundaries.
pub const TCPCHAT_FRAMING_RAW: tcpchat_framing = 0;
/// `line` (the default): a message is its bytes followed by `\n`; on receive
/// the `\n` and a `\r` before it are stripped. A message containing `\n` is
/// refused on send.
pub const TCPCHAT_FRAMING_LINE: tcpchat_framing = 1;
/// `frame`: a 4-byte big-endian length, then that many bytes. Binary-safe.
pub const TCPCHAT_FRAMING_FRAME: tcpchat_framing = 2;

/// Which side of a chat session a connection plays; one of the
/// `TCPCHAT_ROLE_*` values.
pub type tcpchat_role = u32;
/// Sends first (the tutorial's server).
pub const TCPCHAT_ROLE_SERVER: tcpchat_role = 0;
/// Receives first (the tutorial's client).
pub const TCPCHAT_ROLE_CLIENT: tcpchat_role = 1;

/// A log level; one of the `TCPCHAT_LOG_*` values. A callback set at one
/// level receives records of that level and every more important one.
pub type tcpchat_log_level = u32;
/// Logging off.
pub const TCPCHAT_LOG_OFF: tcpchat_log_level = 0;
/// Failures the library could not recover from for a connection.
pub const TCPCHAT_LOG_ERROR: tcpchat_log_level = 1;
/// Problems the library handled (a client dropped for breaking the format, a
/// refused client).
pub const TCPCHAT_LOG_WARN: tcpchat_log_level = 2;
/// Connections opening and closing, servers starting and stopping.
pub const TCPCHAT_LOG_INFO: tcpchat_log_level = 3;
/// Details useful when debugging.
pub const TCPCHAT_LOG_DEBUG: tcpchat_log_level = 4;

/// A log callback: receives each record at or above the level it was set
/// with.
///
/// Runs on whichever thread logs, including the library's own service
/// threads, possibly on several threads at once: it must be thread-safe.
/// `message` is a NUL-terminated UTF-8 string owned by the library and valid
/// only during the call. The callback must not call back into tcpchat
/// functions that could log (most of them); copy the message and return.
pub type tcpchat_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: tcpchat_log_level, message: *const c_char)>;

/// The library's version as a static NUL-terminated string, such as
/// `"0.1.0"`. Owned by the library; never free it.
#[no_mangle]
pub extern "C" fn tcpchat_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The name of a status code as a static NUL-terminated string, such as
/// `"TCPCHAT_STATUS_TIMEOUT"`; `"TCPCHAT_STATUS_UNKNOWN"` for a number that is
/// not a status. Owned by the library; never free it.
#[no_mangle]
pub extern "C" fn tcpchat_status_name(status: i32) -> *const c_char {
    guard_value(UNKNOWN.as_ptr() as *const c_char, || {
        let name = usize::try_from(status).ok().and_then(|i| STATUS_NAMES_NUL.get(i));
        name.copied().unwrap_or(UNKNOWN).as_ptr() as *const c_char
    })
}

const UNKNOWN: &str = "TCPCHAT_STATUS_UNKNOWN\0";
/// `Status::name()` of each status, in numeric order, with a NUL (checked by a test).
const STATUS_NAMES_NUL: [&str; Status::ALL.len()] = [
    "TCPCHAT_STATUS_OK\0",
    "TCPCHAT_STATUS_INVALID_ARGUMENT\0",
    "TCPCHAT_STATUS_IO\0",
    "TCPCHAT_STATUS_TIMEOUT\0",
    "TCPCHAT_STATUS_CLOSED\0",
    "TCPCHAT_STATUS_MESSAGE_TOO_LARGE\0",
    "TCPCHAT_STATUS_PROTOCOL\0",
    "TCPCHAT_STATUS_ADDRESS_IN_USE\0",
    "TCPCHAT_STATUS_CONNECTION_REFUSED\0",
    "TCPCHAT_STATUS_RESOLVE\0",
    "TCPCHAT_STATUS_CANCELLED\0",
    "TCPCHAT_STATUS_INTERRUPTED\0",
    "TCPCHAT_STATUS_BUFFER_TOO_SMALL\0",
    "TCPCHAT_STATUS_CALLBACK\0",
    "TCPCHAT_STATUS_SERVER_FULL\0",
    "TCPCHAT_STATUS_CONNECTION_RESET\0",
    "TCPCHAT_STATUS_INTERNAL\0",
    "TCPCHAT_STATUS_WOULD_BLOCK\0",
    "TCPCHAT_STATUS_LOCALLY_CLOSED\0",
];

/// The full message of the most recent failed call on the calling thread,
/// such as `"connection to 127.0.0.1:9 refused"` or `"message of 2000000
/// bytes exceeds the maximum message size of 1048576 bytes"`; an empty
/// string if no call has failed on this thread.
///
/// The string is owned by the library and stays valid until the next failing
/// tcpchat call on the same thread; copy it to keep it. Never NULL. Each
/// thread has its own last error, so a failure on one thread never
/// overwrites another's.
#[no_mangle]
pub extern "C" fn tcpchat_last_error_message() -> *const c_char {
    guard_value(c"".as_ptr(), boundary::last_error_ptr)
}

struct LogTarget {
    cb: unsafe extern "C" fn(*mut c_void, tcpchat_log_level, *const c_char),
    user_data: *mut c_void,
}
impl LogTarget {
    fn call(&self, level: LogLevel, msg: &str) {
        let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: the program supplied this callback for exactly this use.
        unsafe { (self.cb)(self.user_data, level as u32, c.as_ptr()) }
    }
}

// SAFETY: the header makes the program promise that the callback and its
// user data may be used from any thread.
unsafe impl Send for LogTarget {}
unsafe impl Sync for LogTarget {}

/// Send the library's log records at `level` and above to `callback`, or turn
/// logging off with a NULL `callback` or `TCPCHAT_LOG_OFF`. Process-wide:
/// replaces any previous callback. Nothing is logged until this is called.
///
/// `user_data` is passed to every call of `callback` unchanged; it must stay
/// valid until the callback is replaced or turned off, and both must be safe
/// to use from any thread (see `tcpchat_log_callback`).
///
/// Returns `TCPCHAT_STATUS_INVALID_ARGUMENT` for a level that is not one of
/// the `TCPCHAT_LOG_*` values.
#[no_mangle]
pub extern "C" fn tcpchat_set_log_callback(
    level: tcpchat_log_level,
    callback: tcpchat_log_callback,
    user_data: *mut c_void,
) -> Status {
    guard(|| {
        let level = LogLevel::from_code(level)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown log level {level}")))?;
        match callback {
            Some(cb) if level != LogLevel::Off => {
                let target = LogTarget { cb, user_data };
                log::set_logger(
                    level,
                    Some(Arc::new(move |lvl: LogLevel, msg: &str| {
                        target.call(lvl, msg)
                    })),
                )
            }
            _ => log::set_logger(LogLevel::Off, None),
        }
        Ok(())
    })
}

/// Write `text` (`len` bytes, borrowed for the call; need not be UTF-8 nor
/// NUL-terminated) into `buf` (`cap` bytes) as a NUL-terminated string that
/// is safe to print on a terminal: C0 controls other than TAB, DEL, C1
/// controls and the invisible format characters that reorder or hide text
/// are replaced by a visible notation (`\x1b`, `\u{202e}`; bytes that are
/// not UTF-8 as `\xff`), the rest is copied unchanged. The room applies the
/// same rule to what it relays; use this for any peer text you print.
///
/// `*out_len` (not NULL) receives the length written without the NUL, or,
/// with `TCPCHAT_STATUS_BUFFER_TOO_SMALL`, the size needed including the NUL
/// (at most `4 * len + 1`; `buf` may be NULL with `cap` 0 to ask).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_escape_text(
    text: *const u8,
    len: usize,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Status {
    guard(|| {
        boundary::arg_nonnull(out_len, "out_len")?;
        let text = boundary::arg_bytes(text, len, "text")?;
        boundary::write_string(&crate::text::escape_bytes(text), buf, cap, out_len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_the_core() {
        for s in Status::ALL {
            assert_eq!(STATUS_NAMES_NUL[s as usize], format!("{}\0", s.name()));
        }
    }
}
