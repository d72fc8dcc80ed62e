//! The chat session and the server loop driven by C callbacks.

use std::ffi::{c_char, c_int, c_void, CString};
use std::net::SocketAddr;

use crate::error::{Error, Result, Status};
use crate::session::{self, ChatHandler, Role, SessionEnd};

use super::boundary::{arg_nonnull, guard};
use super::{tcpchat_role, TCPCHAT_ROLE_CLIENT, TCPCHAT_ROLE_SERVER};

/// Supplies a chat session's outgoing messages and takes its incoming ones
/// (the C face of the Rust `ChatHandler`).
///
/// Every callback gets `user_data` as its first argument, unchanged; it runs
/// on the thread that called `tcpchat_conn_run_session()` or
/// `tcpchat_server_serve_chat()`. A callback that returns non-zero ends the
/// session (and the serve loop) with `TCPCHAT_STATUS_CALLBACK`; the library
/// never aborts because of it. The exceptions are the statuses of
/// `tcpchat_session_wait_input()` that `next_message` passes on (below).
///
/// The struct is read when the session starts; it need not outlive the call.
#[repr(C)]
pub struct tcpchat_chat_callbacks {
    /// Passed to every callback.
    pub user_data: *mut c_void,
    /// Required. Supply the next message to send: set `*msg` and `*len` to
    /// it and return 0. The bytes stay owned by the program and must remain
    /// valid until the library next calls any callback or the session ends
    /// (the library copies them before then). Set `*msg` to NULL (and return
    /// 0) to end the session: the library sends the end word. Sending the end
    /// word yourself also ends the session. Non-zero: fail the session.
    ///
    /// To notice a peer that leaves while the message is being written (an
    /// operator typing), call `tcpchat_session_wait_input()` before reading
    /// it, and return what it returned when that is not
    /// `TCPCHAT_STATUS_OK`:
    /// * `TCPCHAT_STATUS_CLOSED` (4) ends the session as the peer's close
    ///   (`TCPCHAT_SESSION_END_PEER_CLOSED`; `tcpchat_server_serve_chat()`
    ///   goes on to the next client), not as a callback failure, provided
    ///   the peer has indeed closed or reset the connection (otherwise:
    ///   `TCPCHAT_STATUS_CALLBACK`);
    /// * `TCPCHAT_STATUS_CANCELLED` (10), when the connection was indeed
    ///   cancelled or its server shut down, ends the session with that
    ///   status, as a cancel during one of the library's own waits does (a
    ///   serve loop whose server was shut down returns `TCPCHAT_STATUS_OK`);
    /// * `TCPCHAT_STATUS_INTERRUPTED` (11) ends it as a signal during one of
    ///   the library's own waits does (the serve loop returns
    ///   `TCPCHAT_STATUS_INTERRUPTED`).
    pub next_message: Option<unsafe extern "C" fn(user_data: *mut c_void, msg: *mut *const u8, len: *mut usize) -> c_int>,
    /// Required. A message received from the peer (never the end word, which
    /// ends the session instead). `msg` is owned by the library and valid
    /// only during the call. Return 0 to go on, non-zero to fail the session.
    pub on_message: Option<unsafe extern "C" fn(user_data: *mut c_void, msg: *const u8, len: usize) -> c_int>,
    /// Optional (may be NULL); used by `tcpchat_server_serve_chat()` only. A
    /// client connected: `peer` is its address as a NUL-terminated string,
    /// valid only during the call. Non-zero ends the serve loop.
    pub on_connect: Option<unsafe extern "C" fn(user_data: *mut c_void, peer: *const c_char) -> c_int>,
    /// Optional (may be NULL); used by `tcpchat_server_serve_chat()` only. A
    /// client's session is over and its connection closed. `status` is
    /// `TCPCHAT_STATUS_OK` when the session ended normally, with `end` saying
    /// how; otherwise the session failed with that status (and `end` is
    /// meaningless) and `tcpchat_last_error_message()` describes it. `peer`
    /// is valid only during the call. Return 0 to go on to the next client,
    /// non-zero to end the serve loop with `TCPCHAT_STATUS_CALLBACK`.
    pub on_end: Option<
        unsafe extern "C" fn(user_data: *mut c_void, peer: *const c_char, status: Status, end: SessionEnd) -> c_int,
    >,
}

pub(crate) fn role_from_c(role: tcpchat_role) -> Result<Role> {
    match role {
        TCPCHAT_ROLE_SERVER => Ok(Role::Server),
        TCPCHAT_ROLE_CLIENT => Ok(Role::Client),
        other => Err(Error::invalid(format!("unknown role {other}"))),
    }
}

type NextFn = unsafe extern "C" fn(*mut c_void, *mut *const u8, *mut usize) -> c_int;
type MessageFn = unsafe extern "C" fn(*mut c_void, *const u8, usize) -> c_int;

/// A `ChatHandler` calling the C callbacks.
pub(crate) struct CallbackHandler {
    user_data: *mut c_void,
    next: NextFn,
    on_message: MessageFn,
    on_connect: Option<unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int>,
    on_end: Option<unsafe extern "C" fn(*mut c_void, *const c_char, Status, SessionEnd) -> c_int>,
}

