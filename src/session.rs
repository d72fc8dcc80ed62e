//! The turn-based chat session of the classic tutorial, done properly.
//!
//! The server sends first; then the two sides take turns, one message each.
//! The session ends when either side sends the end word (`BYE` by default)
//! or when the peer closes. Where outgoing messages come from and where
//! incoming ones go is up to a [`ChatHandler`], so the same loop serves a
//! terminal, a test, a C callback or a Python function.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;

use crate::config::Framing;
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::log::{log_at, LogLevel};
use crate::server::Server;
use crate::sys::{self, Canceller, InputReady};

/// Which side of a chat session this end plays.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends first (the tutorial's server).
    Server = 0,
    /// Receives first (the tutorial's client).
    Client = 1,
}

/// How a chat session ended (when it did not fail).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionEnd {
    /// We sent the end word (the handler asked to stop, or sent it itself).
    LocalEnd = 0,
    /// The peer sent the end word.
    PeerEnd = 1,
    /// The peer closed the connection without sending the end word.
    PeerClosed = 2,
}

/// Supplies a chat session's outgoing messages and takes its incoming ones.
///
/// Methods returning an error end the session with that error (use
/// [`Error::Callback`] for a failure of your own).
pub trait ChatHandler {
    /// The next message to send. `Ok(None)` means "nothing more to say": the
    /// session sends the end word and ends. Returning the end word itself
    /// also ends the session after sending it.
    ///
    /// To notice a peer that leaves while the message is still being
    /// written (an operator typing), wait for the input with
    /// [`wait_for_input`] before reading it, and return its
    /// [`Error::Closed`]: a `Closed` error returned while the peer has
    /// indeed closed or reset the connection ends the session as
    /// [`SessionEnd::PeerClosed`], not as a failure.
    fn next_message(&mut self) -> Result<Option<Vec<u8>>>;

    /// A message received from the peer. The end word is not passed here; it
    /// ends the session instead.
    fn on_message(&mut self, msg: &[u8]) -> Result<()>;

    /// Called by [`Server::serve_chat`] when a client connects, before the
    /// session starts. An error ends the serve loop.
    fn on_connect(&mut self, _peer: SocketAddr) -> Result<()> {
        Ok(())
    }

    /// Called by [`Server::serve_chat`] when a client's session is over and
    /// its connection closed, with how it ended. An error ends the serve loop.
    fn on_end(&mut self, _peer: SocketAddr, _outcome: &Result<SessionEnd>) -> Result<()> {
        Ok(())
    }
}

/// A [`ChatHandler`] made of two closures; see [`handler`].
pub struct FnHandler<N, M> {
    next: N,
    on_message: M,
}

/// Make a [`ChatHandler`] from a "next message" closure and a "message
/// received" closure.
///
/// ```
/// let mut outgoing = vec![b"hello".to_vec()].into_iter();
/// let mut h = tcpchat::handler(
///     move || Ok(outgoing.next()),
///     |msg: &[u8]| { println!("client: {}", String::from_utf8_lossy(msg)); Ok(()) },
/// );
/// # let _ = &mut h;
/// ```
pub fn handler<N, M>(next: N, on_message: M) -> FnHandler<N, M>
where
    N: FnMut() -> Result<Option<Vec<u8>>>,
    M: FnMut(&[u8]) -> Result<()>,
{
    FnHandler { next, on_message }
}

impl<N, M> ChatHandler for FnHandler<N, M>
where
    N: FnMut() -> Result<Option<Vec<u8>>>,
    M: FnMut(&[u8]) -> Result<()>,
{
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        (self.next)()
    }
    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        (self.on_message)(msg)
    }
}

impl<H: ChatHandler + ?Sized> ChatHandler for &mut H {
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        (**self).next_message()
    }
    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        (**self).on_message(msg)
    }
    fn on_connect(&mut self, peer: SocketAddr) -> Result<()> {
        (**self).on_connect(peer)
    }
    fn on_end(&mut self, peer: SocketAddr, outcome: &Result<SessionEnd>) -> Result<()> {
        (**self).on_end(peer, outcome)
    }
}

