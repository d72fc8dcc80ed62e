//! `tcpchat_conn`: one framed connection.

use std::ffi::c_char;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::conn::Conn;
use crate::error::{Error, Result, Status};
use crate::session::SessionEnd;
use crate::sys::Canceller;

use super::boundary::{arg_bytes, arg_bytes_mut, arg_nonnull, arg_port, arg_str, guard, guard_value, write_out, write_string};
use super::config::tcpchat_config;
use super::handles::{arc_free, arc_from_c, arc_into_c};
use super::session::{role_from_c, tcpchat_chat_callbacks, CallbackHandler};
use super::tcpchat_role;

/// One framed TCP connection, from `tcpchat_conn_connect()` or
/// `tcpchat_server_accept()`.
///
/// Ownership: the caller owns the handle and frees it with
/// `tcpchat_conn_free()`, which also closes the connection gracefully if
/// `tcpchat_conn_close()` was not called.
///
/// Thread safety: use a connection from one thread at a time (calls from
/// several threads are serialised: one waits while another is blocked in a
/// receive). The exception is `tcpchat_conn_cancel()`, which any thread may
/// call at any time to stop a blocked call. Freeing the handle while another
/// thread is still inside a call on it is safe (the connection lives until
/// that call returns), but the handle must not be used after it is freed.
///
/// Callbacks: a callback of `tcpchat_conn_run_session()` must not call the
/// other `tcpchat_conn_*` functions on the connection whose session is
/// running (only `tcpchat_conn_cancel()` and `tcpchat_conn_free()`); such a
/// call is refused with `TCPCHAT_STATUS_INVALID_ARGUMENT`.
///
/// Methods: `tcpchat_conn_connect`, `tcpchat_conn_send`,
/// `tcpchat_conn_send_many`, `tcpchat_conn_send_packed`,
/// `tcpchat_conn_queue`, `tcpchat_conn_flush`, `tcpchat_conn_recv`,
/// `tcpchat_conn_recv_many`, `tcpchat_conn_set_read_timeout_ms`,
/// `tcpchat_conn_set_write_timeout_ms`, `tcpchat_conn_peer_addr`,
/// `tcpchat_conn_local_addr`, `tcpchat_conn_cancel`,
/// `tcpchat_conn_shutdown_write`, `tcpchat_conn_run_session`,
/// `tcpchat_conn_fd`, `tcpchat_conn_try_recv`, `tcpchat_conn_try_send`,
/// `tcpchat_conn_try_flush`, `tcpchat_conn_close`, `tcpchat_conn_free`.
pub struct tcpchat_conn {
    cancel: Canceller,
    /// `None` once closed with `tcpchat_conn_close`.
    conn: Mutex<Option<Conn>>,
    /// The thread holding `conn`'s lock ([`this_thread`]; 0 = none), so that a
    /// call from inside a session callback on the same connection is refused
    /// instead of deadlocking on the lock its own thread holds.
    holder: AtomicUsize,
}

impl tcpchat_conn {
    pub(crate) fn into_c(conn: Conn) -> *mut tcpchat_conn {
        arc_into_c(tcpchat_conn {
            cancel: conn.canceller(),
            conn: Mutex::new(Some(conn)),
            holder: AtomicUsize::new(0),
        })
    }

    /// Lock the connection; refused when the calling thread already holds
    /// the lock (a callback calling back into its own connection).
    fn lock(&self) -> Result<Locked<'_>> {
        let me = this_thread();
        if self.holder.load(Ordering::Acquire) == me {
            return Err(Error::invalid(
                "a tcpchat_conn_* function was called on a connection from a callback of a call \
                 still running on that connection; return from the callback first",
            ));
        }
        let guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        self.holder.store(me, Ordering::Release);
        Ok(Locked { holder: &self.holder, guard })
    }
}

thread_local! {
    static THREAD_TOKEN: u8 = const { 0 };
}

/// A non-zero number unique to the calling thread among running threads.
fn this_thread() -> usize {
    THREAD_TOKEN.with(|t| t as *const u8 as usize)
}

/// A locked connection; forgets its holder before unlocking.
struct Locked<'a> {
    holder: &'a AtomicUsize,
    guard: MutexGuard<'a, Option<Conn>>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Runs before `guard` unlocks: only the holder ever stores non-zero.
        self.holder.store(0, Ordering::Release);
    }
}