impl CallbackHandler {
    /// Read and check the callbacks.
    ///
    /// # Safety
    /// `cb` must be NULL or point to a readable `tcpchat_chat_callbacks`.
    pub(crate) unsafe fn new(cb: *const tcpchat_chat_callbacks) -> Result<CallbackHandler> {
        arg_nonnull(cb, "callbacks")?;
        let cb = &*cb;
        Ok(CallbackHandler {
            user_data: cb.user_data,
            next: cb
                .next_message
                .ok_or_else(|| Error::invalid("callbacks->next_message must not be NULL"))?,
            on_message: cb
                .on_message
                .ok_or_else(|| Error::invalid("callbacks->on_message must not be NULL"))?,
            on_connect: cb.on_connect,
            on_end: cb.on_end,
        })
    }
}

fn peer_cstring(peer: SocketAddr) -> CString {
    CString::new(peer.to_string()).unwrap_or_default()
}

/// The error of a `next_message` callback that returned `rc` (non-zero):
/// a status of `tcpchat_session_wait_input()` passed on, when it holds, or
/// a callback failure.
fn next_message_failure(rc: c_int) -> Error {
    const CLOSED: c_int = Status::Closed as c_int;
    const CANCELLED: c_int = Status::Cancelled as c_int;
    const INTERRUPTED: c_int = Status::Interrupted as c_int;
    match rc {
        CLOSED if session::session_peer_left() => {
            Error::Closed("next_message: the peer left while it was our turn".into())
        }
        CLOSED => Error::Callback(
            "next_message returned TCPCHAT_STATUS_CLOSED, but the peer has not closed the connection".into(),
        ),
        CANCELLED if session::session_cancelled() => Error::Cancelled("next_message: waiting for input".into()),
        CANCELLED => Error::Callback(
            "next_message returned TCPCHAT_STATUS_CANCELLED, but the connection was not cancelled".into(),
        ),
        INTERRUPTED => Error::Interrupted("next_message: waiting for input".into()),
        _ => Error::Callback(format!("next_message returned {rc}")),
    }
}

/// Inside a chat session's callback (`next_message`, typically): wait until
/// descriptor `fd` (the program's input, such as `STDIN_FILENO`) is
/// readable, or the session's peer leaves. For a `next_message` that reads
/// what to send from somewhere that can take a while (an operator typing):
/// without it, a peer that leaves meanwhile is only noticed when the next
/// message goes out into a dead connection.
///
/// Returns:
/// * `TCPCHAT_STATUS_OK`: `fd` is readable (or at its end, or has an error:
///   the read says which). Read it now; a read of what was already waiting
///   does not block.
/// * `TCPCHAT_STATUS_CLOSED`: the peer closed or reset the connection.
///   Return this status from `next_message`: the session ends as
///   `TCPCHAT_SESSION_END_PEER_CLOSED` (see `tcpchat_chat_callbacks`).
/// * `TCPCHAT_STATUS_CANCELLED`: the connection was cancelled or its server
///   shut down; `TCPCHAT_STATUS_INTERRUPTED`: a signal handler ran during
///   the wait. Return them from `next_message` too.
/// * `TCPCHAT_STATUS_INVALID_ARGUMENT`: no session runs on this thread (the
///   call is not inside a callback of `tcpchat_conn_run_session()` or
///   `tcpchat_server_serve_chat()`), or `fd` is not an open descriptor.
///
/// Data the peer sends out of turn does not end the wait, and there is no
/// time limit. Only the descriptor is watched: input already in a buffer
/// of the program's is not seen, so read `fd` with read(2), not through a
/// `FILE *` whose buffer may already hold the next line (or look there
/// first). Linux only, as the rest of the library.
#[no_mangle]
pub extern "C" fn tcpchat_session_wait_input(fd: i32) -> Status {
    guard(|| session::wait_for_input(fd))
}

impl ChatHandler for CallbackHandler {
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        let mut msg: *const u8 = std::ptr::null();
        let mut len: usize = 0;
        // SAFETY: the program supplied the callback and user data for this.
        let rc = unsafe { (self.next)(self.user_data, &mut msg, &mut len) };
        if rc != 0 {
            return Err(next_message_failure(rc));
        }
        if msg.is_null() {
            return Ok(None);
        }
        // SAFETY: the callback promised `len` readable bytes at `msg`.
        let bytes = unsafe { super::boundary::arg_bytes(msg, len, "next_message's message")? };
        Ok(Some(bytes.to_vec()))
    }

    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        // SAFETY: as above; msg is valid for the call.
        let rc = unsafe { (self.on_message)(self.user_data, msg.as_ptr(), msg.len()) };
        if rc != 0 {
            return Err(Error::Callback(format!("on_message returned {rc}")));
        }
        Ok(())
    }

    fn on_connect(&mut self, peer: SocketAddr) -> Result<()> {
        if let Some(f) = self.on_connect {
            let p = peer_cstring(peer);
            // SAFETY: as above.
            let rc = unsafe { f(self.user_data, p.as_ptr()) };
            if rc != 0 {
                return Err(Error::Callback(format!("on_connect returned {rc}")));
            }
        }
        Ok(())
    }

    fn on_end(&mut self, peer: SocketAddr, outcome: &Result<SessionEnd>) -> Result<()> {
        if let Some(f) = self.on_end {
            let p = peer_cstring(peer);
            let (status, end) = match outcome {
                Ok(end) => (Status::Ok, *end),
                Err(e) => (super::boundary::set_last_error(e), SessionEnd::PeerClosed),
            };
            // SAFETY: as above.
            let rc = unsafe { f(self.user_data, p.as_ptr(), status, end) };
            if rc != 0 {
                return Err(Error::Callback(format!("on_end returned {rc}")));
            }
        }
        Ok(())
    }
}
