//! The chat room: many clients at once, every line broadcast to the others.
//!
//! [`Room::bind`] listens; [`Room::run`] serves on the calling thread, or
//! [`Room::start`] serves on a library thread; [`RoomHandle::post`] and
//! [`RoomHandle::shutdown`] work from any thread. One thread serves every
//! client through an event loop over non-blocking sockets (`mio`, epoll on
//! Linux), so a room holds thousands of clients; an idle client costs about
//! a kilobyte, since buffers exist only while there is data.
//!
//! # The protocol
//!
//! Line framing (the `\n` ends a line; a `\r` before it is dropped), so `nc`
//! and `telnet` can join. Every line the room writes ends with `\n`.
//!
//! | a client sends | what happens |
//! | --- | --- |
//! | `TEXT` | every *other* client gets `NAME: TEXT` (the sender gets nothing back) |
//! | an empty line | ignored |
//! | `//TEXT` | sent as the message `/TEXT` |
//! | `/nick NAME` | renamed: the client gets `* you are now known as NAME`, the others `* OLD is now known as NAME`. Refused with a notice to that client alone: `error: the name NAME is taken` (names are unique ignoring case), `error: the name NAME was given up moments ago; it is free again in Ns` (a name held for the address that had it, see *Limits*), `error: invalid name "NAME": use 1 to 32 letters, digits, _ or -`, `error: usage: /nick NAME` |
//! | `/who` | that client gets `* N online: NAME, NAME, ...` (in the order they joined; cut short with `, and K more` past 8 KiB) |
//! | `/help` | that client gets `* commands: /nick NAME, /who, /quit; ...` |
//! | `/quit` | that client gets `* bye` and is closed; the others get `* NAME left` |
//! | lines faster than the member's rate ([`MemberRate`]) | the room stops reading from it until it is within the rate; over it for the flood timeout, it gets `error: excess flood` and is closed; the others get `* NAME was dropped (excess flood)` |
//! | any other `/WORD` | that client gets `error: unknown command /WORD (commands: /nick NAME, /who, /quit)` |
//! | a line that is not UTF-8 | that client gets `error: your line is not valid UTF-8; it was not sent`; it stays |
//! | a line over the room's line limit (see *Limits*) | that client gets `error: line longer than MAX bytes; closing` and is closed |
//! | a line whose relay would pass 1 MiB (terminal controls escaped, with the prefix) | that client gets `error: your line would be N bytes relayed (at most 1048576); it was not sent`; it stays |
//!
//! Command names are case-insensitive. A client joins as `guest1`,
//! `guest2`, ... (a free name), and is greeted with
//! `* welcome, you are NAME (commands: /nick NAME, /who, /quit)`; the
//! others get `* NAME joined`. When a member leaves, the others get
//! `* NAME left` (it quit or closed), `* NAME left (connection lost)`,
//! `* NAME was dropped (too slow to read)`,
//! `* NAME was dropped (unfinished line for too long)`
//! or `* NAME was dropped (line too long)`. [`RoomHandle::post`] sends
//! `* TEXT` to everyone. A client over [`Config::max_clients`] gets
//! `error: server full (MAX clients); try again later` and is closed.
//! On shutdown every client gets `* server shutting down` and is closed.
//!
//! Lines from one sender reach each receiver in the order sent, none lost
//! and none doubled, as long as the receiver stays in the room.
//!
//! # Limits
//!
//! * **Line length**: a member's line (its text, without the newline) may
//!   be up to the smaller of [`RoomConfig::max_line`] (default 16 KiB, a
//!   chat-sized line: IRC's is 512 bytes) and [`Config::max_message_size`]
//!   bytes; a longer one closes that member, as in the table above.
//! * **Relayed lines fit every client**: no line the room writes is longer
//!   than 1 MiB ([`crate::config::DEFAULT_MAX_MESSAGE_SIZE`], what a client
//!   with default settings accepts), its prefix included. A delivered
//!   message is the sender's name (at most 32 bytes), `: ` and the text with
//!   terminal controls escaped, so with the default line limit it is at
//!   most 64 KiB + 34 bytes and always fits; with a larger
//!   [`RoomConfig::max_line`] a line that would not fit is refused with a
//!   notice to its sender alone (it stays in the room). A post
//!   ([`RoomHandle::post`]) is refused the same way.
//! * **Slow readers**: each client has an outgoing queue of at most
//!   [`RoomConfig::queue_limit`] bytes (the lines it has not read yet, beyond
//!   what the kernel's socket buffers hold). When a line would overflow it,
//!   the client is dropped (closed at once) and the others get
//!   `* NAME was dropped (too slow to read)`. The room never waits for a
//!   client.
//! * **Idle means gone, not quiet**: a member that only reads, and never
//!   types, stays as long as its connection lives. The idle timeout
//!   ([`Config::idle_timeout`]) applies to an *unfinished line*: a member
//!   that has sent part of a line and not its newline for that long (as a
//!   slowloris attack does) gets `error: no complete line for T; closing`
//!   (`T` as Rust prints a duration: `300s`, `500ms`) and is closed; the
//!   others get `* NAME was dropped (unfinished line for too long)`. The
//!   clock starts with the first byte of the unfinished line. The check runs
//!   every tenth of the timeout (and at least every second), so a client
//!   goes at most that much later than due. (A client is a member from the
//!   moment it is accepted: there is no unfinished join to time out.)
//! * **Dead peers** (a machine switched off, a network gone, with no FIN or
//!   RST ever coming) are found by TCP keepalive, on every accepted
//!   connection: the first probe after 60 s without traffic, then one every
//!   10 s; after 6 unanswered probes the kernel fails the connection, so a
//!   dead peer is gone about 2 minutes after it last answered, and the
//!   others get `* NAME left (connection lost)`.
//! * **Names are held briefly**: a name given up (its member left, or
//!   renamed) stays reserved for 30 s for the address that had it. From
//!   that address it may be taken back at once; from any other,
//!   `/nick NAME` gets `error: the name NAME was given up moments ago; it
//!   is free again in Ns`. So nobody can take a name the moment its owner's
//!   connection drops and speak in its place. (At most the larger of 4,096
//!   and [`Config::max_clients`] names are held at once; past that the
//!   oldest hold ends early.)
//! * **Fair rounds**: the work one member can cause per turn is bounded in
//!   deliveries (a line to N receivers is N deliveries; a command one, or
//!   as many as a line for `/who` and `/nick`), about 16,000, not in bytes
//!   read; then it goes on after everyone else, and between turns the loop
//!   checks for shutdown and accepts. So 256 KiB of two-byte lines in one
//!   write (131,072 lines) cannot hold the room: a new client is welcomed
//!   and shutdown takes effect at once.
//! * **Rate** ([`RoomConfig::rate`], [`MemberRate`]): each member may send
//!   50 lines (commands included) a second with bursts of 500, and 32 KiB a
//!   second with bursts of 64 KiB, by default. Over it, the room stops
//!   reading from the member (its data waits in the kernel) until it is
//!   within its rate again; over it for 10 s without catching up, it gets
//!   `error: excess flood` and is closed, and the others get
//!   `* NAME was dropped (excess flood)`. Since a flooder reaches the others
//!   only at its rate, a reader that keeps up with that rate is never
//!   dropped as too slow because of it.
//! * **Closing**: a client being closed gets its queued lines, then the write
//!   half is shut down and what it still sends is read and dropped until it
//!   closes, for at most [`Config::close_timeout`].
//! * **Memory**: a client's incoming partial line is held up to the line
//!   limit; its outgoing queue up to
//!   [`RoomConfig::queue_limit`] plus one line. Both are freed when empty.
//!
//! * **Access**: the rules of [`crate::access`] apply the moment a client is
//!   accepted, as on every server: a peer refused by [`Config::deny`],
//!   [`Config::allow`] or [`Config::max_per_address`] is closed at once,
//!   without a byte, and never joins.
//!
//! The room uses [`Config::max_message_size`], [`Config::idle_timeout`],
//! [`Config::close_timeout`], [`Config::max_clients`], [`Config::allow`],
//! [`Config::deny`], [`Config::max_per_address`], [`Config::nodelay`] and
//! [`Config::backlog`]; [`Config::framing`] must be [`Framing::Line`].
//!
//! ```no_run
//! use tcpchat::{Config, Room, RoomEvent};
//!
//! let room = Room::bind("127.0.0.1", 0, Config::default())?;
//! eprintln!("listening on {}", room.local_addr());
//! room.on_event(|event| {
//!     if let RoomEvent::Message { name, text, .. } = event {
//!         println!("{name}: {text}");
//!     }
//! })?;
//! room.start()?;
//! room.post("welcome to the room")?;
//! // ... later, from any thread:
//! room.shutdown();
//! # Ok::<(), tcpchat::Error>(())
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use crate::config::{Config, Framing};
use crate::error::{Error, Result};
use crate::log::{log_at, LogLevel};
use crate::sys;

