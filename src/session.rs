//! The turn-based chat session of the classic tutorial, done properly.
//!
//! The server sends first; then the two sides take turns, one message each.
//! The session ends when either side sends the end word (`BYE` by default)
//! or when the peer closes. Where outgoing messages come from and where
//! incoming ones go is up to a [`ChatHandler`], so the same loop serves a
//! terminal, a test, a C callback or a Python function.

use std::net::SocketAddr;

use crate::config::Framing;
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::log::{log_at, LogLevel};
use crate::server::Server;

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

/// Run one chat session on `conn` as `role` until it ends; the connection is
/// left open (close it, or drop it, afterwards).
///
/// Each wait for the peer's turn is bounded by the config's
/// [`crate::Config::idle_timeout`] (300 s by default) or the connection's
/// read timeout, whichever is shorter, so a silent peer cannot hold the
/// session for ever: it fails with [`Error::Timeout`] naming the idle
/// timeout.
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
    let r = session_loop(conn, role, handler);
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
            let msg = handler.next_message()?;
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
