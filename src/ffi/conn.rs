//! `tcpchat_conn`: one framed connection.

use std::ffi::c_char;
use std::net::SocketAddr;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::conn::{Conn, PollAccess, RecvHalf, SendHalf};
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
/// Thread safety: a connection is full-duplex. One thread may receive
/// (`tcpchat_conn_recv`, `tcpchat_conn_recv_many`, `tcpchat_conn_try_recv`)
/// while another sends (`tcpchat_conn_send`, `tcpchat_conn_send_many`,
/// `tcpchat_conn_send_packed`, `tcpchat_conn_queue`, `tcpchat_conn_flush`,
/// `tcpchat_conn_try_send`, `tcpchat_conn_try_flush`,
/// `tcpchat_conn_shutdown_write`) on the same handle, and neither ever
/// waits for the other. Two receiving calls at once (or two sending calls)
/// are serialised: the second waits for the first, for at most its own
/// timeout (read timeout for receives, write timeout for sends;
/// `TCPCHAT_STATUS_TIMEOUT` after that), while the `try_*` calls never wait
/// at all and return `TCPCHAT_STATUS_WOULD_BLOCK` instead.
/// `tcpchat_conn_cancel()`, `tcpchat_conn_close()`, `tcpchat_conn_free()`,
/// the timeout setters, the address getters and `tcpchat_conn_fd()` may be
/// called from any thread at any time: a close or free from one thread wakes
/// the calls blocked on other threads with `TCPCHAT_STATUS_LOCALLY_CLOSED`. The
/// handle must not be used after it is freed. `tcpchat_conn_run_session()`
/// uses both sides: it waits for both and holds both while it runs.
///
/// Callbacks: a callback of `tcpchat_conn_run_session()` must not send,
/// receive, flush, shut down or close on the connection whose session is
/// running; such a call is refused with `TCPCHAT_STATUS_INVALID_ARGUMENT`.
/// It may call `tcpchat_conn_cancel()`, `tcpchat_conn_free()`, the address
/// getters and the timeout setters.
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
    rx: Side<RecvHalf>,
    tx: Side<SendHalf>,
    /// The timeouts the program set, applied at the start of each call
    /// (so setting one never waits for a call in progress); 0 = for ever.
    read_ms: AtomicU64,
    write_ms: AtomicU64,
    /// The timeouts last set on each half (touched only by the side's
    /// holder; `u64::MAX` = set to a remainder, set again next time).
    rx_applied_ms: AtomicU64,
    tx_applied_ms: AtomicU64,
    peer: SocketAddr,
    local: SocketAddr,
    closed: AtomicBool,
    poll: PollAccess,
    /// The configured maximum message size, checked before a caller's
    /// buffer is touched.
    max_message: usize,
}

impl tcpchat_conn {
    pub(crate) fn into_c(conn: Conn) -> *mut tcpchat_conn {
        let ms = |t: Option<Duration>| t.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        let (read_ms, write_ms) = (ms(conn.read_timeout()), ms(conn.write_timeout()));
        let (peer, local, cancel, poll) = (conn.peer_addr(), conn.local_addr(), conn.canceller(), conn.poll_access());
        let max_message = conn.config().max_message_size;
        let (rx, tx) = conn.split();
        arc_into_c(tcpchat_conn {
            cancel,
            rx: Side::new(rx),
            tx: Side::new(tx),
            read_ms: AtomicU64::new(read_ms),
            write_ms: AtomicU64::new(write_ms),
            rx_applied_ms: AtomicU64::new(read_ms),
            tx_applied_ms: AtomicU64::new(write_ms),
            peer,
            local,
            closed: AtomicBool::new(false),
            poll,
            max_message,
        })
    }

    fn read_timeout(&self) -> Option<Duration> {
        timeout_of(self.read_ms.load(Ordering::Relaxed))
    }

    fn write_timeout(&self) -> Option<Duration> {
        timeout_of(self.write_ms.load(Ordering::Relaxed))
    }

    /// Run `f` on the receiving half, waiting (up to the read timeout) for
    /// another thread's receive, or not at all when `wait` is false.
    /// The whole call, the wait for the side included, is bounded by the
    /// one timeout.
    #[inline]
    fn with_rx<T>(&self, wait: bool, f: impl FnOnce(&mut RecvHalf) -> Result<T>) -> Result<T> {
        let timeouts = Timeouts { wanted: &self.read_ms, applied: &self.rx_applied_ms };
        self.with_side(&self.rx, timeouts, "receiving", wait, RecvHalf::set_read_timeout, f)
    }