/// Run `f` on the open connection behind `p`.
///
/// # Safety
/// `p` must be NULL or a live connection handle.
unsafe fn with_conn<T>(p: *const tcpchat_conn, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
    let handle: Arc<tcpchat_conn> = arc_from_c(p, "conn")?;
    let mut locked = handle.lock()?;
    match locked.guard.as_mut() {
        Some(conn) => f(conn),
        None => Err(Error::Closed("the connection was closed with tcpchat_conn_close".into())),
    }
}

/// Connect to `host`:`port` and return the new connection in `*out_conn`.
///
/// `host` is a NUL-terminated UTF-8 host name (every address it resolves to
/// is tried in turn) or an IPv4 or IPv6 literal (`"::1"` or `"[::1]"`),
/// borrowed for the call. `port` must be 1 to 65535. `config` may be NULL for
/// defaults; it is copied.
///
/// On success `*out_conn` owns a new connection (free it with
/// `tcpchat_conn_free()`); on failure `*out_conn` is left untouched.
/// Errors: `TCPCHAT_STATUS_INVALID_ARGUMENT` (NULL host or out pointer, bad
/// UTF-8, port out of range), `TCPCHAT_STATUS_RESOLVE`,
/// `TCPCHAT_STATUS_CONNECTION_REFUSED`, `TCPCHAT_STATUS_TIMEOUT`,
/// `TCPCHAT_STATUS_IO`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_connect(
    host: *const c_char,
    port: i32,
    config: *const tcpchat_config,
    out_conn: *mut *mut tcpchat_conn,
) -> Status {
    guard(|| {
        arg_nonnull(out_conn, "out_conn")?;
        let host = arg_str(host, "host")?;
        let port = arg_port(port)?;
        let config = tcpchat_config::get_or_default(config);
        let conn = crate::connect(host, port, &config)?;
        out_conn.write(tcpchat_conn::into_c(conn));
        Ok(())
    })
}

/// Send one message of `len` bytes and wait until the kernel has taken all
/// of it. `msg` is borrowed for the call (NULL only with `len` 0).
///
/// Refused with nothing sent: a message over the maximum message size
/// (`TCPCHAT_STATUS_MESSAGE_TOO_LARGE`), or containing `\n` in line framing
/// (`TCPCHAT_STATUS_INVALID_ARGUMENT`). Other errors: `TCPCHAT_STATUS_TIMEOUT`
/// (write timeout), `TCPCHAT_STATUS_CLOSED`, `TCPCHAT_STATUS_CONNECTION_RESET`,
/// `TCPCHAT_STATUS_CANCELLED`. Never raises SIGPIPE.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_send(conn: *mut tcpchat_conn, msg: *const u8, len: usize) -> Status {
    guard(|| {
        let msg = arg_bytes(msg, len, "msg")?;
        with_conn(conn, |c| c.send(msg))
    })
}

/// Send `count` messages with as few system calls as possible: message `i`
/// is `lens[i]` bytes at `msgs[i]`. All arrays are borrowed for the call.
///
/// All or nothing on refusal: if any message is refused (too large, or a
/// newline in line framing), none is sent and the last error message names
/// its index.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_send_many(
    conn: *mut tcpchat_conn,
    msgs: *const *const u8,
    lens: *const usize,
    count: usize,
) -> Status {
    guard(|| {
        let (ptrs, lens): (&[*const u8], &[usize]) = if count == 0 {
            (&[], &[])
        } else {
            arg_nonnull(msgs, "msgs")?;
            arg_nonnull(lens, "lens")?;
            (std::slice::from_raw_parts(msgs, count), std::slice::from_raw_parts(lens, count))
        };
        // Check every message first (nothing allocated on the way: the
        // message naming the bad index is only formatted on failure), then
        // hand the messages to send_many as an iterator, without collecting
        // them into a Vec.
        for (i, (&p, &n)) in ptrs.iter().zip(lens).enumerate() {
            if (p.is_null() && n != 0) || n > isize::MAX as usize {
                arg_bytes(p, n, &format!("msgs[{i}]"))?;
            }
        }
        let parts = ptrs.iter().zip(lens).map(|(&p, &n)| {
            if p.is_null() {
                &[][..]
            } else {
                // SAFETY: checked above: non-NULL and within isize::MAX; the
                // caller guarantees `n` readable bytes at `p` for the call.
                std::slice::from_raw_parts(p, n)
            }
        });
        with_conn(conn, |c| c.send_many(parts))
    })
}

