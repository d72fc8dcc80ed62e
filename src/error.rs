//! The one error type of tcpchat and the stable status codes it maps to.
//!
//! Every fallible function in the crate returns [`Result<T>`]. Each [`Error`]
//! variant corresponds to exactly one [`Status`] code; the C API returns that
//! code and the Python binding raises the exception class of the same name, so
//! the three faces of the library report the same failure the same way.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// A shorthand for `std::result::Result<T, tcpchat::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// A status code: the number the C API returns for each outcome.
///
/// The values are stable: a number is never reused or renumbered, and new
/// codes are only ever added. `TCPCHAT_STATUS_OK` (0) means success; every
/// other value names one kind of failure, and `tcpchat_last_error_message()`
/// gives the calling thread a full description of its most recent failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// An argument was refused: a NULL pointer, a length that does not fit,
    /// a port out of range, a host that is not UTF-8, an unknown enum value,
    /// a configuration value out of range, a message that the framing cannot
    /// carry (a newline in `line` framing).
    InvalidArgument = 1,
    /// An operating-system I/O error not covered by a more precise code.
    Io = 2,
    /// A connect, read, write or idle timeout expired.
    Timeout = 3,
    /// The peer closed the connection: its normal end of stream (a receive
    /// returns it once every message the peer sent has been received), or a
    /// send to a peer that has gone. Compare `TCPCHAT_STATUS_LOCALLY_CLOSED`.
    Closed = 4,
    /// A message is larger than the configured maximum message size. When
    /// received, the connection that sent it has been closed.
    MessageTooLarge = 5,
    /// The peer broke the wire format (for example a frame cut short at
    /// end of stream, or a line that is not UTF-8 where text is required).
    /// The connection has been closed.
    Protocol = 6,
    /// The address to bind is already in use.
    AddressInUse = 7,
    /// The peer refused the connection (nothing listens there).
    ConnectionRefused = 8,
    /// A host name could not be resolved to any address.
    Resolve = 9,
    /// The operation was cancelled through a cancel or shutdown call.
    Cancelled = 10,
    /// A signal handler ran while the call was blocked (`EINTR`). Nothing was
    /// lost; the call may be repeated.
    Interrupted = 11,
    /// The caller's buffer is too small for the next message. The message
    /// stays queued and the size it needs is reported.
    BufferTooSmall = 12,
    /// A callback supplied by the program reported a failure.
    Callback = 13,
    /// The server refused the client because it already serves its maximum
    /// number of clients.
    ServerFull = 14,
    /// The peer reset the connection (TCP RST).
    ConnectionReset = 15,
    /// The library hit an internal error (a bug in tcpchat, such as a caught
    /// panic). The handle involved should be freed.
    Internal = 16,
    /// A non-blocking call (`try_recv`, `try_send`, `try_flush`,
    /// `try_accept`) could not proceed without waiting. Nothing was lost;
    /// wait for the connection's pollable descriptor, then call again.
    WouldBlock = 17,
    /// This side closed the connection, so it cannot be used: after
    /// `tcpchat_conn_close()` (also from another thread, which wakes the
    /// calls blocked on it), after the library closed it because of an error
    /// (the message says which), or a send after `tcpchat_conn_shutdown_write()`.
    LocallyClosed = 18,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 19] = [
        Status::Ok,
        Status::InvalidArgument,
        Status::Io,
        Status::Timeout,
        Status::Closed,
        Status::MessageTooLarge,
        Status::Protocol,
        Status::AddressInUse,
        Status::ConnectionRefused,
        Status::Resolve,
        Status::Cancelled,
        Status::Interrupted,
        Status::BufferTooSmall,
        Status::Callback,
        Status::ServerFull,
        Status::ConnectionReset,
        Status::Internal,
        Status::WouldBlock,
        Status::LocallyClosed,
    ];

    /// The status's stable name as it appears in the C header, such as
    /// `"TCPCHAT_STATUS_TIMEOUT"`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "TCPCHAT_STATUS_OK",
            Status::InvalidArgument => "TCPCHAT_STATUS_INVALID_ARGUMENT",
            Status::Io => "TCPCHAT_STATUS_IO",
            Status::Timeout => "TCPCHAT_STATUS_TIMEOUT",
            Status::Closed => "TCPCHAT_STATUS_CLOSED",
            Status::MessageTooLarge => "TCPCHAT_STATUS_MESSAGE_TOO_LARGE",
            Status::Protocol => "TCPCHAT_STATUS_PROTOCOL",
            Status::AddressInUse => "TCPCHAT_STATUS_ADDRESS_IN_USE",
            Status::ConnectionRefused => "TCPCHAT_STATUS_CONNECTION_REFUSED",
            Status::Resolve => "TCPCHAT_STATUS_RESOLVE",
            Status::Cancelled => "TCPCHAT_STATUS_CANCELLED",
            Status::Interrupted => "TCPCHAT_STATUS_INTERRUPTED",
            Status::BufferTooSmall => "TCPCHAT_STATUS_BUFFER_TOO_SMALL",
            Status::Callback => "TCPCHAT_STATUS_CALLBACK",
            Status::ServerFull => "TCPCHAT_STATUS_SERVER_FULL",
            Status::ConnectionReset => "TCPCHAT_STATUS_CONNECTION_RESET",
            Status::Internal => "TCPCHAT_STATUS_INTERNAL",
            Status::WouldBlock => "TCPCHAT_STATUS_WOULD_BLOCK",
            Status::LocallyClosed => "TCPCHAT_STATUS_LOCALLY_CLOSED",
        }
    }

    /// The status for a raw number, if it is one.
    pub fn from_code(code: u32) -> Option<Status> {
        Status::ALL.get(code as usize).copied()
    }
}