    /// Run `f` on the sending half, as [`tcpchat_conn::with_rx`].
    #[inline]
    fn with_tx<T>(&self, wait: bool, f: impl FnOnce(&mut SendHalf) -> Result<T>) -> Result<T> {
        let timeouts = Timeouts { wanted: &self.write_ms, applied: &self.tx_applied_ms };
        self.with_side(&self.tx, timeouts, "sending", wait, SendHalf::set_write_timeout, f)
    }

    /// The one path of [`tcpchat_conn::with_rx`] and [`tcpchat_conn::with_tx`]:
    /// borrow the side's half, give it the program's timeout (only when it
    /// changed, or after a wait what is left of it: the common call pays one
    /// comparison), run `f`.
    #[inline]
    fn with_side<H, T>(
        &self,
        side: &Side<H>,
        timeouts: Timeouts<'_>,
        what: &str,
        wait: bool,
        set_timeout: fn(&mut H, Option<Duration>) -> Result<()>,
        f: impl FnOnce(&mut H) -> Result<T>,
    ) -> Result<T> {
        let ms = timeouts.wanted.load(Ordering::Relaxed);
        let mut waited = None;
        let mut held = side.acquire(wait.then_some(ms), &self.cancel, what, &mut waited, false)?;
        let half = held.value()?;
        if waited.is_some() {
            set_timeout(half, remaining(timeout_of(ms), waited))?;
            timeouts.applied.store(u64::MAX, Ordering::Relaxed);
        } else if timeouts.applied.load(Ordering::Relaxed) != ms {
            set_timeout(half, timeout_of(ms))?;
            timeouts.applied.store(ms, Ordering::Relaxed);
        }
        f(half)
    }

    /// Refuse a message over the size limit from its length alone, before
    /// a byte of the caller's buffer is read (a wrong length from C must not
    /// make the library read past the buffer or try a huge allocation).
    fn check_len(&self, len: usize, what: &str) -> Result<()> {
        if len > self.max_message {
            return Err(Error::MessageTooLarge {
                size: len as u64,
                max: self.max_message,
                context: format!(" ({what} refused on send; nothing sent)"),
            });
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::LocallyClosed("the connection was closed with tcpchat_conn_close".into()));
        }
        Ok(())
    }

    /// Wake every waiter: blocked I/O through the canceller (`closing`),
    /// lock waiters through the condition variables.
    fn wake_all(&self) {
        self.rx.notify();
        self.tx.notify();
    }

    /// Close gracefully from any thread: wake the other threads' calls, take
    /// both halves once they are handed back, close. Refused from a callback
    /// of a call running on this connection.
    fn close(&self) -> Result<()> {
        let me = this_thread();
        if self.rx.held_by(me) || self.tx.held_by(me) || crate::log::in_logger() {
            return Err(reentrant());
        }
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.cancel.wake_for_close();
        self.wake_all();
        let rx = self.rx.take_for_close();
        let tx = self.tx.take_for_close();
        match (rx, tx) {
            (Some(rx), Some(mut tx)) => {
                // No call is left: the close itself may wait for the peer,
                // and its final flush gets the write timeout set last.
                self.cancel.end_closing();
                tx.set_write_timeout(self.write_timeout())?;
                rx.reunite(tx)?.close()
            }
            _ => Ok(()),
        }
    }
}

/// A side's timeout: what the program set (ms, 0 = none) and what was last
/// set on its half.
struct Timeouts<'a> {
    wanted: &'a AtomicU64,
    applied: &'a AtomicU64,
}

/// What is left of `timeout` after waiting for another thread's call since
/// `waited` (at least a millisecond, so it stays a timeout).
fn remaining(timeout: Option<Duration>, waited: Option<Instant>) -> Option<Duration> {
    match (timeout, waited) {
        (Some(t), Some(since)) => Some(t.saturating_sub(since.elapsed()).max(Duration::from_millis(1))),
        (t, _) => t,
    }
}

/// Refuse an element count whose array could not exist (more than
/// `isize::MAX` bytes), before a slice of it is made.
fn arg_count<T>(count: usize, what: &str) -> Result<()> {
    let fits = matches!(count.checked_mul(std::mem::size_of::<T>()), Some(b) if b <= isize::MAX as usize);
    if !fits {
        return Err(Error::invalid(format!("{what} {count} is too large")));
    }
    Ok(())
}

