//! `tcpchat_room`: the broadcast room.

use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::Status;
use crate::room::{LeaveReason, MemberRate, Room, RoomConfig, RoomEvent, RoomStats};

use super::boundary::{arg_nonnull, arg_port, arg_str, guard, guard_value, write_out, write_string};
use super::config::tcpchat_config;
use super::handles::{arc_free, arc_from_c, arc_into_c};

/// A chat room: every line a client sends reaches every other client as
/// `NAME: TEXT`; clients speak line framing, so `nc` and `telnet` can join.
/// Commands: `/nick NAME`, `/who`, `/quit`. One event loop serves every
/// client; a slow reader is dropped rather than slowing the room; idle and
/// half-sent lines time out (the config's idle timeout); a client over the
/// config's maximum is told the room is full and closed.
///
/// Ownership: the caller owns the handle and frees it with
/// `tcpchat_room_free()`, which shuts the room down first.
///
/// Thread safety: a room may be used from several threads at once;
/// `tcpchat_room_post()` and `tcpchat_room_shutdown()` in particular are
/// meant to be called from any thread while the room runs.
///
/// Methods: `tcpchat_room_bind`, `tcpchat_room_local_addr`,
/// `tcpchat_room_local_port`, `tcpchat_room_set_callback`,
/// `tcpchat_room_set_rate`, `tcpchat_room_set_raw_text`,
/// `tcpchat_room_run`, `tcpchat_room_start`, `tcpchat_room_post`,
/// `tcpchat_room_shutdown`, `tcpchat_room_get_stats`, `tcpchat_room_free`.
pub struct tcpchat_room {
    room: Room,
    /// Set by `tcpchat_room_free()` once the room is shut down: the callback
    /// is never called after that returns. (Freed from inside the callback,
    /// on the room's thread, the shutdown only starts; the loop finishes it
    /// after the callback returns, without calling it again.)
    freed: Arc<AtomicBool>,
}

/// What kind of `tcpchat_room_event` it is; one of the
/// `TCPCHAT_ROOM_EVENT_*` values.
pub type tcpchat_room_event_kind = u32;
/// A client joined: `name` is its first name (`guestN`), `address` its address.
pub const TCPCHAT_ROOM_EVENT_JOIN: tcpchat_room_event_kind = 0;
/// A member left: `name` is its name then, `reason` says why.
pub const TCPCHAT_ROOM_EVENT_LEAVE: tcpchat_room_event_kind = 1;
/// A member sent a line, relayed to everyone else: `name` and `text`.
pub const TCPCHAT_ROOM_EVENT_MESSAGE: tcpchat_room_event_kind = 2;
/// A member changed its name with `/nick`: `old_name` and `name` (the new one).
pub const TCPCHAT_ROOM_EVENT_RENAME: tcpchat_room_event_kind = 3;

/// Something that happened in the room, as a `tcpchat_room_callback` sees it.
///
/// Every string is NUL-terminated UTF-8, owned by the library and valid only
/// during the callback; fields that do not apply to the kind are NULL. Names
/// and addresses never contain a NUL byte; a message may (it is valid
/// UTF-8), so `text_len` gives its exact length.
#[repr(C)]
pub struct tcpchat_room_event {
    /// One of the `TCPCHAT_ROOM_EVENT_*` values.
    pub kind: tcpchat_room_event_kind,
    /// The client the event is about: 1, 2, ... in the order clients joined,
    /// never reused, whatever its name.
    pub client_id: u64,
    /// The client's name (after a rename: the new one).
    pub name: *const c_char,
    /// `TCPCHAT_ROOM_EVENT_RENAME`: the name it had; otherwise NULL.
    pub old_name: *const c_char,
    /// `TCPCHAT_ROOM_EVENT_MESSAGE`: the line, without its newline; otherwise NULL.
    pub text: *const c_char,
    /// `TCPCHAT_ROOM_EVENT_JOIN`: the client's address (`"IP:PORT"`); otherwise NULL.
    pub address: *const c_char,
    /// `TCPCHAT_ROOM_EVENT_LEAVE`: why it left; otherwise `TCPCHAT_LEAVE_REASON_QUIT`.
    pub reason: LeaveReason,
    /// `TCPCHAT_ROOM_EVENT_MESSAGE`: the length of `text` in bytes, without
    /// the terminating NUL (a NUL byte inside the line would cut `text`
    /// short as a C string); otherwise 0.
    pub text_len: usize,
}

