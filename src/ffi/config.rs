//! `tcpchat_config`: the settings handed to connect, bind and the services.

use std::ffi::c_char;
use std::time::Duration;

use crate::config::{Config, Framing};
use crate::error::{Error, Result, Status};

use super::boundary::{arg_bytes, arg_str, guard, guard_value};
use super::handles::{box_free, box_into_c, box_mut};
use super::tcpchat_framing;

/// Settings for connections, servers and services.
///
/// Create with `tcpchat_config_new()` (every setting at its default), change
/// with the `tcpchat_config_set_*` functions, pass to
/// `tcpchat_conn_connect()`, `tcpchat_server_bind()` (which copy it: the
/// config can be changed or freed afterwards without effect on them), and
/// free with `tcpchat_config_free()`. Functions that take a config accept
/// NULL for "all defaults".
///
/// A setter refuses a value that cannot work with
/// `TCPCHAT_STATUS_INVALID_ARGUMENT` and leaves the config unchanged.
///
/// Thread safety: a config may be read by several threads at once (passed
/// to connect or bind), but must not be changed while another thread uses it.
///
/// Methods: `tcpchat_config_new`, `tcpchat_config_free`,
/// `tcpchat_config_set_framing`, `tcpchat_config_set_max_message_size`,
/// `tcpchat_config_set_end_word`, `tcpchat_config_set_connect_timeout_ms`,
/// `tcpchat_config_set_read_timeout_ms`, `tcpchat_config_set_write_timeout_ms`,
/// `tcpchat_config_set_idle_timeout_ms`, `tcpchat_config_set_close_timeout_ms`,
/// `tcpchat_config_set_nodelay`, `tcpchat_config_set_raw_buffer_size`,
/// `tcpchat_config_set_backlog`, `tcpchat_config_set_max_clients`,
/// `tcpchat_config_set_allow`, `tcpchat_config_set_deny`,
/// `tcpchat_config_set_max_per_address`.
pub struct tcpchat_config {
    pub(crate) config: Config,
}

impl tcpchat_config {
    /// The config behind a possibly NULL pointer (NULL = defaults).
    ///
    /// # Safety
    /// `p` must be NULL or a live config handle.
    pub(crate) unsafe fn get_or_default(p: *const tcpchat_config) -> Config {
        if p.is_null() {
            Config::default()
        } else {
            (*p).config.clone()
        }
    }
}

/// A new config with every setting at its default: `line` framing, 1 MiB
/// maximum message size, end word `BYE`, connect timeout 10 s, no read
/// timeout, write timeout 30 s, idle timeout 300 s, close timeout 2 s,
/// TCP_NODELAY on, raw buffer 1024 bytes, backlog 128, 1024 clients at most.
///
/// The caller owns the result and frees it with `tcpchat_config_free()`.
/// Returns NULL only if memory ran out.
#[no_mangle]
pub extern "C" fn tcpchat_config_new() -> *mut tcpchat_config {
    guard_value(std::ptr::null_mut(), || {
        box_into_c(tcpchat_config {
            config: Config::default(),
        })
    })
}

/// Free a config. NULL is ignored. Connections, servers and rooms made with
/// it are not affected (each copied it).
///
/// Free it exactly once, and use it no more afterwards: as with `free()`,
/// freeing the same config twice, or passing a freed config to any
/// function, is undefined behaviour that the library cannot detect (a config
/// is a plain single-owner handle, unlike the reference-counted
/// connections, servers and rooms). Set your pointer to NULL after freeing
/// if it may be freed again.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_free(config: *mut tcpchat_config) {
    guard_value((), || box_free(config))
}

/// Apply `change` to a copy, validate it, and store it only if valid.
unsafe fn update(config: *mut tcpchat_config, change: impl FnOnce(&mut Config) -> Result<()>) -> Status {
    guard(|| {
        let handle = box_mut(config, "config")?;
        let mut next = handle.config.clone();
        change(&mut next)?;
        next.validate()?;
        handle.config = next;
        Ok(())
    })
}

/// Milliseconds from C to a Rust timeout: 0 means "no timeout".
fn timeout_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Set the framing: one of `TCPCHAT_FRAMING_RAW`, `TCPCHAT_FRAMING_LINE`
/// (the default) or `TCPCHAT_FRAMING_FRAME`. Any other value is refused.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_framing(config: *mut tcpchat_config, framing: tcpchat_framing) -> Status {
    update(config, |c| {
        c.framing = Framing::from_code(framing)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown framing {framing}")))?;
        Ok(())
    })
}

/// Set the largest message accepted or sent, in bytes (1 to 4294967295, and
/// not less than the end word's length; default 1 MiB). A longer incoming
/// line or frame closes its connection with
/// `TCPCHAT_STATUS_MESSAGE_TOO_LARGE` before it is buffered.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_max_message_size(config: *mut tcpchat_config, bytes: usize) -> Status {
    update(config, |c| {
        c.max_message_size = bytes;
        Ok(())
    })
}