fn ms_of(t: Option<Duration>) -> u64 {
    t.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
}

fn timeout_of(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn reentrant() -> Error {
    Error::invalid(
        "a tcpchat_conn_* function was called on a connection from a callback of a call \
         still running on that connection; return from the callback first",
    )
}

thread_local! {
    static THREAD_TOKEN: u8 = const { 0 };
}

/// A non-zero number unique to the calling thread among running threads.
fn this_thread() -> usize {
    THREAD_TOKEN.with(|t| t as *const u8 as usize)
}

/// The holder token of a call that runs no program code while it holds a
/// side (thread tokens are addresses, never 1).
const ANONYMOUS: usize = 1;

/// One side (receiving or sending) of a C connection: the half, lent to
/// one call at a time.
///
/// The fast path, a call finding the side free, is one compare-and-swap to
/// take it and one store (plus a load of `waiters`) to give it back: no
/// mutex, no system call, nothing moved. Only a call that finds the side
/// busy takes the mutex and waits on the condition variable, up to its
/// timeout; a `try_*` call never waits. The half lives in an `UnsafeCell`
/// reached only by the thread whose token is in `holder`.
struct Side<T> {
    /// The thread whose call has the half ([`this_thread`]; 0 = none).
    holder: AtomicUsize,
    /// Calls waiting for the side (a notify is made only when some are).
    waiters: AtomicUsize,
    /// `None` for good once the connection is closed.
    value: UnsafeCell<Option<T>>,
    park: Mutex<()>,
    cv: Condvar,
}

// SAFETY: `value` is only reached by the one thread that won `holder` (a
// lock with acquire/release ordering), so sharing a Side shares a T between
// threads only one at a time, which `T: Send` allows.
unsafe impl<T: Send> Sync for Side<T> {}

impl<T> Side<T> {
    fn new(value: T) -> Side<T> {
        Side {
            holder: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            value: UnsafeCell::new(Some(value)),
            park: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    fn held_by(&self, me: usize) -> bool {
        self.holder.load(Ordering::SeqCst) == me
    }

    #[inline]
    fn try_take(&self, me: usize) -> bool {
        self.holder.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Wake the calls waiting for this side (a cancel or a close came, or
    /// the side was handed back).
    #[inline]
    fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify_slow();
        }
    }

    #[cold]
    fn notify_slow(&self) {
        let _guard = self.park.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }

    /// Borrow the half for one call. `wait`: `None` = never wait (`try_*`),
    /// `Some(ms)` = wait for another thread's call up to `ms` milliseconds
    /// (`Some(0)` = for ever). A cancel or a close ends the wait. `waited`
    /// is set to when the wait began, if the call had to wait.
    ///
    /// `named`: hold the side under this thread's own token, so that a
    /// callback running inside the call (a session's) is refused instead of
    /// deadlocking. Other calls run no program code while they hold the
    /// side, so they take it under [`ANONYMOUS`], which needs no
    /// thread-local look-up on the fast path.
    #[inline]
    fn acquire(
        &self,
        wait: Option<u64>,
        cancel: &Canceller,
        what: &str,
        waited: &mut Option<Instant>,
        named: bool,
    ) -> Result<Held<'_, T>> {
        if !named && self.try_take(ANONYMOUS) {
            // No closing check here: a blocking wait sees a close at once,
            // and the halves check it before any I/O.
            return self.lend(cancel, false);
        }
        self.acquire_slow(wait, cancel, what, waited, named)
    }

    #[inline(never)]
    fn acquire_slow(
        &self,
        wait: Option<u64>,
        cancel: &Canceller,
        what: &str,
        waited: &mut Option<Instant>,
        named: bool,
    ) -> Result<Held<'_, T>> {
        let me = this_thread();
        if self.held_by(me) || crate::log::in_logger() {
            // A session callback, or a log callback that runs inside a call
            // on this connection (which may hold this side under ANONYMOUS):
            // waiting would wait for ourselves.
            return Err(reentrant());
        }
        let token = if named { me } else { ANONYMOUS };
        if self.try_take(token) {
            return self.lend(cancel, false);
        }
        let Some(timeout) = wait.map(timeout_of) else {
            if cancel.is_closing() {
                return Err(closing());
            }
            return Err(Error::WouldBlock(format!("another thread is {what} on this connection")));
        };
        let started = Instant::now();
        *waited = Some(started);
        let deadline = timeout.map(|t| started + t);
        let mut guard = self.park.lock().unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if self.try_take(token) {
                break Ok(());
            }
            if cancel.is_closing() {
                break Err(closing());
            }
            if cancel.is_cancelled() {
                break Err(Error::Cancelled(format!("waiting for another thread {what} on this connection")));
            }
            match deadline {
                None => guard = self.cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Err(Error::Timeout {
                            op: format!("waiting for another thread {what} on this connection"),
                            after: timeout.unwrap_or_default(),
                        });
                    }
                    guard = self.cv.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        result?;
        self.lend(cancel, true)
    }

    /// The side is ours: lend the half, or refuse when the connection is
    /// closed or (when `check_closing`) being closed.
    #[inline]
    fn lend(&self, cancel: &Canceller, check_closing: bool) -> Result<Held<'_, T>> {
        let held = Held { side: self };
        if check_closing && cancel.is_closing() {
            return Err(closing());
        }
        // SAFETY: this thread won `holder`, so no other thread reaches `value`
        // until `held` gives it back.
        if unsafe { (*self.value.get()).is_none() } {
            return Err(Error::LocallyClosed("the connection was closed with tcpchat_conn_close".into()));
        }
        Ok(held)
    }

    /// Wait until no call has the half, then take it for good.
    fn take_for_close(&self) -> Option<T> {
        let me = this_thread();
        if !self.try_take(me) {
            let mut guard = self.park.lock().unwrap_or_else(|e| e.into_inner());
            self.waiters.fetch_add(1, Ordering::SeqCst);
            while !self.try_take(me) {
                guard = self.cv.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
        let held = Held { side: self };
        // SAFETY: as in `lend`: this thread holds the side.
        let value = unsafe { (*self.value.get()).take() };
        drop(held);
        value
    }
}

fn closing() -> Error {
    Error::LocallyClosed("the connection is being closed by another thread".into())
}

/// A half lent to one call; handed back (and a waiter woken) on drop.
struct Held<'a, T> {
    side: &'a Side<T>,
}

impl<T> Held<'_, T> {
    fn value(&mut self) -> Result<&mut T> {
        // SAFETY: a Held exists only while this thread holds the side;
        // `&mut self` keeps the borrow unique.
        unsafe { (*self.side.value.get()).as_mut() }
            .ok_or_else(|| Error::LocallyClosed("the connection was closed with tcpchat_conn_close".into()))
    }

    /// Take the half out for a while (a session reunites both halves).
    fn take(&mut self) -> Option<T> {
        // SAFETY: as in `value`.
        unsafe { (*self.side.value.get()).take() }
    }

    /// Put back what `take` took.
    fn put(&mut self, v: T) {
        // SAFETY: as in `value`.
        unsafe { *self.side.value.get() = Some(v) }
    }
}

