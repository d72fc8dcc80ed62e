//! What the library logs (connections, disconnections, errors a service
//! survived), and how a program sees it.
//!
//! Nothing is logged until a program installs a logger with [`set_logger`].
//! The C API's `tcpchat_set_log_callback` and Python's
//! `tcpchat.set_log_handler` install one the same way.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

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
pub fn set_logger(level: LogLevel, logger: Option<Logger>) {
    let mut slot = LOGGER.write().unwrap_or_else(|e| e.into_inner());
    let level = if logger.is_some() { level } else { LogLevel::Off };
    *slot = logger;
    LEVEL.store(level as u8, Ordering::SeqCst);
}

/// A logger that writes `tcpchat: LEVEL: message` lines to stderr, as the
/// example programs use.
pub fn stderr_logger() -> Logger {
    Arc::new(|level, msg| eprintln!("tcpchat: {}: {}", level.name(), msg))
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
        logger(level, msg);
    }
}

macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::log($level, &format!($($arg)*));
        }
    };
}
pub(crate) use log_at;
