//! The few operating-system calls std does not offer: waiting on a socket
//! *and* a wake-up descriptor at once (`poll`), waiting for a program's
//! input while watching a socket for its peer's departure, an `eventfd` to wake such a
//! wait from another thread, vectored sends that never raise SIGPIPE, and
//! spawning library threads with signals blocked. This is the only module of
//! the core with `unsafe` code; each
//! block is a single libc call on descriptors this module owns or borrows.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An `eventfd` that, once signalled, stays readable for ever: every current
/// and future `poll` on it returns at once. Used for cancellation, which is
/// sticky.
#[derive(Debug)]
struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd has no pointer arguments; a non-negative result is a
        // new descriptor that we own from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        Ok(WakeFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to a descriptor we own. An
        // error (counter overflow, impossible here) leaves it readable anyway.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                std::mem::size_of::<u64>(),
            );
        }
    }
}

#[derive(Debug)]
struct CancelInner {
    flag: AtomicBool,
    /// Set while another thread closes the connection: the wake-up descriptor
    /// is signalled so blocked calls return, but this is not a cancel.
    closing: AtomicBool,
    wake: WakeFd,
}

/// A handle that stops blocking calls from another thread.
///
/// Cloning is cheap and every clone controls the same state. Cancellation is
/// sticky: once [`Canceller::cancel`] has been called, every blocking call
/// watching this canceller returns [`crate::Error::Cancelled`] at once, now
/// and later. Safe to use from any thread, including while the owner is
/// blocked.
#[derive(Clone, Debug)]
pub struct Canceller {
    inner: Arc<CancelInner>,
}

impl Canceller {
    /// A new, not yet cancelled, canceller. Costs one file descriptor.
    pub fn new() -> io::Result<Canceller> {
        Ok(Canceller {
            inner: Arc::new(CancelInner {
                flag: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                wake: WakeFd::new()?,
            }),
        })
    }

    /// Cancel: wake every blocked call that watches this canceller and make
    /// all later ones fail at once. Calling it again does nothing more.
    pub fn cancel(&self) {
        if !self.inner.flag.swap(true, Ordering::SeqCst) {
            self.inner.wake.signal();
        }
    }

    /// Whether [`Canceller::cancel`] has been called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.inner.wake.fd.as_raw_fd()
    }

    /// Wake every call blocked on this canceller because another thread is
    /// closing the connection: they return [`Ready::Cancelled`] and their
    /// owner, seeing [`Canceller::is_closing`], reports a closed connection.
    /// Not sticky in the way `cancel` is: [`Canceller::end_closing`] undoes it.
    pub(crate) fn wake_for_close(&self) {
        if !self.inner.closing.swap(true, Ordering::SeqCst) {
            self.inner.wake.signal();
        }
    }

    /// Whether [`Canceller::wake_for_close`] is in force.
    pub(crate) fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    /// Undo [`Canceller::wake_for_close`] once no other call waits, so that
    /// the graceful close itself can wait for the peer. A cancel that came
    /// meanwhile stays in force.
    pub(crate) fn end_closing(&self) {
        if !self.inner.closing.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live local from our own non-blocking
        // eventfd (resets its counter to zero).
        unsafe {
            libc::read(
                self.inner.wake.fd.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                std::mem::size_of::<u64>(),
            );
        }
        if self.inner.flag.load(Ordering::SeqCst) {
            self.inner.wake.signal();
        }
    }
}

/// A descriptor for an event loop's own poll (C `poll`/`epoll`, Python
/// asyncio): an epoll set holding the connection's socket and a "pending"
/// eventfd, so it is readable (level-triggered) while the socket has input
/// (or end of stream), while the library holds a complete message already
/// read from the socket, or, when output is queued, while the socket can
/// take more.
#[derive(Debug)]
pub(crate) struct PollFd {
    epoll: OwnedFd,
    pending: WakeFd,
    pending_set: bool,
    want_write: bool,
    socket: RawFd,
}

const SOCKET_TOKEN: u64 = 1;
const PENDING_TOKEN: u64 = 2;

fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: ev is a live local; the descriptors are owned by the caller.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl PollFd {
    pub(crate) fn new(socket: RawFd) -> io::Result<PollFd> {
        // SAFETY: no pointer arguments; a non-negative result is ours.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let pending = WakeFd::new()?;
        epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, socket, libc::EPOLLIN as u32, SOCKET_TOKEN)?;
        epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            pending.fd.as_raw_fd(),
            libc::EPOLLIN as u32,
            PENDING_TOKEN,
        )?;
        Ok(PollFd {
            epoll,
            pending,
            pending_set: false,
            want_write: false,
            socket,
        })
    }

    /// The descriptor to hand to the program's event loop.
    pub(crate) fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Say whether a complete message is waiting in the library's buffer.
    pub(crate) fn set_pending(&mut self, pending: bool) {
        if pending == self.pending_set {
            return;
        }
        if pending {
            self.pending.signal();
        } else {
            let mut v: u64 = 0;
            // SAFETY: reads 8 bytes into a live local from our own eventfd
            // (non-blocking: resets the counter to zero).
            unsafe {
                libc::read(
                    self.pending.fd.as_raw_fd(),
                    &mut v as *mut u64 as *mut libc::c_void,
                    std::mem::size_of::<u64>(),
                );
            }
        }
        self.pending_set = pending;
    }

    /// Say whether output is queued (then the descriptor is also readable
    /// while the socket can take more).
    pub(crate) fn set_want_write(&mut self, want: bool) -> io::Result<()> {
        if want == self.want_write {
            return Ok(());
        }
        let events = libc::EPOLLIN as u32 | if want { libc::EPOLLOUT as u32 } else { 0 };
        epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, self.socket, events, SOCKET_TOKEN)?;
        self.want_write = want;
        Ok(())
    }
}

/// What a [`wait`] saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    /// The descriptor is ready (or has an error or hang-up to report).
    Io,
    /// One of the cancellers fired.
    Cancelled,
    /// The timeout expired.
    TimedOut,
}

/// Wait until `fd` is readable (or writable when `write`), one of `cancel`
/// fires, or `deadline` passes. A signal handler running during the wait
/// gives `Err(Interrupted)`.
pub(crate) fn wait(
    fd: RawFd,
    write: bool,
    cancel: &[&Canceller],
    deadline: Option<Instant>,
) -> io::Result<Ready> {
    let mut fds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    fds[0] = libc::pollfd {
        fd,
        events: if write { libc::POLLOUT } else { libc::POLLIN },
        revents: 0,
    };
    let mut n = 1;
    for c in cancel.iter().take(3) {
        if c.is_cancelled() || c.is_closing() {
            return Ok(Ready::Cancelled);
        }
        fds[n] = libc::pollfd {
            fd: c.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        n += 1;
    }
    let timeout_ms: libc::c_int = match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Ready::TimedOut);
            }
            // Round up so we never wake a little early and spin.
            let ms = left.as_micros().div_ceil(1000);
            ms.min(i32::MAX as u128) as libc::c_int
        }
    };
    // SAFETY: fds is a live local array and n <= its length.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if fds[1..n].iter().any(|p| p.revents != 0) {
        return Ok(Ready::Cancelled);
    }
    if r == 0 {
        // poll may wake a little before the deadline; the caller re-checks.
        return Ok(if deadline.is_some_and(|d| Instant::now() >= d) {
            Ready::TimedOut
        } else {
            Ready::Io
        });
    }
    Ok(Ready::Io)
}

/// What a [`wait_input_or_hangup`] saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InputReady {
    /// The input descriptor is readable (or at its end, or has an error for
    /// the read to report).
    Input,
    /// The socket's peer has shut down its side or reset the connection.
    HungUp,
    /// One of the cancellers fired.
    Cancelled,
}

/// The socket events that say its peer has gone: it shut down its sending
/// side (`POLLRDHUP`, Linux), both sides are shut (`POLLHUP`) or the
/// connection was reset (`POLLERR`). Never `POLLIN`: data the peer sends
/// is not a departure.
const HANGUP_EVENTS: libc::c_short = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;