/// Everything that can go wrong in tcpchat.
///
/// Each variant's message names what failed: the address, the size and the
/// limit, the operation that timed out. [`Error::status`] gives the stable
/// code the C API returns for it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument or configuration value was refused; the text says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An operating-system I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What tcpchat was doing, e.g. "reading from 127.0.0.1:4000".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A timeout expired.
    #[error("timed out after {after:?} while {op}")]
    Timeout {
        /// The operation that timed out, e.g. "waiting for a message from 127.0.0.1:5000".
        op: String,
        /// The timeout that expired.
        after: Duration,
    },

    /// The peer closed the connection (its normal end, or it has gone).
    #[error("connection closed: {0}")]
    Closed(String),

    /// A message exceeds the maximum message size.
    #[error("message of {size} bytes exceeds the maximum message size of {max} bytes{context}")]
    MessageTooLarge {
        /// The size of the message (for a line: the bytes seen so far).
        size: u64,
        /// The configured maximum.
        max: usize,
        /// Where it happened, e.g. " (received from 127.0.0.1:5000)"; may be empty.
        context: String,
    },

    /// The peer broke the wire format.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The address to bind is in use.
    #[error("address {addr} is already in use")]
    AddressInUse {
        /// The address that could not be bound.
        addr: SocketAddr,
    },

    /// Nothing accepted the connection.
    #[error("connection to {addr} refused")]
    ConnectionRefused {
        /// The address (the last one tried, when a name resolved to several).
        addr: String,
    },

    /// A host name did not resolve.
    #[error("could not resolve host {host:?}: {detail}")]
    Resolve {
        /// The host name as given.
        host: String,
        /// The resolver's explanation.
        detail: String,
    },

    /// Cancelled through a [`crate::Canceller`] or a server shutdown.
    #[error("cancelled: {0}")]
    Cancelled(String),

    /// A signal handler interrupted a blocking wait. Nothing was lost.
    #[error("interrupted by a signal while {0}")]
    Interrupted(String),

    /// A caller's buffer cannot hold the next message, which stays queued.
    #[error("buffer of {capacity} bytes is too small for the next message of {needed} bytes")]
    BufferTooSmall {
        /// The size the message needs.
        needed: usize,
        /// The size that was offered.
        capacity: usize,
    },

    /// A callback supplied by the program reported a failure.
    #[error("callback failed: {0}")]
    Callback(String),

    /// The server is at its client limit.
    #[error("server full: it already serves its maximum of {max} clients")]
    ServerFull {
        /// The configured limit.
        max: usize,
    },

    /// The peer reset the connection.
    #[error("connection reset by {0}")]
    ConnectionReset(String),

    /// A bug in tcpchat (for example a panic caught at the C boundary).
    #[error("internal error: {0}")]
    Internal(String),

    /// A non-blocking call could not proceed without waiting.
    #[error("would block: {0}")]
    WouldBlock(String),

    /// This side closed the connection (locally, from another thread, or
    /// after an error the message names), or shut down its write half.
    #[error("connection closed by this side: {0}")]
    LocallyClosed(String),
}