/// Send `count` messages packed back to back in `data` (`data_len` bytes):
/// message `i` is the next `lens[i]` bytes. The lengths must add up to
/// `data_len` exactly. One call carries a whole batch (this is what the
/// Python binding's `send_many` uses). Same rules as `tcpchat_conn_send_many`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_send_packed(
    conn: *mut tcpchat_conn,
    data: *const u8,
    data_len: usize,
    lens: *const usize,
    count: usize,
) -> Status {
    guard(|| {
        let data = arg_bytes(data, data_len, "data")?;
        let lens: &[usize] = if count == 0 {
            &[]
        } else {
            arg_nonnull(lens, "lens")?;
            std::slice::from_raw_parts(lens, count)
        };
        let total = lens.iter().try_fold(0usize, |a, &n| a.checked_add(n));
        if total != Some(data.len()) {
            return Err(Error::invalid(format!(
                "the {count} lengths do not add up to data_len {}",
                data.len()
            )));
        }
        let mut rest = data;
        let parts = lens.iter().map(|&n| {
            let (m, r) = rest.split_at(n);
            rest = r;
            m
        });
        with_conn(conn, |c| c.send_many(parts))
    })
}

/// Queue one message without sending it; `tcpchat_conn_flush()` sends
/// everything queued. Refuses the same messages as `tcpchat_conn_send()`.
/// `msg` is copied.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_queue(conn: *mut tcpchat_conn, msg: *const u8, len: usize) -> Status {
    guard(|| {
        let msg = arg_bytes(msg, len, "msg")?;
        with_conn(conn, |c| c.queue(msg))
    })
}

/// Send everything queued with `tcpchat_conn_queue()`. On a timeout the
/// unsent rest stays queued.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_flush(conn: *mut tcpchat_conn) -> Status {
    guard(|| with_conn(conn, |c| c.flush()))
}

/// Receive the next message into the caller's buffer `buf` of `cap` bytes,
/// waiting up to the read timeout.
///
/// * `TCPCHAT_STATUS_OK`: the message is in `buf` and its length in `*out_len`.
/// * `TCPCHAT_STATUS_BUFFER_TOO_SMALL`: the message does not fit; it stays
///   queued, nothing is written to `buf`, and `*out_len` is the size it
///   needs. Call again with a big enough buffer (`buf` may be NULL with
///   `cap` 0 to ask for the size).
/// * `TCPCHAT_STATUS_CLOSED`: the peer has closed and every message it sent
///   has been received. `*out_len` is 0.
/// * `TCPCHAT_STATUS_TIMEOUT`: no message within the read timeout; the
///   connection stays usable.
/// * `TCPCHAT_STATUS_MESSAGE_TOO_LARGE` / `TCPCHAT_STATUS_PROTOCOL`: the peer
///   broke the format; the connection has been closed.
/// * `TCPCHAT_STATUS_CANCELLED`, `TCPCHAT_STATUS_INTERRUPTED` (a signal
///   handler ran; nothing lost, call again), `TCPCHAT_STATUS_CONNECTION_RESET`.
///
/// The library allocates nothing per message. `out_len` must not be NULL.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_recv(
    conn: *mut tcpchat_conn,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Status {
    guard(|| {
        arg_nonnull(out_len, "out_len")?;
        let buf = arg_bytes_mut(buf, cap, "buf")?;
        received(with_conn(conn, |c| c.recv_into(buf)), out_len)
    })
}

/// The C result of a receive into a caller's buffer: the length on success,
/// 0 and `CLOSED` at end of stream, the size needed on `BUFFER_TOO_SMALL`.
///
/// # Safety
/// `out_len` must be valid for a write.
unsafe fn received(r: Result<Option<usize>>, out_len: *mut usize) -> Result<()> {
    match r {
        Ok(Some(n)) => {
            out_len.write(n);
            Ok(())
        }
        Ok(None) => {
            out_len.write(0);
            Err(Error::Closed("the peer closed the connection".into()))
        }
        Err(Error::BufferTooSmall { needed, capacity }) => {
            out_len.write(needed);
            Err(Error::BufferTooSmall { needed, capacity })
        }
        Err(e) => Err(e),
    }
}