/// Whether `msg` is the end word. In `raw` framing, where a typed line may
/// arrive with its line ending, a trailing `\r\n` or `\n` is ignored.
pub fn is_end_word(framing: Framing, end_word: &[u8], msg: &[u8]) -> bool {
    if msg == end_word {
        return true;
    }
    if framing == Framing::Raw {
        let trimmed = msg
            .strip_suffix(b"\n")
            .map(|m| m.strip_suffix(b"\r").unwrap_or(m));
        return trimmed == Some(end_word);
    }
    false
}

/// The connection of the chat session running on this thread, as
/// [`wait_for_input`] watches it.
struct Watch {
    socket: RawFd,
    peer: SocketAddr,
    cancel: Canceller,
    shutdown: Option<Canceller>,
}

thread_local! {
    /// Set by [`run_session`] for as long as it runs on this thread.
    static SESSION: RefCell<Option<Rc<Watch>>> = const { RefCell::new(None) };
}

/// Makes a session's connection this thread's current one, and puts back
/// the one before (a session run from inside another's handler) when
/// dropped: on return and on unwind alike.
struct SessionScope {
    previous: Option<Rc<Watch>>,
}

impl SessionScope {
    fn enter(conn: &Conn) -> SessionScope {
        let (socket, cancel, shutdown) = conn.watch_parts();
        let watch = Rc::new(Watch {
            socket,
            peer: conn.peer_addr(),
            cancel,
            shutdown,
        });
        let previous = SESSION.with(|s| s.replace(Some(watch)));
        SessionScope { previous }
    }
}

impl Drop for SessionScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // try_with: never panic during a thread's teardown.
        let _ = SESSION.try_with(|s| *s.borrow_mut() = previous);
    }
}

fn current_session() -> Option<Rc<Watch>> {
    SESSION.try_with(|s| s.borrow().clone()).ok().flatten()
}

