//! # tcpchat
//!
//! A TCP chat library: the classic "server and client take turns typing"
//! tutorial done properly, and a good deal more.
//!
//! * [`Framing`]: how messages are delimited on the wire (`raw`, `line`,
//!   `frame`), decoded by the pure [`framing::Decoder`].
//! * [`connect`] and [`Server`]: framed connections ([`Conn`]) with timeouts,
//!   cancellation from any thread ([`Canceller`], [`ShutdownHandle`]) and a
//!   graceful close.
//! * [`run_session`] and [`Server::serve_chat`]: the turn-based chat session
//!   (the server sends first, `BYE` ends it), driven by a [`ChatHandler`].
//! * [`Server::serve_echo`]: an echo service for many clients at once.
//! * [`Error`]: one error type whose variants map one-to-one to the stable
//!   [`Status`] codes of the C API.
//!
//! The same library is exported to C (`libtcpchat.so`, `include/tcpchat.h`)
//! and to Python (`bindings/python`); those faces are thin adapters over this
//! crate and behave the same way.
//!
//! ```no_run
//! use tcpchat::{Config, Server};
//!
//! let server = Server::bind("127.0.0.1", 0, Config::default())?;
//! println!("listening on {}", server.local_addr());
//! let mut conn = server.accept()?;
//! conn.send(b"hello")?;
//! while let Some(msg) = conn.recv()? {
//!     println!("client: {}", String::from_utf8_lossy(&msg));
//! }
//! conn.close()?;
//! # Ok::<(), tcpchat::Error>(())
//! ```

#![warn(missing_docs)]

pub mod access;
pub mod config;
pub mod conn;
pub mod echo;
pub mod error;
pub mod framing;
pub mod log;
pub mod room;
pub mod session;
pub mod text;

mod client;
/// The C API (`include/tcpchat.h`); not part of the Rust API.
mod ffi;
mod server;
mod sys;

pub use client::connect;
pub use access::IpNet;
pub use config::{Config, Framing};
pub use conn::{Conn, RecvHalf, SendHalf};
pub use echo::EchoStats;
pub use error::{Error, Result, Status};
pub use log::LogLevel;
pub use room::{LeaveReason, MemberRate, Room, RoomConfig, RoomEvent, RoomHandle, RoomStats};
pub use server::{Server, ShutdownHandle};
pub use session::{handler, run_session, ChatHandler, Role, SessionEnd};
pub use sys::Canceller;

// Compile the Rust code blocks of README.md as doc tests, so the README
// cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The library's version, from Cargo.toml (for example `"0.1.0"`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