/// Receive up to `max_msgs` messages in one call, packed back to back into
/// `buf` (`cap` bytes), with message `i`'s length in `lens[i]` and the count
/// in `*out_count`. Waits (up to the read timeout) for the first message,
/// then takes every further one already received without waiting, stopping
/// before one that would not fit.
///
/// Returns `TCPCHAT_STATUS_CLOSED` with `*out_count` 0 when the peer has
/// closed and all its messages were received, and
/// `TCPCHAT_STATUS_BUFFER_TOO_SMALL` when even the first message does not
/// fit: it stays queued, `*out_count` is 0 and `lens[0]` is the size it
/// needs. Other errors as `tcpchat_conn_recv()`. `lens` must hold
/// `max_msgs` entries; `out_count` must not be NULL.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_recv_many(
    conn: *mut tcpchat_conn,
    buf: *mut u8,
    cap: usize,
    lens: *mut usize,
    max_msgs: usize,
    out_count: *mut usize,
) -> Status {
    guard(|| {
        arg_nonnull(out_count, "out_count")?;
        if max_msgs == 0 {
            return Err(Error::invalid("max_msgs must be at least 1"));
        }
        arg_nonnull(lens, "lens")?;
        let lens = std::slice::from_raw_parts_mut(lens, max_msgs);
        let buf = arg_bytes_mut(buf, cap, "buf")?;
        let mut used = 0usize;
        let mut too_big = None;
        let n = with_conn(conn, |c| {
            let mut i = 0usize;
            c.recv_batch(max_msgs, |m| {
                if m.len() > buf.len() - used {
                    if i == 0 {
                        too_big = Some(m.len());
                    }
                    return false;
                }
                buf[used..used + m.len()].copy_from_slice(m);
                used += m.len();
                lens[i] = m.len();
                i += 1;
                true
            })
        })?;
        out_count.write(n);
        if let Some(needed) = too_big {
            lens[0] = needed;
            return Err(Error::BufferTooSmall { needed, capacity: cap });
        }
        if n == 0 {
            return Err(Error::Closed("the peer closed the connection".into()));
        }
        Ok(())
    })
}

/// Set how long a receive waits, in milliseconds (0 = for ever).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_set_read_timeout_ms(conn: *mut tcpchat_conn, ms: u64) -> Status {
    guard(|| with_conn(conn, |c| c.set_read_timeout((ms > 0).then(|| Duration::from_millis(ms)))))
}

/// Set how long a send waits for the peer to make room, in milliseconds (0 = for ever).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_set_write_timeout_ms(conn: *mut tcpchat_conn, ms: u64) -> Status {
    guard(|| with_conn(conn, |c| c.set_write_timeout((ms > 0).then(|| Duration::from_millis(ms)))))
}

/// Write the peer's address as a NUL-terminated string such as
/// `"127.0.0.1:5000"` or `"[::1]:5000"` into `buf` (`len` bytes;
/// `TCPCHAT_ADDR_MAX` always suffices), and its length without the NUL into
/// `*out_len` (if not NULL). Too small a buffer gives
/// `TCPCHAT_STATUS_BUFFER_TOO_SMALL` with the size needed in `*out_len`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_peer_addr(
    conn: *mut tcpchat_conn,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Status {
    guard(|| {
        let addr = with_conn(conn, |c| Ok(c.peer_addr()))?;
        write_string(&addr.to_string(), buf, len, out_len)
    })
}

/// Write this end's address, as `tcpchat_conn_peer_addr()` does the peer's.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_local_addr(
    conn: *mut tcpchat_conn,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Status {
    guard(|| {
        let addr = with_conn(conn, |c| Ok(c.local_addr()))?;
        write_string(&addr.to_string(), buf, len, out_len)
    })
}

/// Cancel the connection's blocking calls, from any thread: a call blocked
/// in a receive or send returns `TCPCHAT_STATUS_CANCELLED` at once, and so
/// does every later call on this connection that has to wait (cancellation
/// is sticky; close and free it next). A later call that need not wait (a
/// message already received, a send the kernel takes at once) still
/// succeeds. Safe to call at any time, any number of times.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_cancel(conn: *mut tcpchat_conn) -> Status {
    guard(|| {
        let handle = arc_from_c(conn, "conn")?;
        handle.cancel.cancel();
        Ok(())
    })
}

/// Send what is queued, then shut down the write half: the peer reads end
/// of stream after our last message, and this end can still receive.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_shutdown_write(conn: *mut tcpchat_conn) -> Status {
    guard(|| with_conn(conn, |c| c.shutdown_write()))
}

