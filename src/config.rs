//! Configuration shared by clients, servers, the echo service and the room.

use std::str::FromStr;
use std::time::Duration;

use crate::access::IpNet;
use crate::error::{Error, Result};

/// The default maximum message size: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// The default size of one read in `raw` framing: 1024 bytes, as the tutorial's `recv(1024)`.
pub const DEFAULT_RAW_BUFFER_SIZE: usize = 1024;
/// The default end word that ends a chat session.
pub const DEFAULT_END_WORD: &str = "BYE";

/// How messages are delimited on the wire.
///
/// The formats are a contract kept exactly by the Rust, C and Python faces:
///
/// * `Raw`: a send writes the bytes as they are; a receive returns what one
///   read returns, up to the raw buffer size (1024 by default). There are no
///   message boundaries: this is what the classic tutorial's `recv(1024)` does.
/// * `Line` (the default): a message is its bytes followed by `\n`. On receive
///   the `\n` and a `\r` just before it are stripped. A message containing
///   `\n` is refused on send. `nc` and `telnet` speak it.
/// * `Frame`: a 4-byte big-endian unsigned length, then that many bytes.
///   Binary-safe.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Framing {
    /// Bytes as they come: one read is one message.
    Raw = 0,
    /// Newline-terminated messages.
    #[default]
    Line = 1,
    /// 4-byte big-endian length prefix, then the payload.
    Frame = 2,
}

impl Framing {
    /// The framing's name as used by the examples' `--framing` flag.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Raw => "raw",
            Framing::Line => "line",
            Framing::Frame => "frame",
        }
    }

    /// The framing for a raw number (0 = raw, 1 = line, 2 = frame).
    pub fn from_code(code: u32) -> Option<Framing> {
        match code {
            0 => Some(Framing::Raw),
            1 => Some(Framing::Line),
            2 => Some(Framing::Frame),
            _ => None,
        }
    }
}

impl FromStr for Framing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Framing> {
        match s {
            "raw" => Ok(Framing::Raw),
            "line" => Ok(Framing::Line),
            "frame" => Ok(Framing::Frame),
            other => Err(Error::invalid(format!(
                "unknown framing {other:?}: expected raw, line or frame"
            ))),
        }
    }
}

impl std::fmt::Display for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings for connections, servers and services.
///
/// Build one with `Config::default()` and the `with_*` methods, or set the
/// public fields directly; [`Config::validate`] (called by every constructor
/// that takes a `Config`) refuses values that cannot work.
///
/// A timeout of `None` means "wait for ever".
///
/// ```
/// use std::time::Duration;
/// use tcpchat::{Config, Framing};
/// let config = Config::default()
///     .with_framing(Framing::Frame)
///     .with_read_timeout(Some(Duration::from_secs(5)));
/// assert_eq!(config.max_message_size, 1024 * 1024);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How messages are delimited. Default: [`Framing::Line`].
    pub framing: Framing,
    /// The largest message accepted or sent, in bytes (the payload, without
    /// the newline or length prefix). A longer incoming line or frame closes
    /// that connection with [`Error::MessageTooLarge`] before it is buffered.
    /// Default: 1 MiB. Must be between 1 and 2^32 - 1.
    pub max_message_size: usize,
    /// The message that ends a chat session. Default: `BYE`.
    pub end_word: Vec<u8>,
    /// How long a connect may take, per address tried. Default: 10 s.
    pub connect_timeout: Option<Duration>,
    /// How long a receive waits for a message before failing with
    /// [`Error::Timeout`]. Default: `None` (wait for ever; a chat waits for a human).
    pub read_timeout: Option<Duration>,
    /// How long a send may wait for the peer to make room before failing with
    /// [`Error::Timeout`]. Default: 30 s.
    pub write_timeout: Option<Duration>,
    /// How long the echo service keeps a client that sends nothing (or only
    /// part of a message); how long the room keeps a member holding an
    /// unfinished line (a member that only reads stays: dead peers are found
    /// by TCP keepalive instead); and how long a chat session waits for
    /// the peer's turn (with the read timeout, if shorter), so that a silent
    /// client cannot hold a turn-based server for ever. Default: 300 s.
    pub idle_timeout: Option<Duration>,
    /// How long a graceful close waits for the peer to finish after our write
    /// half is shut down. Default: 2 s.
    pub close_timeout: Duration,
    /// Set `TCP_NODELAY` on every connection. Default: `true`.
    pub nodelay: bool,
    /// The size of one read in `raw` framing, in bytes. Default: 1024.
    pub raw_buffer_size: usize,
    /// The listen backlog of servers. Default: 128.
    pub backlog: u32,
    /// The largest number of clients a service serves at once; one more is
    /// told the server is full and closed. Default: 1024.
    pub max_clients: usize,
    /// Servers accept only peers in these ranges (empty = everyone not
    /// denied). See [`crate::access`]. Default: empty.
    pub allow: Vec<IpNet>,
    /// Servers refuse peers in these ranges, whatever `allow` says. Default: empty.
    pub deny: Vec<IpNet>,
    /// The largest number of connections one address may have open to a
    /// server at once (0 = no limit). Default: 0.
    pub max_per_address: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            framing: Framing::Line,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            end_word: DEFAULT_END_WORD.as_bytes().to_vec(),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: None,
            write_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(300)),
            close_timeout: Duration::from_secs(2),
            nodelay: true,
            raw_buffer_size: DEFAULT_RAW_BUFFER_SIZE,
            backlog: 128,
            max_clients: 1024,
            allow: Vec::new(),
            deny: Vec::new(),
            max_per_address: 0,
        }
    }
}