impl<T> Drop for Held<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.side.holder.store(0, Ordering::SeqCst);
        self.side.notify();
    }
}

/// Run `f` on the receiving half of the connection behind `p`.
///
/// # Safety
/// `p` must be NULL or a live connection handle.
unsafe fn with_rx<T>(p: *const tcpchat_conn, wait: bool, f: impl FnOnce(&mut RecvHalf) -> Result<T>) -> Result<T> {
    let handle: Arc<tcpchat_conn> = arc_from_c(p, "conn")?;
    handle.with_rx(wait, f)
}

/// Run `f` on the sending half of the connection behind `p`.
///
/// # Safety
/// `p` must be NULL or a live connection handle.
unsafe fn with_tx<T>(p: *const tcpchat_conn, wait: bool, f: impl FnOnce(&mut SendHalf) -> Result<T>) -> Result<T> {
    let handle: Arc<tcpchat_conn> = arc_from_c(p, "conn")?;
    handle.with_tx(wait, f)
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
        let port = arg_port(port, 1)?;
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
/// (write timeout), `TCPCHAT_STATUS_CLOSED` (the peer has gone), `TCPCHAT_STATUS_LOCALLY_CLOSED`, `TCPCHAT_STATUS_CONNECTION_RESET`,
/// `TCPCHAT_STATUS_CANCELLED`. Never raises SIGPIPE.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_send(conn: *mut tcpchat_conn, msg: *const u8, len: usize) -> Status {
    guard(|| {
        let handle: Arc<tcpchat_conn> = arc_from_c(conn, "conn")?;
        handle.check_len(len, "msg")?;
        let msg = arg_bytes(msg, len, "msg")?;
        handle.with_tx(true, |c| c.send(msg))
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
            arg_count::<usize>(count, "count")?;
            (std::slice::from_raw_parts(msgs, count), std::slice::from_raw_parts(lens, count))
        };
        // Check every message first (nothing allocated on the way: the
        // message naming the bad index is only formatted on failure), then
        // hand the messages to send_many as an iterator, without collecting
        // them into a Vec.
        let handle: Arc<tcpchat_conn> = arc_from_c(conn, "conn")?;
        for (i, (&p, &n)) in ptrs.iter().zip(lens).enumerate() {
            if n > handle.max_message {
                handle.check_len(n, &format!("msgs[{i}]"))?;
            }
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
        handle.with_tx(true, |c| c.send_many(parts))
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
            arg_count::<usize>(count, "count")?;
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
        with_tx(conn, true, |c| c.send_many(parts))
    })
}