mod engine;
mod text;

#[doc(hidden)]
pub use text::fuzz_lines;

use engine::Engine;

/// The default [`RoomConfig::queue_limit`]: 256 KiB. (Not public: cbindgen
/// would put a public constant in the C header.)
const DEFAULT_QUEUE_LIMIT: usize = 256 * 1024;

/// The default [`RoomConfig::max_line`]: 16 KiB.
const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// The longest line the room writes, without its newline: what a client
/// with default settings accepts ([`crate::config::DEFAULT_MAX_MESSAGE_SIZE`]).
pub(crate) const RELAY_MAX: usize = crate::config::DEFAULT_MAX_MESSAGE_SIZE;

/// The longest prefix of a relayed line: a 32-byte name and `: `.
const MAX_PREFIX: usize = 34;

/// Settings of a [`Room`]: the shared [`Config`] plus what only a room has.
///
/// Built from a `Config` with `RoomConfig::from(config)` (or `.into()`;
/// [`Room::bind`] takes either).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// Limits shared with the other services; see the [module
    /// documentation](self) for the fields the room uses.
    pub config: Config,
    /// The most bytes a client's outgoing queue may hold (lines waiting for
    /// the client to read them, beyond the kernel's socket buffers); one more
    /// line drops the client as too slow. A line reaching an empty queue is
    /// always accepted, whatever its size. Default: 256 KiB.
    /// Must be at least 1.
    pub queue_limit: usize,
    /// The longest line a member may send, in bytes (its text, without the
    /// newline); the room takes the smaller of this and
    /// [`Config::max_message_size`]. A longer line gets its sender
    /// `error: line longer than MAX bytes; closing` and closes it. Default:
    /// 16 KiB. Must be between 1 and 1 MiB - 34 (so that the relayed line,
    /// with its `NAME: ` prefix, fits a client with default settings).
    pub max_line: usize,
    /// Relay text as it was typed, terminal controls included. Default
    /// `false`: every line is relayed with terminal controls shown in the
    /// visible notation of [`crate::text`] (`\x1b`, `\u{202e}`), so that no
    /// member can repaint, retitle or query another member's terminal. Set
    /// it only when every receiver is a program, never a person at a terminal.
    pub raw_text: bool,
    /// How fast each member may send; see [`MemberRate`]. Default:
    /// [`MemberRate::default`].
    pub rate: MemberRate,
}

