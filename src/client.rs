//! Connecting to a server.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;

use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::log::{log_at, LogLevel};

/// Resolve `host` (a name, an IPv4 literal, or an IPv6 literal with or
/// without brackets) with `port` into every address it names.
///
/// The host is checked before any lookup: empty, longer than
/// [`MAX_HOST_LEN`] bytes, or holding whitespace or a control character, it
/// is refused with [`Error::InvalidArgument`] and never reaches the system
/// resolver. The message quotes at most the first 64 characters.
pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    check_host(host)?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    // Literals never reach the resolver (no lookup, no DNS traffic).
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            host: host.to_string(),
            detail: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Resolve {
            host: host.to_string(),
            detail: "no addresses found".into(),
        });
    }
    Ok(addrs)
}

/// The longest host name accepted (the DNS limit for a name).
const MAX_HOST_LEN: usize = 253;

/// Refuse a host that no resolver should see: empty, too long, or with
/// whitespace or control characters (`"127.0.0.1\n"`, `"127.0.0.1 "`).
pub(crate) fn check_host(host: &str) -> Result<()> {
    let quoted = || {
        let mut q: String = host.chars().take(64).collect();
        if q.len() < host.len() {
            q.push_str("...");
        }
        format!("{q:?}")
    };
    if host.is_empty() {
        return Err(Error::invalid("host must not be empty"));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(Error::invalid(format!(
            "host {} is {} bytes long; a host name has at most {MAX_HOST_LEN}",
            quoted(),
            host.len()
        )));
    }
    if let Some(c) = host.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(format!(
            "host {} contains {}; a host is a name or an address, with no spaces or control characters",
            quoted(),
            if c.is_whitespace() { "whitespace" } else { "a control character" }
        )));
    }
    Ok(())
}

/// Connect to `host`:`port` and return a framed connection.
///
/// `host` is a name (tried at every address it resolves to, in order, until
/// one accepts) or an IPv4 or IPv6 literal (`"::1"` or `"[::1]"`). Each
/// attempt waits at most [`Config::connect_timeout`].
///
/// Errors: [`Error::InvalidArgument`] for a bad configuration or port 0,
/// [`Error::Resolve`] when the name resolves to nothing,
/// [`Error::ConnectionRefused`] when nothing listens, [`Error::Timeout`] when
/// no address answered in time (the last failure is reported).
///
/// ```no_run
/// let mut conn = tcpchat::connect("127.0.0.1", 8080, &tcpchat::Config::default())?;
/// if let Some(greeting) = conn.recv()? {
///     println!("server: {}", String::from_utf8_lossy(&greeting));
/// }
/// conn.send(b"BYE")?;
/// conn.close()?;
/// # Ok::<(), tcpchat::Error>(())
/// ```
pub fn connect(host: &str, port: u16, config: &Config) -> Result<Conn> {
    config.validate()?;
    if port == 0 {
        return Err(Error::invalid("port 0 cannot be connected to"));
    }
    let addrs = resolve(host, port)?;
    let config = Arc::new(config.clone());
    let mut last = None;
    for addr in addrs {
        let attempt = match config.connect_timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => {
                log_at!(LogLevel::Info, "connected to {addr}");
                return Conn::new(stream, config, None);
            }
            Err(e) => {
                log_at!(LogLevel::Debug, "connecting to {addr} failed: {e}");
                last = Some(connect_error(addr, e, &config));
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::invalid("no address to connect to")))
}

fn connect_error(addr: SocketAddr, e: io::Error, config: &Config) -> Error {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::ConnectionRefused {
            addr: addr.to_string(),
        },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout {
            op: format!("connecting to {addr}"),
            after: config.connect_timeout.unwrap_or_default(),
        },
        _ => Error::io(format!("connecting to {addr}"), e),
    }
}