/// Queue one message without sending it; `tcpchat_conn_flush()` sends
/// everything queued. Refuses the same messages as `tcpchat_conn_send()`.
/// `msg` is copied.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_queue(conn: *mut tcpchat_conn, msg: *const u8, len: usize) -> Status {
    guard(|| {
        let handle: Arc<tcpchat_conn> = arc_from_c(conn, "conn")?;
        handle.check_len(len, "msg")?;
        let msg = arg_bytes(msg, len, "msg")?;
        handle.with_tx(true, |c| c.queue(msg))
    })
}

/// Send everything queued with `tcpchat_conn_queue()`. On a timeout the
/// unsent rest stays queued.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_flush(conn: *mut tcpchat_conn) -> Status {
    guard(|| with_tx(conn, true, |c| c.flush()))
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
        received(with_rx(conn, true, |c| c.recv_into(buf)), out_len)
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
        arg_count::<usize>(max_msgs, "max_msgs")?;
        let lens = std::slice::from_raw_parts_mut(lens, max_msgs);
        let buf = arg_bytes_mut(buf, cap, "buf")?;
        let mut used = 0usize;
        let mut too_big = None;
        let n = with_rx(conn, true, |c| {
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
    guard(|| {
        let handle = arc_from_c(conn, "conn")?;
        handle.check_open()?;
        handle.read_ms.store(ms, Ordering::Relaxed);
        Ok(())
    })
}

/// Set how long a send waits for the peer to make room, in milliseconds (0 = for ever).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_set_write_timeout_ms(conn: *mut tcpchat_conn, ms: u64) -> Status {
    guard(|| {
        let handle = arc_from_c(conn, "conn")?;
        handle.check_open()?;
        handle.write_ms.store(ms, Ordering::Relaxed);
        Ok(())
    })
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
        let handle = arc_from_c(conn, "conn")?;
        handle.check_open()?;
        let addr = handle.peer;
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
        let handle = arc_from_c(conn, "conn")?;
        handle.check_open()?;
        let addr = handle.local;
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
        handle.wake_all();
        Ok(())
    })
}

/// Send what is queued, then shut down the write half: the peer reads end
/// of stream after our last message, and this end can still receive.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_shutdown_write(conn: *mut tcpchat_conn) -> Status {
    guard(|| with_tx(conn, true, |c| c.shutdown_write()))
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
        let handle: Arc<tcpchat_conn> = arc_from_c(conn, "conn")?;
        let (rt, wt) = (handle.read_timeout(), handle.write_timeout());
        let mut rx = handle.rx.acquire(Some(ms_of(rt)), &handle.cancel, "receiving", &mut None, true)?;
        let mut tx = handle.tx.acquire(Some(ms_of(wt)), &handle.cancel, "sending", &mut None, true)?;
        let (Some(r), Some(t)) = (rx.take(), tx.take()) else {
            return Err(Error::Internal("a connection half was missing".into()));
        };
        let mut whole = r.reunite(t)?;
        whole.set_read_timeout(rt)?;
        whole.set_write_timeout(wt)?;
        let end = crate::run_session(&mut whole, role, &mut handler);
        let (r, t) = whole.split();
        rx.put(r);
        tx.put(t);
        // The session set its own timeouts on the halves: the next call sets
        // the program's again.
        handle.rx_applied_ms.store(u64::MAX, Ordering::Relaxed);
        handle.tx_applied_ms.store(u64::MAX, Ordering::Relaxed);
        let end = end?;
        write_out(out_end, end);
        Ok(())
    })
}