/// How fast one member may send (lines, commands included, and bytes),
/// with a burst: two token buckets per member. A member over its rate is
/// *throttled*: the room stops reading from it (its data waits in its
/// kernel socket buffer, and then in its own) until its buckets refill, so
/// a flooder slows itself down and nobody else. A member that stays over
/// its rate for [`MemberRate::flood_timeout`], never catching up with what
/// it sent, gets `error: excess flood` and is closed; the others get
/// `* NAME was dropped (excess flood)`.
///
/// Every line costs one line (an empty line, ignored, none) and its length plus one in bytes (a line
/// longer than the byte burst costs the burst, so every line can pass);
/// `/who` also costs the bytes of its answer (about 12 a member, at most
/// 8 KiB). A rate of 0 turns that bucket off.
///
/// The defaults are generous for people and ordinary bots: 50 lines a
/// second with bursts of 500 (a pasted page goes through at once), 32 KiB a
/// second with bursts of 64 KiB, dropped after 10 s over the rate. They are
/// also what keeps readers safe: one member can make the room send a
/// reader at most its bursts plus its rates, well within the default
/// [`RoomConfig::queue_limit`] for any reader that keeps up with that, so
/// a reader is never dropped as too slow because another member floods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRate {
    /// Lines (and commands) per second, sustained; 0 = no line limit.
    /// Default: 50.
    pub lines_per_second: u32,
    /// Lines a member may send at once, beyond the rate. Default: 500.
    /// Must be at least 1 when `lines_per_second` is not 0.
    pub line_burst: u32,
    /// Bytes per second, sustained; 0 = no byte limit. Default: 32 KiB.
    pub bytes_per_second: u64,
    /// Bytes a member may send at once, beyond the rate. Default: 64 KiB.
    /// Must be at least 1 when `bytes_per_second` is not 0.
    pub byte_burst: u64,
    /// How long a member may stay over its rate, without catching up, before
    /// it is dropped with `error: excess flood`. Default: 10 s. Must be
    /// positive.
    pub flood_timeout: Duration,
}

