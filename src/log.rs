//! What the library logs (connections, disconnections, errors a service
//! survived), and how a program sees it.
//!
//! Nothing is logged until a program installs a logger with [`set_logger`].
//! The C API's `tcpchat_set_log_callback` and Python's
//! `tcpchat.set_log_handler` install one the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How important a log record is. A logger set at one level receives records
/// of that level and every more important one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Logging off (only meaningful as a threshold).
    Off = 0,
    /// A failure the library could not recover from for that connection.
    Error = 1,
    /// Something wrong that the library handled (a client dropped for
    /// breaking the format, a refused client).
    Warn = 2,
    /// Connections opening and closing, servers starting and stopping.
    Info = 3,
    /// Details useful when debugging.
    Debug = 4,
}

impl LogLevel {
    /// The level for a raw number (0 = off ... 4 = debug).
    pub fn from_code(code: u32) -> Option<LogLevel> {
        match code {
            0 => Some(LogLevel::Off),
            1 => Some(LogLevel::Error),
            2 => Some(LogLevel::Warn),
            3 => Some(LogLevel::Info),
            4 => Some(LogLevel::Debug),
            _ => None,
        }
    }

    /// The level's lowercase name ("error", "warn", ...).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// A function that receives log records. It may be called from any thread,
/// including the library's own service threads, so it must be `Send + Sync`.
pub type Logger = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

static LEVEL: AtomicU8 = AtomicU8::new(0);
static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

/// Install `logger` to receive records at `level` and above, replacing any
/// previous one; `None` (or [`LogLevel::Off`]) turns logging off. Process-wide.
/// The summary of repeated records (see [`SUMMARY_PERIOD`]) starts afresh.
pub fn set_logger(level: LogLevel, logger: Option<Logger>) {
    let mut slot = LOGGER.write().unwrap_or_else(|e| e.into_inner());
    let level = if logger.is_some() { level } else { LogLevel::Off };
    *slot = logger;
    *SITES.lock().unwrap_or_else(|e| e.into_inner()) = None;
    LEVEL.store(level as u8, Ordering::SeqCst);
}

/// A logger that writes `tcpchat: LEVEL: message` lines to stderr, as the
/// example programs use.
///
/// It never panics, never blocks and never raises SIGPIPE: a record is
/// written only when stderr can take it at once, and dropped otherwise (a
/// stderr pipe that nobody reads, a paused terminal, or a closed pipe, as in
/// `program 2>&1 | head`). Dropped records are counted in
/// [`dropped_records`]. A record longer than 4,000 bytes is cut there.
pub fn stderr_logger() -> Logger {
    Arc::new(|level, msg| {
        let mut line = format!("tcpchat: {}: {}", level.name(), msg);
        if line.len() > MAX_RECORD {
            let mut cut = MAX_RECORD - 4;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" ...");
        }
        line.push('\n');
        if !crate::sys::write_stderr_now(line.as_bytes()) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// The longest record [`stderr_logger`] writes, newline included (within one
/// pipe buffer page: such a write never waits once the pipe has room). Not
/// `pub`: cbindgen would put it in the C header.
const MAX_RECORD: usize = 4000;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log records [`stderr_logger`] dropped because stderr could not
/// take them at once (closed, full, or too slow).
pub fn dropped_records() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The library's own records (error, warn and info) are summarised per call
/// site: at most one per
/// [`SUMMARY_PERIOD`] from each place in the code that logs, the next one
/// saying how many were left out. One hostile client repeating the same
/// mistake thousands of times a second thus costs the log one line a second.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(1);

/// Per call site, when its last record went out and how many were left out
/// since. Cleared by [`set_logger`]: a new logger starts with a clean slate.
static SITES: Mutex<Option<HashMap<&'static str, Site>>> = Mutex::new(None);

struct Site {
    since: Instant,
    suppressed: u64,
}

/// Whether a record from `site` may go out now; `Some(n)` with the number
/// of records from that site left out since the last one.
pub(crate) fn admit(site: &'static str) -> Option<u64> {
    let now = Instant::now();
    let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    let map = sites.get_or_insert_with(HashMap::new);
    match map.get_mut(site) {
        Some(s) if now.duration_since(s.since) < SUMMARY_PERIOD => {
            s.suppressed += 1;
            None
        }
        Some(s) => {
            let n = s.suppressed;
            *s = Site { since: now, suppressed: 0 };
            Some(n)
        }
        None => {
            map.insert(site, Site { since: now, suppressed: 0 });
            Some(0)
        }
    }
}

/// [`log`] for the library's own call sites, summarised by [`admit`]
/// (except [`LogLevel::Debug`] records: asked for to see everything).
pub(crate) fn log_summarised(level: LogLevel, site: &'static str, msg: std::fmt::Arguments<'_>) {
    if level == LogLevel::Debug {
        return log(level, &msg.to_string());
    }
    match admit(site) {
        None => {}
        Some(0) => log(level, &msg.to_string()),
        Some(n) => log(level, &format!("{msg} ({n} similar records left out)")),
    }
}

/// Whether a record at `level` would reach a logger.
pub fn enabled(level: LogLevel) -> bool {
    level != LogLevel::Off && (level as u8) <= LEVEL.load(Ordering::Relaxed)
}

/// Send one record to the installed logger, if it wants that level.
pub fn log(level: LogLevel, msg: &str) {
    if !enabled(level) {
        return;
    }
    let logger = LOGGER.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(logger) = logger {
        // Marked, so that a C or Python log callback calling back into the
        // connection whose call is logging is refused, not deadlocked.
        IN_LOGGER.with(|f| f.set(f.get() + 1));
        struct Unmark;
        impl Drop for Unmark {
            fn drop(&mut self) {
                IN_LOGGER.with(|f| f.set(f.get() - 1));
            }
        }
        let _unmark = Unmark;
        logger(level, msg);
    }
}

thread_local! {
    static IN_LOGGER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether the calling thread is inside a logger call (a log callback).
pub(crate) fn in_logger() -> bool {
    IN_LOGGER.with(|f| f.get() > 0)
}

macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::log_summarised($level, concat!(file!(), ":", line!()), format_args!($($arg)*));
        }
    };
}
pub(crate) use log_at;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_site_is_summarised_to_one_record_a_period() {
        let started = Instant::now();
        let admitted = (0..10_000).filter(|_| admit("test-site-a").is_some()).count();
        let periods = started.elapsed().as_secs() as usize + 1;
        assert!(admitted >= 1 && admitted <= periods, "{admitted} records in {periods} periods");
        // Another site is not held back by the first.
        assert_eq!(admit("test-site-b"), Some(0));
    }
}