/// Close the connection gracefully: send what is queued, shut down the write
/// half, read and discard what the peer still sends until it closes (for at
/// most the close timeout), then close the socket. Nothing sent before the
/// close is lost and no RST is provoked. The handle stays valid (later calls
/// return `TCPCHAT_STATUS_LOCALLY_CLOSED`) and must still be freed. Closing twice is
/// harmless. Returns the error of the final send, if any.
///
/// Any thread may call it, also while other threads are blocked in calls on
/// this connection: those calls return `TCPCHAT_STATUS_LOCALLY_CLOSED` at once, and
/// the close proceeds when they have returned. Refused with
/// `TCPCHAT_STATUS_INVALID_ARGUMENT` from a callback of a call running on
/// this connection.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_close(conn: *mut tcpchat_conn) -> Status {
    guard(|| {
        let handle = arc_from_c(conn, "conn")?;
        handle.close()
    })
}

/// Free a connection, closing it gracefully first if `tcpchat_conn_close()`
/// was not called (see there: calls blocked on other threads are woken with
/// `TCPCHAT_STATUS_LOCALLY_CLOSED`). NULL is ignored. The handle must not be used
/// afterwards. From a callback of a call running on this connection, the
/// close happens when that call returns.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_free(conn: *mut tcpchat_conn) {
    guard_value((), || {
        if conn.is_null() {
            return;
        }
        // Close first (waking the calls of other threads), unless called
        // from a callback of a call on this connection: that call holds the
        // connection, which closes when it returns and lets go.
        let _ = (*conn).close();
        arc_free(conn)
    })
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
/// closed when the connection is closed (`tcpchat_conn_close()` or
/// `tcpchat_conn_free()`): take it out of your event loop before either.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_fd(conn: *mut tcpchat_conn, out_fd: *mut i32) -> Status {
    guard(|| {
        arg_nonnull(out_fd, "out_fd")?;
        let handle = arc_from_c(conn, "conn")?;
        handle.check_open()?;
        let fd = handle.poll.fd()?;
        // Bring each side's part of the descriptor's state up to date; a
        // side busy on another thread does so when its call returns.
        if let Ok(mut h) = handle.rx.acquire(None, &handle.cancel, "receiving", &mut None, false) {
            if let Ok(half) = h.value() {
                half.sync_poll();
            }
        }
        if let Ok(mut h) = handle.tx.acquire(None, &handle.cancel, "sending", &mut None, false) {
            if let Ok(half) = h.value() {
                half.sync_poll();
            }
        }
        out_fd.write(fd);
        Ok(())
    })
}

/// Receive the next message without waiting, with the buffer rules and
/// results of `tcpchat_conn_recv()`, plus `TCPCHAT_STATUS_WOULD_BLOCK` when
/// no complete message has arrived yet (wait for `tcpchat_conn_fd()` to be
/// readable, then call again) or when another thread is in a receive on
/// this connection. Never waits, for anything.
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
        received(with_rx(conn, false, |c| c.try_recv_into(buf)), out_len)
    })
}

/// Send one message without waiting for the peer. The message is accepted
/// (`TCPCHAT_STATUS_OK`) and sent as far as the socket takes it now, the
/// rest staying queued for `tcpchat_conn_try_flush()`; or, when earlier
/// output is still queued and cannot move, or another thread is in a
/// sending call on this connection, it is not accepted and the call returns
/// `TCPCHAT_STATUS_WOULD_BLOCK`. Never waits, for anything. Refuses the same
/// messages as `tcpchat_conn_send()`. `msg` is copied.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_try_send(conn: *mut tcpchat_conn, msg: *const u8, len: usize) -> Status {
    guard(|| {
        let handle: Arc<tcpchat_conn> = arc_from_c(conn, "conn")?;
        handle.check_len(len, "msg")?;
        let msg = arg_bytes(msg, len, "msg")?;
        handle.with_tx(false, |c| c.try_send(msg))
    })
}

/// Send as much queued output as the socket takes now, without waiting:
/// `TCPCHAT_STATUS_OK` when all of it went, `TCPCHAT_STATUS_WOULD_BLOCK`
/// when some is still queued (the descriptor of `tcpchat_conn_fd()` becomes
/// readable when the socket can take more) or another thread is in a
/// sending call on this connection. Never waits, for anything.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_conn_try_flush(conn: *mut tcpchat_conn) -> Status {
    guard(|| with_tx(conn, false, |c| c.try_flush()))
}