impl Default for MemberRate {
    fn default() -> MemberRate {
        MemberRate {
            lines_per_second: 50,
            line_burst: 500,
            bytes_per_second: 32 * 1024,
            byte_burst: 64 * 1024,
            flood_timeout: Duration::from_secs(10),
        }
    }
}

impl MemberRate {
    /// No limit at all: every member is read as fast as it sends (only the
    /// room's fair rounds stand between a flooder and the others).
    pub fn unlimited() -> MemberRate {
        MemberRate {
            lines_per_second: 0,
            line_burst: 0,
            bytes_per_second: 0,
            byte_burst: 0,
            flood_timeout: Duration::MAX,
        }
    }

    /// Check that the values can work; the error names the first that cannot.
    pub fn validate(&self) -> Result<()> {
        if self.lines_per_second > 0 && self.line_burst == 0 {
            return Err(Error::invalid("line_burst must be at least 1 with a line rate"));
        }
        if self.bytes_per_second > 0 && self.byte_burst == 0 {
            return Err(Error::invalid("byte_burst must be at least 1 with a byte rate"));
        }
        if self.flood_timeout.is_zero() {
            return Err(Error::invalid("flood_timeout must be positive"));
        }
        Ok(())
    }
}

impl Default for RoomConfig {
    fn default() -> RoomConfig {
        RoomConfig::from(Config::default())
    }
}

impl From<Config> for RoomConfig {
    fn from(config: Config) -> RoomConfig {
        RoomConfig {
            config,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            max_line: DEFAULT_MAX_LINE,
            raw_text: false,
            rate: MemberRate::default(),
        }
    }
}

impl RoomConfig {
    /// Set [`RoomConfig::raw_text`].
    pub fn with_raw_text(mut self, raw: bool) -> RoomConfig {
        self.raw_text = raw;
        self
    }

    /// Set [`RoomConfig::rate`].
    pub fn with_rate(mut self, rate: MemberRate) -> RoomConfig {
        self.rate = rate;
        self
    }

    /// Set [`RoomConfig::max_line`].
    pub fn with_max_line(mut self, bytes: usize) -> RoomConfig {
        self.max_line = bytes;
        self
    }

    /// The longest line a member may send: the smaller of
    /// [`RoomConfig::max_line`] and [`Config::max_message_size`].
    pub fn line_limit(&self) -> usize {
        self.max_line.min(self.config.max_message_size)
    }

    /// Set [`RoomConfig::queue_limit`].
    pub fn with_queue_limit(mut self, bytes: usize) -> RoomConfig {
        self.queue_limit = bytes;
        self
    }

    /// Check that every value can work ([`Config::validate`], line framing, a
    /// positive queue limit, a line limit in range); the error names the
    /// first that cannot.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        if self.config.framing != Framing::Line {
            return Err(Error::invalid(format!(
                "the room speaks line framing only, not {}",
                self.config.framing
            )));
        }
        self.rate.validate()?;
        if self.queue_limit == 0 {
            return Err(Error::invalid("queue_limit must be at least 1"));
        }
        if self.max_line == 0 || self.max_line > RELAY_MAX - MAX_PREFIX {
            return Err(Error::invalid(format!(
                "max_line {} is out of range (1 to {})",
                self.max_line,
                RELAY_MAX - MAX_PREFIX
            )));
        }
        Ok(())
    }
}