/// Run one turn-based chat session on the connection as `role`
/// (`TCPCHAT_ROLE_SERVER` sends first, `TCPCHAT_ROLE_CLIENT` receives first)
/// until it ends: either side sends the end word, or the peer closes. The
/// connection stays open; close or free it afterwards.
///
/// `callbacks` is borrowed for the call; its `next_message` and `on_message`
/// must not be NULL (`on_connect` and `on_end` are not used here). The
/// callbacks run on the calling thread; they must not call `tcpchat_conn_*`
/// functions on `conn` other than `tcpchat_conn_cancel()` and
/// `tcpchat_conn_free()` (`TCPCHAT_STATUS_INVALID_ARGUMENT`). How the
/// session ended is written to `*out_end` (if not NULL) on success.
///
/// Errors: those of send and receive, and `TCPCHAT_STATUS_CALLBACK` when a
/// callback returned non-zero.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_run_session(
    conn: *mut tcpchat_conn,
    role: tcpchat_role,
    callbacks: *const tcpchat_chat_callbacks,
    out_end: *mut SessionEnd,
) -> Status {
    guard(|| {
        let role = role_from_c(role)?;
        let mut handler = CallbackHandler::new(callbacks)?;
        let end = with_conn(conn, |c| crate::run_session(c, role, &mut handler))?;
        write_out(out_end, end);
        Ok(())
    })
}

/// Close the connection gracefully: send what is queued, shut down the write
/// half, read and discard what the peer still sends until it closes (for at
/// most the close timeout), then close the socket. Nothing sent before the
/// close is lost and no RST is provoked. The handle stays valid (later calls
/// return `TCPCHAT_STATUS_CLOSED`) and must still be freed. Closing twice is
/// harmless. Returns the error of the final send, if any.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_close(conn: *mut tcpchat_conn) -> Status {
    guard(|| {
        let handle = arc_from_c(conn, "conn")?;
        let taken = handle.lock()?.guard.take();
        match taken {
            Some(c) => c.close(),
            None => Ok(()),
        }
    })
}

/// Free a connection, closing it gracefully first if `tcpchat_conn_close()`
/// was not called (see there). NULL is ignored. The handle must not be used
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_free(conn: *mut tcpchat_conn) {
    guard_value((), || arc_free(conn))
}

/// Write into `*out_fd` a file descriptor for the program's own event loop
/// (`poll`, `epoll`, `select`, Python's `loop.add_reader`), created on first
/// use.
///
/// The descriptor is level-triggered readable while
/// `tcpchat_conn_try_recv()` can return without blocking (a message, end of
/// stream, or an error), and, while output is queued, while
/// `tcpchat_conn_try_flush()` can make progress. A readable descriptor may
/// still find only part of a message: `tcpchat_conn_try_recv()` then returns
/// `TCPCHAT_STATUS_WOULD_BLOCK` and the descriptor stops being readable
/// until more arrives. Poll it for reading only (never for writing).
///
/// The descriptor belongs to the connection: never close it yourself; it is
/// closed with the connection (free), after which it must not be polled.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_fd(conn: *mut tcpchat_conn, out_fd: *mut i32) -> Status {
    guard(|| {
        arg_nonnull(out_fd, "out_fd")?;
        let fd = with_conn(conn, |c| c.poll_fd())?;
        out_fd.write(fd);
        Ok(())
    })
}

/// Receive the next message without waiting, with the buffer rules and
/// results of `tcpchat_conn_recv()`, plus `TCPCHAT_STATUS_WOULD_BLOCK` when
/// no complete message has arrived yet (wait for `tcpchat_conn_fd()` to be
/// readable, then call again). Also sends queued output when it can.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_try_recv(
    conn: *mut tcpchat_conn,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Status {
    guard(|| {
        arg_nonnull(out_len, "out_len")?;
        let buf = arg_bytes_mut(buf, cap, "buf")?;
        received(with_conn(conn, |c| c.try_recv_into(buf)), out_len)
    })
}

/// Send one message without waiting for the peer. The message is accepted
/// (`TCPCHAT_STATUS_OK`) and sent as far as the socket takes it now, the
/// rest staying queued for `tcpchat_conn_try_flush()`; or, when earlier
/// output is still queued and cannot move, it is not accepted and the call
/// returns `TCPCHAT_STATUS_WOULD_BLOCK`. Refuses the same messages as
/// `tcpchat_conn_send()`. `msg` is copied.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_try_send(conn: *mut tcpchat_conn, msg: *const u8, len: usize) -> Status {
    guard(|| {
        let msg = arg_bytes(msg, len, "msg")?;
        with_conn(conn, |c| c.try_send(msg))
    })
}

/// Send as much queued output as the socket takes now, without waiting:
/// `TCPCHAT_STATUS_OK` when all of it went, `TCPCHAT_STATUS_WOULD_BLOCK`
/// when some is still queued (the descriptor of `tcpchat_conn_fd()` becomes
/// readable when the socket can take more).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_try_flush(conn: *mut tcpchat_conn) -> Status {
    guard(|| with_conn(conn, |c| c.try_flush()))
}