/// Wait until descriptor `fd` (the program's input: `0` for stdin, or
/// `io::stdin().as_raw_fd()`) is readable, or the peer of the chat session
/// running on this thread leaves; for a
/// [`ChatHandler::next_message`] that reads what to send from somewhere
/// that can take a while (an operator typing).
///
/// Returns `Ok(())` when `fd` is readable (or at its end: the read then
/// says so), and [`Error::Closed`] when the session's peer has closed or
/// reset the connection: return that error from `next_message` and
/// [`run_session`] ends the session as [`SessionEnd::PeerClosed`]
/// (`serve_chat` goes on to the next client). A half-close counts as
/// leaving: a peer that can no longer send can no longer take its turn.
/// Data the peer sends out of turn does not end the wait. There is no time
/// limit.
///
/// Only the descriptor is watched: input already read into a buffer of
/// the program's (a `BufReader`, `io::stdin()`'s own) is not seen, so read
/// the input unbuffered, or look in the buffer before waiting.
///
/// Fails with [`Error::Cancelled`] when the connection is cancelled or its
/// server shut down (a shutdown during the wait stops `serve_chat`),
/// [`Error::Interrupted`] when a signal handler runs during the wait, and
/// [`Error::InvalidArgument`] when `fd` is not an open descriptor or no
/// session runs on this thread (it must be called from the handler of a
/// [`run_session`] or [`Server::serve_chat`] running on this thread).
/// Linux only, as the rest of the library.
///
/// ```no_run
/// use std::io::{self, Read};
/// use std::os::fd::{AsFd, AsRawFd};
///
/// let server = tcpchat::Server::bind("127.0.0.1", 0, tcpchat::Config::default())?;
/// // stdin without std's buffer, which could hold input the wait cannot see.
/// let mut stdin = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned().unwrap());
/// let mut operator = tcpchat::handler(
///     move || {
///         // The client left while we wait: Err(Closed), the session ends.
///         tcpchat::session::wait_for_input(stdin.as_raw_fd())?;
///         let mut buf = vec![0; 1024];
///         let n = stdin.read(&mut buf).map_err(|e| tcpchat::Error::Callback(e.to_string()))?;
///         buf.truncate(n); // (a real program cuts lines: examples/common)
///         Ok((n > 0).then_some(buf))
///     },
///     |msg: &[u8]| {
///         println!("client: {}", String::from_utf8_lossy(msg));
///         Ok(())
///     },
/// );
/// server.serve_chat(&mut operator, false)?;
/// # Ok::<(), tcpchat::Error>(())
/// ```
pub fn wait_for_input(fd: RawFd) -> Result<()> {
    let Some(watch) = current_session() else {
        return Err(Error::invalid(
            "wait_for_input: no chat session runs on this thread (call it from a handler of run_session or serve_chat)",
        ));
    };
    if fd < 0 {
        return Err(Error::invalid(format!("wait_for_input: descriptor {fd} is not valid")));
    }
    let mut cancels: Vec<&Canceller> = vec![&watch.cancel];
    cancels.extend(watch.shutdown.as_ref());
    let what = format!("waiting for input (the peer is {})", watch.peer);
    match sys::wait_input_or_hangup(fd, watch.socket, &cancels) {
        Ok(InputReady::Input) => Ok(()),
        Ok(InputReady::HungUp) => Err(Error::Closed(format!(
            "the peer ({}) left while it was our turn",
            watch.peer
        ))),
        Ok(InputReady::Cancelled) => {
            let cancelled = watch.cancel.is_cancelled() || watch.shutdown.as_ref().is_some_and(|s| s.is_cancelled());
            if !cancelled && watch.cancel.is_closing() {
                Err(Error::LocallyClosed(format!("{what}: the connection was closed by another thread")))
            } else {
                Err(Error::Cancelled(what))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(Error::Interrupted(what)),
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Err(Error::invalid(format!(
            "wait_for_input: descriptor {fd} is not open"
        ))),
        Err(e) => Err(Error::io(what, e)),
    }
}

/// Whether the peer of the session running on this thread has closed or
/// reset the connection (false outside a session).
pub(crate) fn session_peer_left() -> bool {
    current_session().is_some_and(|w| sys::peer_hung_up(w.socket))
}

/// Whether the connection of the session running on this thread has been
/// cancelled, or its server shut down (false outside a session).
pub(crate) fn session_cancelled() -> bool {
    current_session()
        .is_some_and(|w| w.cancel.is_cancelled() || w.shutdown.as_ref().is_some_and(|s| s.is_cancelled()))
}

/// Run one chat session on `conn` as `role` until it ends; the connection is
/// left open (close it, or drop it, afterwards).
///
/// Each wait for the peer's turn is bounded by the config's
/// [`crate::Config::idle_timeout`] (300 s by default) or the connection's
/// read timeout, whichever is shorter, so a silent peer cannot hold the
/// session for ever: it fails with [`Error::Timeout`] naming the idle
/// timeout.
///
/// While it runs, the handler may call [`wait_for_input`] to wait for its
/// input and the peer's departure at once; an [`Error::Closed`] that
/// `next_message` returns when the peer has indeed gone ends the session
/// as [`SessionEnd::PeerClosed`].
///
/// Returns how it ended, or the first error: of the connection (timeout,
/// reset, a peer breaking the format), or of the handler.
pub fn run_session<H: ChatHandler + ?Sized>(
    conn: &mut Conn,
    role: Role,
    handler: &mut H,
) -> Result<SessionEnd> {
    let read_timeout = conn.read_timeout();
    let idle = conn.config().idle_timeout;
    let turn_timeout = match (read_timeout, idle) {
        (Some(r), Some(i)) => Some(r.min(i)),
        (r, i) => r.or(i),
    };
    conn.set_read_timeout(turn_timeout)?;
    let r = {
        let _scope = SessionScope::enter(conn);
        session_loop(conn, role, handler)
    };
    conn.set_read_timeout(read_timeout)?;
    match r {
        Err(Error::Timeout { op, after }) if Some(after) == idle && Some(after) != read_timeout => Err(Error::Timeout {
            op: format!("{op}: the peer sent nothing for the idle timeout"),
            after,
        }),
        other => other,
    }
}

fn session_loop<H: ChatHandler + ?Sized>(conn: &mut Conn, role: Role, handler: &mut H) -> Result<SessionEnd> {
    let framing = conn.framing();
    let end_word = conn.config().end_word.clone();
    let mut our_turn = role == Role::Server;
    loop {
        if our_turn {
            let msg = match handler.next_message() {
                Ok(m) => m,
                // The peer left while we were getting our message ready
                // (wait_for_input said so): over, not failed.
                Err(Error::Closed(_)) if session_peer_left() => return Ok(SessionEnd::PeerClosed),
                Err(e) => return Err(e),
            };
            let (msg, last) = match msg {
                None => (end_word.clone(), true),
                Some(m) => {
                    let last = is_end_word(framing, &end_word, &m);
                    (m, last)
                }
            };
            match conn.send(&msg) {
                Ok(()) => {}
                // A peer that already left: the session is over, not failed.
                Err(Error::Closed(_)) | Err(Error::ConnectionReset(_)) if conn.peer_closed() => {
                    return Ok(SessionEnd::PeerClosed)
                }
                Err(e) => return Err(e),
            }
            if last {
                return Ok(SessionEnd::LocalEnd);
            }
        } else {
            let mut ended = false;
            let got = conn.recv_with(|m| {
                if is_end_word(framing, &end_word, m) {
                    ended = true;
                    Ok(())
                } else {
                    handler.on_message(m)
                }
            })?;
            match got {
                None => return Ok(SessionEnd::PeerClosed),
                Some(r) => r?,
            }
            if ended {
                return Ok(SessionEnd::PeerEnd);
            }
        }
        our_turn = !our_turn;
    }
}

impl Server {
    /// The tutorial's server loop: accept a client, run a chat session with
    /// it (this side sends first), close it gracefully, and wait for the next
    /// client, until the server is shut down (then `Ok(())`), or after one
    /// session when `once` is true.
    ///
    /// A session that fails because of the peer (reset, timeout, broken
    /// format) is logged and the loop goes on to the next client. An error
    /// from the handler ([`Error::Callback`] and any other it returns), an
    /// interrupting signal ([`Error::Interrupted`]) or a system error ends
    /// the loop and is returned.
    pub fn serve_chat<H: ChatHandler + ?Sized>(&self, handler: &mut H, once: bool) -> Result<()> {
        loop {
            let mut conn = match self.accept() {
                Ok(c) => c,
                Err(Error::Cancelled(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            let peer = conn.peer_addr();
            handler.on_connect(peer)?;
            let outcome = run_session(&mut conn, Role::Server, handler);
            // Errors of our own side end the loop; errors of the peer only
            // end that client's session.
            let fatal = matches!(
                &outcome,
                Err(Error::Callback(_)) | Err(Error::Interrupted(_)) | Err(Error::Internal(_))
            );
            let stopping = matches!(&outcome, Err(Error::Cancelled(_))) && self.is_shut_down();
            match &outcome {
                Ok(end) => log_at!(LogLevel::Info, "chat session with {peer} ended: {end:?}"),
                Err(e) if !fatal && !stopping => {
                    log_at!(LogLevel::Warn, "chat session with {peer} failed: {e}")
                }
                Err(_) => {}
            }
            let _ = conn.close();
            let hook = handler.on_end(peer, &outcome);
            if fatal {
                return outcome.map(|_| ());
            }
            hook?;
            if once || stopping || self.is_shut_down() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_word_matching() {
        assert!(is_end_word(Framing::Line, b"BYE", b"BYE"));
        assert!(!is_end_word(Framing::Line, b"BYE", b"BYE\n"));
        assert!(is_end_word(Framing::Raw, b"BYE", b"BYE\r\n"));
        assert!(is_end_word(Framing::Raw, b"BYE", b"BYE\n"));
        assert!(!is_end_word(Framing::Raw, b"BYE", b"BYE!"));
        assert!(!is_end_word(Framing::Frame, b"BYE", b"bye"));
    }
}