/// Why a member left the room (in a leave event). The numbers are
/// stable, for the C API.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaveReason {
    /// It sent `/quit`.
    Quit = 0,
    /// It closed the connection.
    Closed = 1,
    /// The connection failed (reset by the peer, or another I/O error).
    Lost = 2,
    /// Its outgoing queue overflowed: it did not read fast enough.
    SlowReader = 3,
    /// It held an unfinished line (part of a line, no newline) for the idle
    /// timeout. (A member that only reads is never dropped as idle.)
    IdleTimeout = 4,
    /// It sent a line longer than the room's line limit (16 KiB by default,
    /// never more than the maximum message size).
    LineTooLong = 5,
    /// The room shut down.
    Shutdown = 6,
    /// It stayed over its rate (Rust `MemberRate`, C
    /// `tcpchat_room_set_rate()`), never catching up, for the flood timeout,
    /// and got `error: excess flood`.
    Flood = 7,
}

impl LeaveReason {
    /// The reason's lowercase name: `"quit"`, `"closed"`, `"lost"`,
    /// `"slow_reader"`, `"idle_timeout"`, `"line_too_long"`, `"shutdown"`,
    /// `"flood"`.
    pub fn name(self) -> &'static str {
        match self {
            LeaveReason::Quit => "quit",
            LeaveReason::Closed => "closed",
            LeaveReason::Lost => "lost",
            LeaveReason::SlowReader => "slow_reader",
            LeaveReason::IdleTimeout => "idle_timeout",
            LeaveReason::LineTooLong => "line_too_long",
            LeaveReason::Shutdown => "shutdown",
            LeaveReason::Flood => "flood",
        }
    }
}

impl std::fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Something that happened in the room, as the handler set with
/// [`Room::on_event`] sees it. `id` identifies a client for the room's whole
/// life (1, 2, ... in the order they joined, never reused), whatever its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomEvent {
    /// A client joined (clients refused because the room is full do not).
    Join {
        /// The client's id.
        id: u64,
        /// Its first name (`guestN`).
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A member left.
    Leave {
        /// The client's id.
        id: u64,
        /// Its name when it left.
        name: String,
        /// Why.
        reason: LeaveReason,
    },
    /// A member sent a message, delivered to everyone else.
    Message {
        /// The sender's id.
        id: u64,
        /// The sender's name.
        name: String,
        /// The text (without the newline).
        text: String,
    },
    /// A member changed its name with `/nick`.
    Rename {
        /// The client's id.
        id: u64,
        /// The name it had.
        old: String,
        /// The name it has now.
        new: String,
    },
}

impl RoomEvent {
    /// The id of the client the event is about.
    pub fn id(&self) -> u64 {
        match self {
            RoomEvent::Join { id, .. }
            | RoomEvent::Leave { id, .. }
            | RoomEvent::Message { id, .. }
            | RoomEvent::Rename { id, .. } => *id,
        }
    }
}

/// What a room has done so far (`Room::stats` in Rust,
/// `tcpchat_room_get_stats` in C, `Room.stats()` in Python).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Clients that joined.
    pub joined: u64,
    /// Clients refused because the room was full.
    pub refused: u64,
    /// Messages relayed (each counted once, however many received it).
    pub messages: u64,
    /// Members dropped by the room: too slow to read, an unfinished line for
    /// too long, a line too long, or flooding.
    pub dropped: u64,
    /// Members in the room now.
    pub online: u64,
}

/// The counters behind [`RoomStats`], updated by the loop.
#[derive(Default)]
struct Counters {
    joined: AtomicU64,
    refused: AtomicU64,
    messages: AtomicU64,
    dropped: AtomicU64,
    online: AtomicU64,
}

/// What the loop shares with the handles: the wake-up, the posted lines, the
/// stop flag and the counters.
struct Inbox {
    waker: mio::Waker,
    posts: Mutex<Vec<Arc<[u8]>>>,
    stop: AtomicBool,
    /// [`RoomConfig::raw_text`], changeable while the room runs.
    raw_text: AtomicBool,
    counters: Counters,
}

impl Inbox {
    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log_at!(LogLevel::Error, "room: cannot wake the event loop: {e}");
        }
    }
}

/// Where the loop's state is.
enum Slot {
    /// Not running: `run`, `start` or `shutdown` may take it.
    Ready(Box<Engine>),
    /// Running on that thread.
    Running(ThreadId),
    /// Shut down (or failed): nothing left.
    Stopped,
}