impl Error {
    /// The stable status code for this error.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::InvalidArgument,
            Error::Io { .. } => Status::Io,
            Error::Timeout { .. } => Status::Timeout,
            Error::Closed(_) => Status::Closed,
            Error::MessageTooLarge { .. } => Status::MessageTooLarge,
            Error::Protocol(_) => Status::Protocol,
            Error::AddressInUse { .. } => Status::AddressInUse,
            Error::ConnectionRefused { .. } => Status::ConnectionRefused,
            Error::Resolve { .. } => Status::Resolve,
            Error::Cancelled(_) => Status::Cancelled,
            Error::Interrupted(_) => Status::Interrupted,
            Error::BufferTooSmall { .. } => Status::BufferTooSmall,
            Error::Callback(_) => Status::Callback,
            Error::ServerFull { .. } => Status::ServerFull,
            Error::ConnectionReset(_) => Status::ConnectionReset,
            Error::Internal(_) => Status::Internal,
            Error::WouldBlock(_) => Status::WouldBlock,
            Error::LocallyClosed(_) => Status::LocallyClosed,
        }
    }

    /// Turn an I/O error into the most precise variant, with `context`
    /// saying what was being done (and to whom).
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        match source.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                Error::ConnectionReset(context)
            }
            io::ErrorKind::BrokenPipe => Error::Closed(format!("{context}: the peer has closed")),
            io::ErrorKind::Interrupted => Error::Interrupted(context),
            io::ErrorKind::TimedOut => Error::Timeout {
                op: context,
                after: Duration::ZERO,
            },
            _ => Error::Io { context, source },
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }
}

/// For `?` on std I/O calls in code that returns [`Result`]: the error keeps
/// its kind's precise variant ([`Error::ConnectionReset`] for a reset,
/// [`Error::Timeout`] for `TimedOut`, [`Error::Interrupted`], [`Error::Io`]
/// for the rest), with the context "I/O error".
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::io("I/O error", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_converts_with_question_mark() {
        fn f() -> Result<()> {
            Err(io::Error::from(io::ErrorKind::ConnectionReset))?;
            Ok(())
        }
        assert_eq!(f().unwrap_err().status(), Status::ConnectionReset);
        let e: Error = io::Error::from(io::ErrorKind::PermissionDenied).into();
        assert_eq!(e.status(), Status::Io);
    }

    #[test]
    fn status_numbers_are_dense_and_stable() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32);
            assert_eq!(Status::from_code(i as u32), Some(*s));
        }
        assert_eq!(Status::from_code(Status::ALL.len() as u32), None);
        assert_eq!(Status::Timeout as u32, 3);
        assert_eq!(Status::Internal.name(), "TCPCHAT_STATUS_INTERNAL");
    }

    #[test]
    fn io_errors_map_to_precise_variants() {
        let e = Error::io("writing", io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(e.status(), Status::ConnectionReset);
        let e = Error::io("writing", io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(e.status(), Status::Closed);
        let e = Error::io("reading", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(e.status(), Status::Io);
        assert!(e.to_string().starts_with("reading: "));
    }
}
