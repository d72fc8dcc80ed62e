//! Listening for and accepting clients, and stopping from any thread.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::access::{AddressSlot, PerAddress};
use crate::client::resolve;
use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::log::{log_at, LogLevel};
use crate::sys::{self, Canceller, Ready};

/// A listening TCP server.
///
/// [`Server::bind`] listens; [`Server::accept`] waits for the next client;
/// [`Server::serve_chat`](crate::Server::serve_chat) and
/// [`Server::serve_echo`](crate::Server::serve_echo) run the chat loop and
/// the echo service on it. A `Server` is `Send + Sync`: share it (in an
/// `Arc`) or take a [`ShutdownHandle`] to stop it from another thread.
///
/// Shutting down wakes a blocked `accept` at once (no polling, no waiting for
/// a next client) and cancels the blocking calls of every connection this
/// server accepted; after it, `accept` fails with [`Error::Cancelled`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: Arc<Config>,
    local: SocketAddr,
    shutdown: Canceller,
    per_address: PerAddress,
}

/// Stops a [`Server`] from any thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    cancel: Canceller,
}

impl ShutdownHandle {
    /// Stop the server: a blocked or later `accept` fails with
    /// [`Error::Cancelled`], serve loops return, and the blocking calls of the
    /// server's connections are cancelled. Idempotent.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Whether the server has been shut down.
    pub fn is_shut_down(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl Server {
    /// Listen on `host`:`port` (port 0 picks a free port: read it back with
    /// [`Server::local_addr`]). `host` is an IP literal or a name; the first
    /// of its addresses that can be bound is used. Uses `SO_REUSEADDR` and
    /// [`Config::backlog`].
    ///
    /// Errors: [`Error::InvalidArgument`] for a bad configuration,
    /// [`Error::Resolve`], [`Error::AddressInUse`], [`Error::Io`].
    pub fn bind(host: &str, port: u16, config: Config) -> Result<Server> {
        config.validate()?;
        let addrs = resolve(host, port)?;
        let mut last = None;
        for addr in addrs {
            match listen(addr, config.backlog) {
                Ok(listener) => {
                    let local = listener
                        .local_addr()
                        .map_err(|e| Error::io("reading the bound address", e))?;
                    let shutdown =
                        Canceller::new().map_err(|e| Error::io("creating the shutdown handle", e))?;
                    log_at!(LogLevel::Info, "listening on {local}");
                    return Ok(Server {
                        listener,
                        config: Arc::new(config),
                        local,
                        shutdown,
                        per_address: PerAddress::default(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    last = Some(Error::AddressInUse { addr });
                }
                Err(e) => last = Some(Error::io(format!("listening on {addr}"), e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("no address to listen on")))
    }

    /// The address the server listens on, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that stops this server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            cancel: self.shutdown.clone(),
        }
    }

    /// Stop the server (see [`ShutdownHandle::shutdown`]). Idempotent.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Whether the server has been shut down.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Wait for the next client and return its connection, configured from
    /// the server's [`Config`].
    ///
    /// Peers refused by [`Config::allow`], [`Config::deny`] or
    /// [`Config::max_per_address`] are closed at once and never returned
    /// (see [`crate::access`]).
    ///
    /// Fails with [`Error::Cancelled`] once the server is shut down (also
    /// when the shutdown happens while waiting), [`Error::Interrupted`] if a
    /// signal handler ran while waiting, [`Error::Io`] on a system error (for
    /// example out of file descriptors).
    pub fn accept(&self) -> Result<Conn> {
        self.accept_until(None, true)
    }

    /// Accept a client that is already waiting, without blocking:
    /// [`Error::WouldBlock`] when none is. For the program's own event loop,
    /// with [`Server::poll_fd`].
    pub fn try_accept(&self) -> Result<Conn> {
        self.accept_until(None, false)
    }

    /// The listening socket's descriptor, for the program's own event loop:
    /// level-triggered readable while a client waits to be accepted (a
    /// client refused by the access lists also makes it readable once;
    /// [`Server::try_accept`] then closes it and says
    /// [`Error::WouldBlock`]). Owned by the server: do not close it.
    pub fn poll_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Like [`Server::accept`], waiting at most `timeout`
    /// ([`Error::Timeout`] when no client came).
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Conn> {
        self.accept_until(Some(timeout), true)
    }

    fn accept_until(&self, timeout: Option<Duration>, block: bool) -> Result<Conn> {
        let deadline = sys::deadline(timeout);
        loop {
            if self.shutdown.is_cancelled() {
                return Err(Error::Cancelled(format!("the server on {} was shut down", self.local)));
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if !self.config.permits(peer.ip()) {
                        // Closed at once, without a byte of protocol.
                        log_at!(LogLevel::Warn, "refused {peer}: not allowed by the access lists");
                        drop(stream);
                        continue;
                    }
                    let Some(slot) = self.per_address.acquire(peer.ip(), self.config.max_per_address) else {
                        log_at!(
                            LogLevel::Warn,
                            "refused {peer}: {} connections from that address already",
                            self.config.max_per_address
                        );
                        drop(stream);
                        continue;
                    };
                    let conn = match Conn::new(stream, self.config.clone(), Some(self.shutdown.clone())) {
                        Ok(conn) => conn,
                        // The peer reset the connection between its handshake
                        // and this accept (its address can no longer be
                        // read): nothing to serve, and no fault of the
                        // server's, which takes the next client.
                        Err(e) if peer_gone(&e) => {
                            log_at!(LogLevel::Info, "{peer} left before it was accepted: {e}");
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    log_at!(LogLevel::Info, "accepted {peer}");
                    return Ok(conn.with_address_slot(slot));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !block => {
                    return Err(Error::WouldBlock(format!("no client waiting on {}", self.local)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match sys::wait(self.listener.as_raw_fd(), false, &[&self.shutdown], deadline) {
                        Ok(Ready::Io) | Ok(Ready::Cancelled) => continue,
                        Ok(Ready::TimedOut) => {
                            return Err(Error::Timeout {
                                op: format!("waiting for a client on {}", self.local),
                                after: timeout.unwrap_or_default(),
                            })
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                            return Err(Error::Interrupted(format!(
                                "waiting for a client on {}",
                                self.local
                            )))
                        }
                        Err(e) => return Err(Error::io("waiting for a client", e)),
                    }
                }
                // A client that connected and reset before we accepted it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("accepting on {}", self.local), e)),
            }
        }
    }

    /// Accept one waiting client for an event loop, without blocking:
    /// `Ok(None)` for a peer refused by the access rules (closed at once,
    /// without a byte), `Err(WouldBlock)` when nobody waits.
    pub(crate) fn accept_nonblocking(
        &self,
    ) -> io::Result<Option<(std::net::TcpStream, SocketAddr, AddressSlot)>> {
        let (stream, peer) = self.listener.accept()?;
        if !self.config.permits(peer.ip()) {
            log_at!(LogLevel::Warn, "refused {peer}: not allowed by the access lists");
            return Ok(None);
        }
        let Some(slot) = self.per_address.acquire(peer.ip(), self.config.max_per_address) else {
            log_at!(
                LogLevel::Warn,
                "refused {peer}: {} connections from that address already",
                self.config.max_per_address
            );
            return Ok(None);
        };
        // Dead peers (a machine that vanished without a FIN or RST) are
        // found by the kernel's keepalive probes.
        if let Err(e) = set_keepalive(&stream) {
            log_at!(LogLevel::Warn, "cannot enable TCP keepalive for {peer}: {e}");
        }
        Ok(Some((stream, peer, slot)))
    }

    pub(crate) fn shutdown_canceller(&self) -> &Canceller {
        &self.shutdown
    }
}

/// Whether setting up an accepted connection failed because the peer has
/// already gone (reset), rather than for want of resources.
fn peer_gone(e: &Error) -> bool {
    match e {
        Error::ConnectionReset(_) | Error::Closed(_) => true,
        Error::Io { source, .. } => matches!(
            source.kind(),
            io::ErrorKind::NotConnected | io::ErrorKind::InvalidInput
        ),
        _ => false,
    }
}

/// Idle time before the first TCP keepalive probe on the connections the
/// echo service and the room accept.
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between two unanswered keepalive probes.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the kernel declares the peer dead: with the
/// two above, a vanished peer is found about 60 + 6 x 10 = 120 s after it
/// last answered, and its connection fails with a timeout (the room reports
/// it as lost).
pub(crate) const KEEPALIVE_PROBES: u32 = 6;

/// Turn on TCP keepalive with [`KEEPALIVE_IDLE`], [`KEEPALIVE_INTERVAL`] and
/// [`KEEPALIVE_PROBES`] on an accepted connection.
pub(crate) fn set_keepalive(stream: &impl std::os::fd::AsFd) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// A non-blocking listening socket on `addr` with `SO_REUSEADDR` and the
/// given backlog (shared by [`Server`] and the room).
pub(crate) fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;
    use std::time::Instant;

    /// What a keepalive-enabled socket reads back.
    fn assert_keepalive(stream: &impl std::os::fd::AsFd) {
        let s = SockRef::from(stream);
        assert!(s.keepalive().unwrap(), "SO_KEEPALIVE is off");
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(s.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }

    #[test]
    fn the_echo_services_accept_path_turns_keepalive_on() {
        let server = Server::bind("127.0.0.1", 0, Config::default()).unwrap();
        let _client = std::net::TcpStream::connect(server.local_addr()).unwrap();
        // The handshake is done by the kernels: the connection is queued.
        let deadline = Instant::now() + Duration::from_secs(10);
        let accepted = loop {
            match server.accept_nonblocking() {
                Ok(Some((stream, _, _))) => break stream,
                Ok(None) => panic!("refused"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    let _ = sys::wait(server.poll_fd(), false, &[], Some(deadline));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert_keepalive(&accepted);
    }
}