struct Shared {
    inbox: Arc<Inbox>,
    slot: Mutex<Slot>,
    changed: Condvar,
    config: RoomConfig,
    local: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the engine to run it on `thread`.
    fn take(&self, slot: &mut Slot, thread: ThreadId) -> Result<Box<Engine>> {
        match std::mem::replace(slot, Slot::Running(thread)) {
            Slot::Ready(engine) => Ok(engine),
            other => {
                let e = match other {
                    Slot::Stopped => self.stopped_error(),
                    _ => Error::invalid("the room is already running"),
                };
                *slot = other;
                Err(e)
            }
        }
    }

    fn stopped_error(&self) -> Error {
        Error::Cancelled(format!("the room on {} was shut down", self.local))
    }

    fn post(&self, text: &str) -> Result<()> {
        let max = self.config.config.max_message_size;
        if text.len() > max {
            return Err(Error::MessageTooLarge {
                size: text.len() as u64,
                max,
                context: " (posted to the room)".into(),
            });
        }
        if text.contains('\n') {
            return Err(Error::invalid("a posted message cannot contain a newline"));
        }
        if self.inbox.stop.load(Ordering::SeqCst) {
            return Err(self.stopped_error());
        }
        let line = if self.inbox.raw_text.load(Ordering::Relaxed) {
            text::posted(text)
        } else {
            text::posted(&crate::text::escape_text(text))
        };
        // Without its newline, within what every client accepts.
        if line.len() - 1 > RELAY_MAX {
            return Err(Error::MessageTooLarge {
                size: (line.len() - 1) as u64,
                max: RELAY_MAX,
                context: " (posted to the room, as relayed: `* ` and the text escaped)".into(),
            });
        }
        self.inbox
            .posts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        self.inbox.wake();
        Ok(())
    }

    fn shutdown(&self) {
        self.inbox.stop.store(true, Ordering::SeqCst);
        self.inbox.wake();
        let me = std::thread::current().id();
        let mut slot = self.lock();
        loop {
            match &*slot {
                Slot::Stopped => return,
                // Called by the event handler, on the loop's own thread: the
                // loop stops as soon as the handler returns.
                Slot::Running(t) if *t == me => return,
                Slot::Running(_) => {
                    slot = self.changed.wait(slot).unwrap_or_else(|e| e.into_inner());
                }
                Slot::Ready(_) => {
                    // Nobody runs the loop: close the clients from here.
                    let Ok(engine) = self.take(&mut slot, me) else {
                        return;
                    };
                    drop(slot);
                    let guard = RunGuard {
                        shared: self,
                        engine: Some(engine),
                    };
                    if let Err(e) = guard.run_to_end() {
                        log_at!(LogLevel::Error, "room on {}: {e}", self.local);
                    }
                    return;
                }
            }
        }
    }

    fn stats(&self) -> RoomStats {
        let c = &self.inbox.counters;
        RoomStats {
            joined: c.joined.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            online: c.online.load(Ordering::Relaxed),
        }
    }
}

/// Holds the engine while a thread runs it, and puts the room's state right
/// when the run ends, however it ends: the engine back for a run interrupted
/// by a signal, `Stopped` otherwise (a panic included), waking the threads
/// waiting in `shutdown`.
struct RunGuard<'a> {
    shared: &'a Shared,
    engine: Option<Box<Engine>>,
}

impl RunGuard<'_> {
    /// Run until the room has stopped, going on after signals.
    fn run_to_end(mut self) -> Result<()> {
        let result = loop {
            match self.run_once() {
                Err(Error::Interrupted(_)) => continue,
                other => break other,
            }
        };
        self.engine = None;
        result
    }

    fn run_once(&mut self) -> Result<()> {
        match self.engine.as_mut() {
            Some(engine) => engine.run(),
            None => Err(Error::Internal("the room's engine is missing".into())),
        }
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        let engine = self.engine.take();
        let mut slot = self.shared.lock();
        *slot = match engine {
            Some(engine) if !std::thread::panicking() => Slot::Ready(engine),
            _ => Slot::Stopped,
        };
        drop(slot);
        self.shared.changed.notify_all();
    }
}