impl Config {
    /// Set [`Config::framing`].
    pub fn with_framing(mut self, framing: Framing) -> Config {
        self.framing = framing;
        self
    }
    /// Set [`Config::max_message_size`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Config {
        self.max_message_size = bytes;
        self
    }
    /// Set [`Config::end_word`].
    pub fn with_end_word(mut self, word: impl Into<Vec<u8>>) -> Config {
        self.end_word = word.into();
        self
    }
    /// Set [`Config::connect_timeout`].
    pub fn with_connect_timeout(mut self, t: Option<Duration>) -> Config {
        self.connect_timeout = t;
        self
    }
    /// Set [`Config::read_timeout`].
    pub fn with_read_timeout(mut self, t: Option<Duration>) -> Config {
        self.read_timeout = t;
        self
    }
    /// Set [`Config::write_timeout`].
    pub fn with_write_timeout(mut self, t: Option<Duration>) -> Config {
        self.write_timeout = t;
        self
    }
    /// Set [`Config::idle_timeout`].
    pub fn with_idle_timeout(mut self, t: Option<Duration>) -> Config {
        self.idle_timeout = t;
        self
    }
    /// Set [`Config::close_timeout`].
    pub fn with_close_timeout(mut self, t: Duration) -> Config {
        self.close_timeout = t;
        self
    }
    /// Set [`Config::nodelay`].
    pub fn with_nodelay(mut self, on: bool) -> Config {
        self.nodelay = on;
        self
    }
    /// Set [`Config::raw_buffer_size`].
    pub fn with_raw_buffer_size(mut self, bytes: usize) -> Config {
        self.raw_buffer_size = bytes;
        self
    }
    /// Set [`Config::backlog`].
    pub fn with_backlog(mut self, backlog: u32) -> Config {
        self.backlog = backlog;
        self
    }
    /// Set [`Config::max_clients`].
    pub fn with_max_clients(mut self, n: usize) -> Config {
        self.max_clients = n;
        self
    }

    /// Set [`Config::allow`].
    pub fn with_allow(mut self, ranges: Vec<IpNet>) -> Config {
        self.allow = ranges;
        self
    }
    /// Set [`Config::deny`].
    pub fn with_deny(mut self, ranges: Vec<IpNet>) -> Config {
        self.deny = ranges;
        self
    }
    /// Set [`Config::max_per_address`].
    pub fn with_max_per_address(mut self, n: usize) -> Config {
        self.max_per_address = n;
        self
    }

    /// Whether a peer at `ip` passes [`Config::allow`] and [`Config::deny`].
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        crate::access::permitted(&self.allow, &self.deny, ip)
    }

    /// Check that every value can work; the error names the first that cannot.
    pub fn validate(&self) -> Result<()> {
        if self.max_message_size == 0 || self.max_message_size as u64 > u32::MAX as u64 {
            return Err(Error::invalid(format!(
                "max_message_size {} is out of range (1 to {})",
                self.max_message_size,
                u32::MAX
            )));
        }
        if self.raw_buffer_size == 0 || self.raw_buffer_size > 64 * 1024 * 1024 {
            return Err(Error::invalid(format!(
                "raw_buffer_size {} is out of range (1 to 67108864)",
                self.raw_buffer_size
            )));
        }
        if self.end_word.is_empty() {
            return Err(Error::invalid("end_word must not be empty"));
        }
        if self.end_word.len() > self.max_message_size {
            return Err(Error::invalid("end_word is longer than max_message_size"));
        }
        if self.framing == Framing::Line && self.end_word.contains(&b'\n') {
            return Err(Error::invalid("end_word must not contain a newline in line framing"));
        }
        if self.max_clients == 0 {
            return Err(Error::invalid("max_clients must be at least 1"));
        }
        if self.backlog == 0 || self.backlog > i32::MAX as u32 {
            return Err(Error::invalid(format!("backlog {} is out of range", self.backlog)));
        }
        for (name, t) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if t == Some(Duration::ZERO) {
                return Err(Error::invalid(format!(
                    "{name} must be positive (use None to wait for ever)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().framing, Framing::Line);
        assert_eq!(Config::default().end_word, b"BYE");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::default().with_max_message_size(0).validate().is_err());
        assert!(Config::default().with_raw_buffer_size(0).validate().is_err());
        assert!(Config::default().with_max_clients(0).validate().is_err());
        assert!(Config::default().with_end_word("a\nb").validate().is_err());
        assert!(Config::default()
            .with_read_timeout(Some(Duration::ZERO))
            .validate()
            .is_err());
    }

    #[test]
    fn framing_parses() {
        assert_eq!("raw".parse::<Framing>().unwrap(), Framing::Raw);
        assert_eq!("frame".parse::<Framing>().unwrap(), Framing::Frame);
        let e = "json".parse::<Framing>().unwrap_err();
        assert!(e.to_string().contains("json"));
    }
}