/// Observes the room: called for every `tcpchat_room_event`.
///
/// Runs on the thread that runs the room (the one in `tcpchat_room_run()`,
/// or the room's own library thread after `tcpchat_room_start()`), between
/// two steps of the event loop: every client waits while it runs, so keep it
/// short. It may call `tcpchat_room_post()` (the line goes out after it
/// returns) and `tcpchat_room_shutdown()` (which then returns at once; the
/// room stops after the callback returns). `event` and its strings are valid
/// only during the call.
pub type tcpchat_room_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const tcpchat_room_event)>;

struct CallbackTarget {
    cb: unsafe extern "C" fn(*mut c_void, *const tcpchat_room_event),
    user_data: *mut c_void,
    /// The room handle's `freed` flag.
    freed: Arc<AtomicBool>,
}
// SAFETY: the header tells the program that the callback runs on the room's
// thread with this user data; the program vouches for that.
unsafe impl Send for CallbackTarget {}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// The exact bytes of `s` and a terminating NUL (`s` may contain NULs).
fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

impl CallbackTarget {
    fn deliver(&self, event: &RoomEvent) {
        if self.freed.load(Ordering::Acquire) {
            return; // the program freed the room: its user data may be gone
        }
        let name;
        let mut old = None;
        let mut text = None;
        let mut addr = None;
        let mut reason = LeaveReason::Quit;
        let kind = match event {
            RoomEvent::Join { name: n, addr: a, .. } => {
                name = cstring(n);
                addr = Some(cstring(&a.to_string()));
                TCPCHAT_ROOM_EVENT_JOIN
            }
            RoomEvent::Leave { name: n, reason: r, .. } => {
                name = cstring(n);
                reason = *r;
                TCPCHAT_ROOM_EVENT_LEAVE
            }
            RoomEvent::Message { name: n, text: t, .. } => {
                name = cstring(n);
                text = Some(nul_terminated(t));
                TCPCHAT_ROOM_EVENT_MESSAGE
            }
            RoomEvent::Rename { old: o, new, .. } => {
                name = cstring(new);
                old = Some(cstring(o));
                TCPCHAT_ROOM_EVENT_RENAME
            }
        };
        let opt = |c: &Option<CString>| c.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        let ev = tcpchat_room_event {
            kind,
            client_id: event.id(),
            name: name.as_ptr(),
            old_name: opt(&old),
            text: text.as_ref().map_or(ptr::null(), |t| t.as_ptr().cast()),
            address: opt(&addr),
            reason,
            text_len: text.as_ref().map_or(0, |t| t.len() - 1),
        };
        // SAFETY: the program supplied the callback and user data for this;
        // `ev` and its strings live until the call returns.
        unsafe { (self.cb)(self.user_data, &ev) }
    }
}

/// Listen on `host`:`port` (0 = any free port) and return a new room in
/// `*out_room`; it starts serving with `tcpchat_room_run()` or
/// `tcpchat_room_start()`.
///
/// `config` may be NULL for defaults (it is copied); its framing must be
/// line framing (the default). The room's line limit is 16 KiB, or the
/// config's maximum message size if smaller (a longer line gets a notice
/// and its sender is closed); no line it relays is longer than 1 MiB, its
/// `NAME: ` prefix included, so members with default settings take every
/// one. The room also uses the config's idle timeout, close
/// timeout, maximum number of clients, TCP_NODELAY, backlog and access
/// lists. `queue_limit` bounds each client's outgoing queue in bytes (0 =
/// the default, 256 KiB): a client whose unread lines exceed it is dropped
/// as a slow reader.
///
/// Errors: `TCPCHAT_STATUS_INVALID_ARGUMENT` (bad host, port or config, or
/// a framing other than line), `TCPCHAT_STATUS_RESOLVE`,
/// `TCPCHAT_STATUS_ADDRESS_IN_USE`, `TCPCHAT_STATUS_IO`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_bind(
    host: *const c_char,
    port: i32,
    config: *const tcpchat_config,
    queue_limit: usize,
    out_room: *mut *mut tcpchat_room,
) -> Status {
    guard(|| {
        arg_nonnull(out_room, "out_room")?;
        let host = arg_str(host, "host")?;
        let port = arg_port(port, 0)?;
        let mut rc = RoomConfig::from(tcpchat_config::get_or_default(config));
        if queue_limit > 0 {
            rc = rc.with_queue_limit(queue_limit);
        }
        let room = Room::bind(host, port, rc)?;
        out_room.write(arc_into_c(tcpchat_room {
            room,
            freed: Arc::new(AtomicBool::new(false)),
        }));
        Ok(())
    })
}