/// Set the message that ends a chat session (default `BYE`). The bytes are
/// copied. Refused when empty, or containing `\n` in line framing.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_end_word(
    config: *mut tcpchat_config,
    word: *const u8,
    len: usize,
) -> Status {
    update(config, |c| {
        c.end_word = arg_bytes(word, len, "word")?.to_vec();
        Ok(())
    })
}

/// Set how long a connect may take per address tried, in milliseconds
/// (0 = no limit; default 10000).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_connect_timeout_ms(config: *mut tcpchat_config, ms: u64) -> Status {
    update(config, |c| {
        c.connect_timeout = timeout_ms(ms);
        Ok(())
    })
}

/// Set how long a receive waits for a message before failing with
/// `TCPCHAT_STATUS_TIMEOUT`, in milliseconds (0 = for ever, the default).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_read_timeout_ms(config: *mut tcpchat_config, ms: u64) -> Status {
    update(config, |c| {
        c.read_timeout = timeout_ms(ms);
        Ok(())
    })
}

/// Set how long a send waits for the peer to make room before failing with
/// `TCPCHAT_STATUS_TIMEOUT`, in milliseconds (0 = for ever; default 30000).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_write_timeout_ms(config: *mut tcpchat_config, ms: u64) -> Status {
    update(config, |c| {
        c.write_timeout = timeout_ms(ms);
        Ok(())
    })
}

/// Set how long the echo service keeps a client that sends nothing, or only
/// part of a message, and how long the room keeps a member holding an
/// unfinished line (a member that only reads stays), in milliseconds
/// (0 = for ever; default 300000).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_idle_timeout_ms(config: *mut tcpchat_config, ms: u64) -> Status {
    update(config, |c| {
        c.idle_timeout = timeout_ms(ms);
        Ok(())
    })
}

/// Set how long a graceful close waits for the peer to finish after our
/// write half is shut down, in milliseconds (0 = do not wait; default 2000).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_close_timeout_ms(config: *mut tcpchat_config, ms: u64) -> Status {
    update(config, |c| {
        c.close_timeout = Duration::from_millis(ms);
        Ok(())
    })
}

/// Turn TCP_NODELAY on (the default) or off for every connection.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_nodelay(config: *mut tcpchat_config, on: bool) -> Status {
    update(config, |c| {
        c.nodelay = on;
        Ok(())
    })
}

/// Set the size of one read in raw framing, in bytes (1 to 67108864; default 1024).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_raw_buffer_size(config: *mut tcpchat_config, bytes: usize) -> Status {
    update(config, |c| {
        c.raw_buffer_size = bytes;
        Ok(())
    })
}

/// Set the listen backlog of servers (at least 1; default 128).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_backlog(config: *mut tcpchat_config, backlog: u32) -> Status {
    update(config, |c| {
        c.backlog = backlog;
        Ok(())
    })
}

/// Set how many clients a service serves at once (at least 1; default 1024).
/// One more is sent a "server full" message and closed.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_max_clients(config: *mut tcpchat_config, clients: usize) -> Status {
    update(config, |c| {
        c.max_clients = clients;
        Ok(())
    })
}

/// Accept only peers in these ranges: `ranges` is a NUL-terminated list of
/// IPv4/IPv6 addresses and CIDR ranges separated by commas or spaces, such
/// as `"127.0.0.0/8, ::1, 10.1.0.0/16"` (borrowed for the call). An empty
/// string (the default) allows everyone not denied. Refused, with the config
/// unchanged, when an entry does not parse (the message names it).
///
/// Servers, the echo service and the room apply the lists the moment a
/// client is accepted: a refused peer is closed at once without a byte of
/// protocol. Deny wins over allow.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_allow(config: *mut tcpchat_config, ranges: *const c_char) -> Status {
    update(config, |c| {
        c.allow = crate::access::parse_list(arg_str(ranges, "ranges")?)?;
        Ok(())
    })
}

/// Refuse peers in these ranges, whatever the allow list says. Same format
/// as `tcpchat_config_set_allow()`; an empty string (the default) denies
/// nobody.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_deny(config: *mut tcpchat_config, ranges: *const c_char) -> Status {
    update(config, |c| {
        c.deny = crate::access::parse_list(arg_str(ranges, "ranges")?)?;
        Ok(())
    })
}

/// Set how many connections one address may have open to a server at once
/// (0 = no limit, the default). One more from that address is closed at
/// once.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_config_set_max_per_address(config: *mut tcpchat_config, connections: usize) -> Status {
    update(config, |c| {
        c.max_per_address = connections;
        Ok(())
    })
}
