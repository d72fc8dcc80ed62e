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
pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    if host.is_empty() {
        return Err(Error::invalid("host must not be empty"));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
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