/// Write the room's address (with the real port), as
/// `tcpchat_server_local_addr()` does.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_local_addr(
    room: *const tcpchat_room,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Status {
    guard(|| {
        let r = arc_from_c(room, "room")?;
        write_string(&r.room.local_addr().to_string(), buf, len, out_len)
    })
}

/// Write the room's port (the real one when bound to port 0) into `*out_port`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_local_port(room: *const tcpchat_room, out_port: *mut i32) -> Status {
    guard(|| {
        arg_nonnull(out_port, "out_port")?;
        let r = arc_from_c(room, "room")?;
        out_port.write(i32::from(r.room.local_addr().port()));
        Ok(())
    })
}

/// Call `callback` for every room event (see `tcpchat_room_callback`), or
/// stop observing with NULL. Set it before the room runs:
/// `TCPCHAT_STATUS_INVALID_ARGUMENT` while it runs, `TCPCHAT_STATUS_CANCELLED`
/// after it has shut down. `user_data` is passed to every call unchanged
/// and must stay valid until the room is freed (or the callback replaced):
/// the callback is never called after `tcpchat_room_free()` returns.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_set_callback(
    room: *const tcpchat_room,
    callback: tcpchat_room_callback,
    user_data: *mut c_void,
) -> Status {
    guard(|| {
        let r = arc_from_c(room, "room")?;
        match callback {
            Some(cb) => {
                let target = CallbackTarget {
                    cb,
                    user_data,
                    freed: r.freed.clone(),
                };
                r.room.on_event(move |e| target.deliver(e))
            }
            None => r.room.on_event(|_| {}),
        }
    })
}

/// Serve the room on the calling thread until `tcpchat_room_shutdown()`
/// (from another thread, or from the callback), then write what it did to
/// `*out_stats` (if not NULL) and return `TCPCHAT_STATUS_OK`. The callback
/// runs on this thread.
///
/// Returns `TCPCHAT_STATUS_INTERRUPTED` when a signal handler ran while it
/// waited: nothing is lost, the clients stay connected, and calling it again
/// goes on serving. `TCPCHAT_STATUS_INVALID_ARGUMENT` if the room already
/// runs; `TCPCHAT_STATUS_CANCELLED` if it has been shut down.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_run(room: *const tcpchat_room, out_stats: *mut RoomStats) -> Status {
    guard(|| {
        let r = arc_from_c(room, "room")?;
        let stats = r.room.run()?;
        write_out(out_stats, stats);
        Ok(())
    })
}

/// Serve the room on a new library thread (signals blocked there, so they
/// reach the program's threads) and return at once; the callback runs on
/// that thread. Stop it with `tcpchat_room_shutdown()` or
/// `tcpchat_room_free()`. Errors as `tcpchat_room_run()`, and
/// `TCPCHAT_STATUS_IO` if the thread cannot be created.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_start(room: *const tcpchat_room) -> Status {
    guard(|| {
        let r = arc_from_c(room, "room")?;
        r.room.start()
    })
}