/// A chat room server. See the [module documentation](self) for the
/// protocol, the limits and the exact lines the room writes.
///
/// `Room` is `Send + Sync`: share it in an `Arc`, or take a [`RoomHandle`].
/// Dropping it shuts the room down (as [`Room::shutdown`]) and waits for its
/// thread.
pub struct Room {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("local_addr", &self.shared.local)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Room {
    /// Listen on `host`:`port` (port 0 picks a free port: read it back with
    /// [`Room::local_addr`]). Clients wait in the listen backlog until the
    /// room runs ([`Room::run`] or [`Room::start`]). `config` is a
    /// [`RoomConfig`] or a [`Config`].
    ///
    /// Errors: [`Error::InvalidArgument`] for a bad configuration (see
    /// [`RoomConfig::validate`]), [`Error::Resolve`],
    /// [`Error::AddressInUse`], [`Error::Io`].
    pub fn bind(host: &str, port: u16, config: impl Into<RoomConfig>) -> Result<Room> {
        let config = config.into();
        config.validate()?;
        let (engine, inbox, local) = Engine::bind(host, port, &config)?;
        log_at!(LogLevel::Info, "room listening on {local}");
        Ok(Room {
            shared: Arc::new(Shared {
                inbox,
                slot: Mutex::new(Slot::Ready(Box::new(engine))),
                changed: Condvar::new(),
                config,
                local,
            }),
            thread: Mutex::new(None),
        })
    }

    /// The address the room listens on, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The room's configuration.
    pub fn config(&self) -> &RoomConfig {
        &self.shared.config
    }

    /// Call `handler` for every [`RoomEvent`], replacing any previous
    /// handler. Set it before the room runs.
    ///
    /// The handler runs on the thread that runs the room (the one in
    /// [`Room::run`], the room's own thread after [`Room::start`], or one
    /// calling [`Room::shutdown`] on a room that never ran), between two
    /// steps of the loop: every client waits while it runs, so keep it short
    /// (hand work to another thread through a channel if need be). It may
    /// call [`RoomHandle::post`] (the line goes out after the handler
    /// returns) and [`RoomHandle::shutdown`] (which then returns at once, and
    /// the room stops after the handler returns). A panic in the handler is
    /// caught and logged; the room goes on.
    ///
    /// Errors: [`Error::InvalidArgument`] while the room is running,
    /// [`Error::Cancelled`] once it has been shut down.
    pub fn on_event<F>(&self, handler: F) -> Result<()>
    where
        F: FnMut(&RoomEvent) + Send + 'static,
    {
        let mut slot = self.shared.lock();
        match &mut *slot {
            Slot::Ready(engine) => {
                engine.set_handler(Box::new(handler));
                Ok(())
            }
            Slot::Running(_) => Err(Error::invalid(
                "the event handler cannot be changed while the room is running",
            )),
            Slot::Stopped => Err(self.shared.stopped_error()),
        }
    }

    /// Change how fast each member may send ([`RoomConfig::rate`]). Set it
    /// before the room runs.
    ///
    /// Errors: [`Error::InvalidArgument`] for a rate that cannot work (see
    /// [`MemberRate::validate`]) or while the room is running,
    /// [`Error::Cancelled`] once it has been shut down.
    pub fn set_rate(&self, rate: MemberRate) -> Result<()> {
        rate.validate()?;
        let mut slot = self.shared.lock();
        match &mut *slot {
            Slot::Ready(engine) => {
                engine.set_rate(rate);
                Ok(())
            }
            Slot::Running(_) => Err(Error::invalid(
                "the rate cannot be changed while the room is running",
            )),
            Slot::Stopped => Err(self.shared.stopped_error()),
        }
    }

    /// Serve the room on the calling thread until it is shut down (from
    /// another thread, or from the event handler), then return what it did.
    /// Shutting down closes every client gracefully before this returns.
    ///
    /// Errors: [`Error::Interrupted`] when a signal handler ran during the
    /// wait (a program that handles signals, such as Python, gets control
    /// back): nothing is lost, the clients stay connected, and calling `run`
    /// again goes on serving. [`Error::InvalidArgument`] if the room is
    /// already running; [`Error::Cancelled`] if it has been shut down;
    /// [`Error::Io`] if the event loop itself fails (the room then stops).
    pub fn run(&self) -> Result<RoomStats> {
        let mut slot = self.shared.lock();
        let engine = self.shared.take(&mut slot, std::thread::current().id())?;
        drop(slot);
        let mut guard = RunGuard {
            shared: &self.shared,
            engine: Some(engine),
        };
        let result = guard.run_once();
        if !matches!(result, Err(Error::Interrupted(_))) {
            guard.engine = None;
        }
        drop(guard);
        result.map(|()| self.stats())
    }