/// Wait, with no time limit, until `input` is readable, the peer of the
/// connected `socket` has gone ([`HANGUP_EVENTS`]; data arriving on the
/// socket does not end the wait), or one of `cancel` fires. When several
/// hold at once, a cancel wins, then the peer's departure. A signal handler
/// running during the wait gives `Err(Interrupted)`; an `input` that is not
/// an open descriptor `Err` with `EBADF`.
pub(crate) fn wait_input_or_hangup(input: RawFd, socket: RawFd, cancel: &[&Canceller]) -> io::Result<InputReady> {
    let mut fds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 5];
    fds[0] = libc::pollfd {
        fd: input,
        events: libc::POLLIN,
        revents: 0,
    };
    fds[1] = libc::pollfd {
        fd: socket,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let mut n = 2;
    for c in cancel.iter().take(3) {
        if c.is_cancelled() || c.is_closing() {
            return Ok(InputReady::Cancelled);
        }
        fds[n] = libc::pollfd {
            fd: c.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        n += 1;
    }
    loop {
        // SAFETY: fds is a live local array and n <= its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, -1) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if fds[2..n].iter().any(|p| p.revents != 0) {
            return Ok(InputReady::Cancelled);
        }
        if fds[1].revents & (HANGUP_EVENTS | libc::POLLNVAL) != 0 {
            return Ok(InputReady::HungUp);
        }
        if fds[0].revents & libc::POLLNVAL != 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if fds[0].revents != 0 {
            return Ok(InputReady::Input);
        }
        // Nothing we asked about (r == 0 cannot happen without a timeout).
    }
}

/// Whether the peer of the connected `socket` has gone (as
/// [`wait_input_or_hangup`] sees it), right now, without waiting.
pub(crate) fn peer_hung_up(socket: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd: socket,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: p is a live local; one descriptor; no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r == 1 && p.revents & HANGUP_EVENTS != 0
}

/// Write `line` (at most a pipe page) to stderr only if it can take it now:
/// `false` (nothing written, or not all of it) when stderr is full, closed
/// or broken. Never blocks, and never raises SIGPIPE: the signal is blocked
/// in this thread around the write and a pending one is taken back.
pub(crate) fn write_stderr_now(line: &[u8]) -> bool {
    // One writer at a time, from the poll to the end of the write: two
    // threads could both see room for one record and the second write would
    // then wait for a reader. Held only for a write that does not wait.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = libc::pollfd {
        fd: libc::STDERR_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: p is a live local; one descriptor; no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r != 1 || p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 || p.revents & libc::POLLOUT == 0 {
        return false;
    }
    // SAFETY: sigset_t values are plain data initialised by sigemptyset and
    // sigaddset; pthread_sigmask, write, sigpending and sigtimedwait read or
    // write only the live locals and `line`, which outlives the calls.
    unsafe {
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old);
        let already_pending = {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            libc::sigismember(&pending, libc::SIGPIPE) == 1
        };
        let n = libc::write(libc::STDERR_FILENO, line.as_ptr() as *const libc::c_void, line.len());
        if n < 0 && !already_pending {
            // An EPIPE left a SIGPIPE pending for this thread: take it back
            // before unblocking, so the program never sees it.
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            libc::sigtimedwait(&pipe, std::ptr::null_mut(), &zero);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        n >= 0 && n as usize == line.len()
    }
}

/// Write `bufs` to a connected socket with one `sendmsg(2)` carrying
/// `MSG_NOSIGNAL`: a peer that has gone gives `EPIPE` (or a reset) as an
/// error, never a SIGPIPE that would kill a program keeping the default
/// disposition. (`write_vectored` on a socket is a plain `writev`, which
/// raises it.) Safe code: socket2 makes the call.
pub(crate) fn send_vectored(socket: &impl AsFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
}

/// `Instant::now() + t`, or `None` for no timeout (or one too far to represent).
pub(crate) fn deadline(t: Option<Duration>) -> Option<Instant> {
    t.and_then(|t| Instant::now().checked_add(t))
}

/// Spawn a library thread with every blocking-able signal blocked, so that a
/// signal meant for the program (Ctrl-C in Python, say) is delivered to the
/// program's own threads and interrupts their waits, never ours.
pub(crate) fn spawn_quiet<F, T>(name: String, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask only read
    // and write the two live locals passed to them.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = std::thread::Builder::new().name(name).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    #[test]
    fn cancel_wakes_a_blocked_wait_from_another_thread() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Canceller::new().unwrap();
        let c2 = c.clone();
        let t = std::thread::spawn(move || wait(l.as_raw_fd(), false, &[&c2], None).unwrap());
        c.cancel();
        assert_eq!(t.join().unwrap(), Ready::Cancelled);
        assert!(c.is_cancelled());
    }

    #[test]
    fn wait_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let d = deadline(Some(Duration::from_millis(20)));
        assert_eq!(wait(l.as_raw_fd(), false, &[], d).unwrap(), Ready::TimedOut);
    }
}