/// Send `* TEXT` to every client, from any thread. `text` is a
/// NUL-terminated UTF-8 string without a newline, borrowed for the call.
/// Refused with `TCPCHAT_STATUS_INVALID_ARGUMENT` (NULL, not UTF-8, or a
/// newline), `TCPCHAT_STATUS_MESSAGE_TOO_LARGE` (longer than the maximum
/// message size) or `TCPCHAT_STATUS_CANCELLED` (the room is shutting down).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_post(room: *const tcpchat_room, text: *const c_char) -> Status {
    guard(|| {
        let text = arg_str(text, "text")?;
        let r = arc_from_c(room, "room")?;
        r.room.post(text)
    })
}

/// Relay text as it was typed (`raw` true), terminal controls included, or,
/// as by default (`raw` false), with C0 controls other than TAB, DEL, C1
/// controls and the invisible format characters shown in the visible
/// notation of `tcpchat_escape_text()`. Only for rooms whose every member is
/// a program: a person at a terminal can be attacked with raw controls.
/// Any thread, any time; it applies to the lines that arrive from then on.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_set_raw_text(room: *const tcpchat_room, raw: bool) -> Status {
    guard(|| {
        let r = arc_from_c(room, "room")?;
        r.room.set_raw_text(raw);
        Ok(())
    })
}

/// Set how fast each member may send, before the room runs: at most
/// `lines_per_second` lines (commands included) a second with bursts of
/// `line_burst`, and `bytes_per_second` bytes a second with bursts of
/// `byte_burst` (a rate of 0 turns that limit off). A member over its rate
/// is not read from (its data waits in the kernel) until it is within it
/// again; one that stays over its rate, never catching up, for
/// `flood_timeout_ms` milliseconds (0 = never) gets `error: excess flood`
/// and is closed (leave reason `TCPCHAT_LEAVE_REASON_FLOOD`). The defaults,
/// without this call: 50 lines/s, bursts of 500, 32768 bytes/s, bursts of
/// 65536, 10000 ms: generous for people and ordinary bots, and what keeps
/// a reader that keeps up with them from being dropped as too slow because
/// another member floods.
///
/// Errors: `TCPCHAT_STATUS_INVALID_ARGUMENT` for a burst of 0 with a
/// non-zero rate, or while the room is running; `TCPCHAT_STATUS_CANCELLED`
/// after it has shut down.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_set_rate(
    room: *const tcpchat_room,
    lines_per_second: u32,
    line_burst: u32,
    bytes_per_second: u64,
    byte_burst: u64,
    flood_timeout_ms: u64,
) -> Status {
    guard(|| {
        let r = arc_from_c(room, "room")?;
        let flood_timeout = match flood_timeout_ms {
            0 => std::time::Duration::MAX,
            ms => std::time::Duration::from_millis(ms),
        };
        r.room.set_rate(MemberRate {
            lines_per_second,
            line_burst,
            bytes_per_second,
            byte_burst,
            flood_timeout,
        })
    })
}

/// Shut the room down, from any thread: every client gets a closing line
/// and a graceful close, and the call returns when the room has stopped
/// (called from the callback, it returns at once and the room stops after
/// the callback returns). Idempotent.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_shutdown(room: *const tcpchat_room) -> Status {
    guard(|| {
        let r = arc_from_c(room, "room")?;
        r.room.shutdown();
        Ok(())
    })
}

/// Write what the room has done so far into `*out_stats`; safe from any thread.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_get_stats(room: *const tcpchat_room, out_stats: *mut RoomStats) -> Status {
    guard(|| {
        arg_nonnull(out_stats, "out_stats")?;
        let r = arc_from_c(room, "room")?;
        out_stats.write(r.room.stats());
        Ok(())
    })
}

/// Shut the room down (see `tcpchat_room_shutdown()`) and free it. NULL is
/// ignored. The handle must not be used afterwards, and the callback is not
/// called after this returns, so its user data may be freed then. Called
/// from the callback, it returns at once and the room finishes shutting
/// down (every client still gets the closing line) after the callback
/// returns, without calling it again.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_room_free(room: *mut tcpchat_room) {
    guard_value((), || {
        if !room.is_null() {
            // Stop it now, whoever else still holds a reference; then no
            // more callbacks (the loop may still run, when this is called
            // from the callback on the room's own thread).
            (*room).room.shutdown();
            (*room).freed.store(true, Ordering::Release);
        }
        arc_free(room)
    })
}