    /// Serve the room on a new library thread (with signals blocked, so
    /// they reach the program's own threads) and return at once. Stop it
    /// with [`Room::shutdown`] or by dropping the room.
    ///
    /// Errors: as [`Room::run`] for a room already running or shut down;
    /// [`Error::Io`] if the thread cannot be created.
    pub fn start(&self) -> Result<()> {
        let mut slot = self.shared.lock();
        let engine = self.shared.take(&mut slot, std::thread::current().id())?;
        let shared = self.shared.clone();
        let spawned = sys::spawn_quiet("tcpchat-room".into(), move || {
            let guard = RunGuard {
                shared: &shared,
                engine: Some(engine),
            };
            if let Err(e) = guard.run_to_end() {
                log_at!(LogLevel::Error, "room on {}: {e}", shared.local);
            }
        });
        match spawned {
            Ok(thread) => {
                *slot = Slot::Running(thread.thread().id());
                drop(slot);
                *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
                Ok(())
            }
            Err(e) => {
                // The closure (and the engine in it) is gone with the failed
                // spawn; the room cannot run any more.
                *slot = Slot::Stopped;
                drop(slot);
                self.shared.changed.notify_all();
                Err(Error::io("starting the room's thread", e))
            }
        }
    }

    /// A handle that posts to and shuts down this room from any thread.
    pub fn handle(&self) -> RoomHandle {
        RoomHandle {
            shared: self.shared.clone(),
        }
    }

    /// Turn [`RoomConfig::raw_text`] on or off, from any thread, also while
    /// the room runs: it applies to the lines that arrive from then on.
    pub fn set_raw_text(&self, raw: bool) {
        self.shared.inbox.raw_text.store(raw, Ordering::Relaxed);
    }

    /// Send `* TEXT` to every client (see [`RoomHandle::post`]).
    pub fn post(&self, text: &str) -> Result<()> {
        self.shared.post(text)
    }

    /// Shut the room down and return when it has stopped (see
    /// [`RoomHandle::shutdown`]).
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Whether shutdown has been asked for.
    pub fn is_shut_down(&self) -> bool {
        self.shared.inbox.stop.load(Ordering::SeqCst)
    }

    /// What the room has done so far; a snapshot, safe from any thread.
    pub fn stats(&self) -> RoomStats {
        self.shared.stats()
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.shared.shutdown();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            // Never join from the room's own thread (a handler holding the
            // last reference to the room).
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// Posts to and shuts down a [`Room`] from any thread. Cheap to clone;
/// `Send + Sync`. It stays valid after the room is dropped (its calls then
/// report that the room was shut down).
#[derive(Clone)]
pub struct RoomHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomHandle")
            .field("local_addr", &self.shared.local)
            .finish()
    }
}

impl RoomHandle {
    /// Send `* TEXT` to every client in the room (server announcements; no
    /// event is reported for them). Returns once the line is queued for the
    /// room's loop; clients get it after the lines already queued for them.
    /// A post made before the room runs goes to the clients present when it
    /// starts.
    ///
    /// Errors: [`Error::InvalidArgument`] if `text` contains a newline,
    /// [`Error::MessageTooLarge`] if it is longer than
    /// [`Config::max_message_size`], [`Error::Cancelled`] once the room is
    /// shutting down.
    pub fn post(&self, text: &str) -> Result<()> {
        self.shared.post(text)
    }

    /// Shut the room down: stop accepting, send every client
    /// `* server shutting down`, close each gracefully (its queue flushed,
    /// the write half shut down, then up to [`Config::close_timeout`] for it
    /// to close), and stop the loop. Idempotent; callable from any thread.
    ///
    /// Returns when the room has stopped, wherever its loop runs: in
    /// [`Room::run`] on another thread (which then returns too), on the
    /// room's thread after [`Room::start`], or nowhere yet (this call then
    /// closes the clients itself). The one exception: called from the event
    /// handler (on the loop's own thread), it only asks, and the room stops
    /// once the handler returns.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Whether shutdown has been asked for.
    pub fn is_shut_down(&self) -> bool {
        self.shared.inbox.stop.load(Ordering::SeqCst)
    }

    /// What the room has done so far; a snapshot.
    pub fn stats(&self) -> RoomStats {
        self.shared.stats()
    }

    /// The address the room listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }
}
