//! The echo service: many clients at once, each message sent back to its
//! sender unchanged.
//!
//! One event loop (`mio`, epoll on Linux) on the thread that calls
//! [`Server::serve_echo`] serves every client: one descriptor per client, no
//! thread and no wake-up descriptor per client. Clients live in a slab
//! indexed by their token; the listener and the server's shutdown descriptor
//! have fixed tokens. What a client wants next is derived from its state
//! (reading while its echoes are below a bound, writing while echoes wait,
//! closing), never tracked beside it. Refusing a client (server full) never
//! waits on it: the notice and the close happen in the non-blocking closing
//! state, as in the room.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::access::AddressSlot;
use crate::config::Framing;
use crate::error::{Error, Result};
use crate::framing::{encode, Decoder, READ_CHUNK};
use crate::log::{log_at, LogLevel};
use crate::server::Server;

/// What an echo service did, returned when it stops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Clients served (accepted and not refused).
    pub clients: u64,
    /// Clients refused because the server was full.
    pub refused: u64,
    /// Messages echoed (in `raw` framing: reads echoed).
    pub messages: u64,
    /// Clients whose connection ended with an error (reset, timeout, a
    /// message over the limit, broken framing).
    pub errors: u64,
}

/// The one message a client over the limit gets before it is closed.
pub fn server_full_message(max: usize) -> String {
    format!("error: server full ({max} clients); try again later")
}

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);
/// Client `i` of the slab has token `FIRST_CLIENT + i`.
const FIRST_CLIENT: usize = 2;
const EVENTS: usize = 1024;
/// Connections accepted per wake-up before the clients get a turn.
const ACCEPT_BATCH: usize = 256;
/// Bytes read from one client per round before the others get a turn.
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// A client whose echoes waiting to be written reach this is not read from
/// until they drain (its bytes wait in the kernel): flat memory, whatever
/// it sends.
const OUT_CAP: usize = READ_CHUNK;
/// Bigger write buffers are given back once drained.
const KEEP_OUT: usize = 4096;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const SWEEP_MIN: Duration = Duration::from_millis(5);
const SWEEP_MAX: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Echoing. `eof`: the peer half-closed; its last echoes go out, then
    /// our end of stream.
    Serving { eof: bool },
    /// Being closed (refused, failed, idle, or the service stopping): send
    /// what is queued, shut the write half down, read and drop until the
    /// peer closes or the deadline passes.
    Closing {
        deadline: Option<Instant>,
        write_shut: bool,
    },
}

struct Client {
    stream: TcpStream,
    addr: SocketAddr,
    decoder: Decoder,
    /// Echoes waiting; `out[off..]` is unwritten.
    out: Vec<u8>,
    off: usize,
    last_message: Instant,
    state: State,
    /// Registered for writable events (while echoes wait for the socket).
    watch_write: bool,
    /// In `Loop::again`.
    again: bool,
    /// Not read from while its echoes drain (see [`OUT_CAP`]).
    throttled: bool,
    _address: AddressSlot,
}

impl Client {
    fn pending(&self) -> usize {
        self.out.len() - self.off
    }

    /// Write what is queued until done (`Ok(true)`) or the socket is full.
    fn flush(&mut self) -> io::Result<bool> {
        while self.off < self.out.len() {
            match (&self.stream).write(&self.out[self.off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.off = 0;
        if self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Ok(true)
    }

    fn wants_read(&self) -> bool {
        match self.state {
            State::Serving { eof } => !eof && self.pending() < OUT_CAP,
            State::Closing { .. } => true,
        }
    }
}

struct Loop<'a> {
    server: &'a Server,
    poll: Poll,
    slots: Vec<Option<Client>>,
    free: Vec<usize>,
    /// Clients being served (not refused or closing).
    serving: usize,
    /// Clients in the closing state.
    closing: usize,
    stats: EchoStats,
    again: Vec<usize>,
    accept_more: bool,
    accept_paused: Option<Instant>,
    last_sweep: Instant,
    /// The notice for a client over the limit, in wire form.
    full_notice: Vec<u8>,
}

impl Server {
    /// Run the echo service until the server is shut down, then return what it did.
    ///
    /// Serves up to [`crate::Config::max_clients`] clients at once, all from
    /// one event loop on the calling thread (one descriptor per client, no
    /// thread per client); one more is sent a single message saying the
    /// server is full (in the server's framing; a line in `raw`) and closed,
    /// without the service ever waiting on it, and the others keep being
    /// served. Each message is echoed to its sender unchanged (bytes, not
    /// text). A client that sends no complete message for
    /// [`crate::Config::idle_timeout`] is closed. A client that half-closes
    /// still gets the echo of everything it sent, then end of stream. Memory
    /// stays flat whatever a client sends: a client whose echoes it does not
    /// read is no longer read from (its data waits in the kernel), and in
    /// `raw` framing the echo streams.
    ///
    /// A client that breaks the framing (an oversize message, say) gets the
    /// echoes of the messages before it and is closed, with the error
    /// logged; nobody else notices. Shutting the server down (from any
    /// thread) stops accepting, closes every client and returns.
    ///
    /// Errors: only a failure of the service itself ([`Error::Interrupted`]
    /// when a signal handler ran, after closing the clients; an
    /// unrecoverable system error); clients' errors are counted in
    /// [`EchoStats::errors`].
    pub fn serve_echo(&self) -> Result<EchoStats> {
        let poll = Poll::new().map_err(|e| Error::io("creating the echo service's event loop", e))?;
        let listen_fd = self.poll_fd();
        poll.registry()
            .register(&mut SourceFd(&listen_fd), LISTENER, Interest::READABLE)
            .map_err(|e| Error::io("registering the echo service's listener", e))?;
        let stop_fd = self.shutdown_canceller().fd();
        poll.registry()
            .register(&mut SourceFd(&stop_fd), STOP, Interest::READABLE)
            .map_err(|e| Error::io("registering the echo service's stop", e))?;
        let max = self.config().max_clients;
        let framing = match self.config().framing {
            // In raw framing the notice still ends with a newline, so a
            // terminal user sees a whole line.
            Framing::Raw => Framing::Line,
            f => f,
        };
        let mut full_notice = Vec::new();
        let _ = encode(framing, usize::MAX, server_full_message(max).as_bytes(), &mut full_notice);
        let mut lp = Loop {
            server: self,
            poll,
            slots: Vec::new(),
            free: Vec::new(),
            serving: 0,
            closing: 0,
            stats: EchoStats::default(),
            again: Vec::new(),
            accept_more: true,
            accept_paused: None,
            last_sweep: Instant::now(),
            full_notice,
        };
        let result = lp.run();
        // Stopped or interrupted: close every client without waiting on any.
        lp.close_all();
        let _ = lp.poll.registry().deregister(&mut SourceFd(&listen_fd));
        let _ = lp.poll.registry().deregister(&mut SourceFd(&stop_fd));
        log_at!(LogLevel::Info, "echo service on {} stopped", self.local_addr());
        result.map(|()| lp.stats)
    }
}

impl Loop<'_> {
    fn run(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            if self.server.is_shut_down() {
                return Ok(());
            }
            if self.accept_more || self.accept_paused.is_some_and(|t| Instant::now() >= t) {
                self.accept(Instant::now());
            }
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    return Err(Error::Interrupted(format!(
                        "serving echo on {}",
                        self.server.local_addr()
                    )));
                }
                return Err(Error::io("waiting for events in the echo service", e));
            }
            let now = Instant::now();
            let again = std::mem::take(&mut self.again);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_more = true,
                    STOP => {}
                    Token(t) => {
                        let idx = t - FIRST_CLIENT;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(idx, now);
                        }
                        if event.is_writable() || event.is_write_closed() {
                            self.write(idx, now);
                        }
                    }
                }
            }
            for idx in again {
                if let Some(c) = self.slot(idx) {
                    c.again = false;
                    self.on_readable(idx, now);
                }
            }
            if self.sweep_period().is_some_and(|p| now >= self.last_sweep + p) {
                self.sweep(now);
            }
        }
    }

    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || self.accept_more {
            return Some(Duration::ZERO);
        }
        let mut due = self.sweep_period().map(|p| self.last_sweep + p);
        if let Some(t) = self.accept_paused {
            due = Some(due.map_or(t, |d| d.min(t)));
        }
        due.map(|d| d.saturating_duration_since(now))
    }

    fn sweep_period(&self) -> Option<Duration> {
        let config = self.server.config();
        let mut period = config.idle_timeout.filter(|_| self.serving > 0).map(|t| t / 10);
        if self.closing > 0 {
            let p = config.close_timeout / 10;
            period = Some(period.map_or(p, |q| q.min(p)));
        }
        period.map(|p| p.clamp(SWEEP_MIN, SWEEP_MAX))
    }

    fn slot(&mut self, idx: usize) -> Option<&mut Client> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }

    // ----- accepting -----

    fn accept(&mut self, now: Instant) {
        self.accept_more = false;
        self.accept_paused = None;
        for _ in 0..ACCEPT_BATCH {
            match self.server.accept_nonblocking() {
                Ok(Some((stream, addr, slot))) => self.admit(stream, addr, slot, now),
                Ok(None) => continue, // refused by the access rules
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                    _ => {
                        // Out of descriptors or memory: the connection waits
                        // in the backlog; try again a little later.
                        log_at!(LogLevel::Error, "echo service on {}: accepting: {e}", self.server.local_addr());
                        self.accept_paused = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                },
            }
        }
        self.accept_more = true;
    }

    fn admit(&mut self, stream: std::net::TcpStream, addr: SocketAddr, slot: AddressSlot, now: Instant) {
        let config = self.server.config();
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        if config.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let mut stream = TcpStream::from_std(stream);
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        if let Err(e) = self.poll.registry().register(&mut stream, Token(FIRST_CLIENT + idx), Interest::READABLE) {
            log_at!(LogLevel::Error, "echo: cannot watch {addr}: {e}");
            self.free.push(idx);
            return;
        }
        let mut client = Client {
            stream,
            addr,
            decoder: Decoder::new(config.framing, config.max_message_size, config.raw_buffer_size),
            out: Vec::new(),
            off: 0,
            last_message: now,
            state: State::Serving { eof: false },
            watch_write: false,
            again: false,
            throttled: false,
            _address: slot,
        };
        let max = config.max_clients;
        if self.serving >= max {
            log_at!(LogLevel::Warn, "refusing {addr}: server full ({max} clients)");
            self.stats.refused += 1;
            client.out.extend_from_slice(&self.full_notice);
            client.state = State::Closing {
                deadline: now.checked_add(config.close_timeout),
                write_shut: false,
            };
            self.closing += 1;
            self.slots[idx] = Some(client);
            self.write(idx, now);
            return;
        }
        log_at!(LogLevel::Info, "echo: accepted {addr}, serving it");
        self.serving += 1;
        self.stats.clients += 1;
        self.slots[idx] = Some(client);
        // Data may have arrived with the handshake (edge-triggered).
        self.on_readable(idx, now);
    }

    // ----- reading and echoing -----

    fn on_readable(&mut self, idx: usize, now: Instant) {
        let config = self.server.config();
        let framing = config.framing;
        let max = config.max_message_size;
        let mut budget = READ_BUDGET;
        loop {
            let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            if !c.wants_read() {
                c.throttled = matches!(c.state, State::Serving { eof: false });
                return;
            }
            if budget == 0 {
                if !c.again {
                    c.again = true;
                    self.again.push(idx);
                }
                return;
            }
            if let State::Closing { .. } = c.state {
                // Read and drop until the peer closes.
                let mut sink = [0u8; 4096];
                match (&c.stream).read(&mut sink) {
                    Ok(0) => return self.remove(idx),
                    Ok(n) => budget = budget.saturating_sub(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return self.remove(idx),
                }
                continue;
            }
            let n = match c.decoder.read_from(&mut c.stream) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.decoder.shrink_if_empty();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log_at!(LogLevel::Warn, "echo: dropping {}: {e}", c.addr);
                    self.stats.errors += 1;
                    return self.fail(idx, now, true);
                }
            };
            budget = budget.saturating_sub(n);
            // Echo every complete message; at end of stream, the last one.
            let mut echoed = 0u64;
            let failed = loop {
                match c.decoder.peek() {
                    Ok(Some(at)) => {
                        // An incoming message is within the limit, so
                        // re-encoding it cannot fail.
                        let _ = encode(framing, max, c.decoder.message(&at), &mut c.out);
                        c.decoder.consume(at);
                        echoed += 1;
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            if echoed > 0 {
                self.stats.messages += echoed;
                c.last_message = now;
            }
            if let Some(e) = failed {
                log_at!(LogLevel::Warn, "echo: dropping {}: {e}", c.addr);
                self.stats.errors += 1;
                return self.fail(idx, now, false);
            }
            if n == 0 {
                log_at!(LogLevel::Info, "echo: {} closed", c.addr);
                c.state = State::Serving { eof: true };
            }
            if c.pending() > 0 || n == 0 {
                self.write(idx, now);
            }
        }
    }

    /// Write what is queued, watch for room when the socket is full, and
    /// move a client on once its queue is out (our end of stream after the
    /// peer's; the close of a closing client).
    fn write(&mut self, idx: usize, now: Instant) {
        let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let flushed = c.flush();
        let blocked = matches!(flushed, Ok(false));
        if blocked != c.watch_write {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self.poll.registry().reregister(&mut c.stream, Token(FIRST_CLIENT + idx), interest).is_err() {
                return self.remove(idx);
            }
            c.watch_write = blocked;
        }
        match flushed {
            Err(e) => {
                if let State::Serving { .. } = c.state {
                    log_at!(LogLevel::Warn, "echo: dropping {}: {e}", c.addr);
                    self.stats.errors += 1;
                }
                self.remove(idx)
            }
            Ok(false) => {}
            Ok(true) => match c.state {
                State::Serving { eof: true } => {
                    // Everything echoed after the peer's end of stream: ours.
                    let _ = c.stream.shutdown(Shutdown::Write);
                    self.remove(idx);
                }
                State::Serving { eof: false } if c.throttled => {
                    // Room again for echoes: read what waited in the kernel.
                    c.throttled = false;
                    if !c.again {
                        c.again = true;
                        self.again.push(idx);
                    }
                }
                State::Closing { write_shut: false, deadline } => {
                    let _ = c.stream.shutdown(Shutdown::Write);
                    c.state = State::Closing { write_shut: true, deadline };
                    // The peer may have closed already.
                    self.on_readable(idx, now);
                }
                State::Serving { eof: false } | State::Closing { write_shut: true, .. } => {}
            },
        }
    }

    /// Close a client that broke the framing or failed: its queued echoes
    /// go out first (unless the socket itself failed), then the close.
    fn fail(&mut self, idx: usize, now: Instant, socket_failed: bool) {
        if socket_failed {
            return self.remove(idx);
        }
        self.begin_close(idx, now);
    }

    fn begin_close(&mut self, idx: usize, now: Instant) {
        let deadline = now.checked_add(self.server.config().close_timeout);
        let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if let State::Serving { .. } = c.state {
            self.serving -= 1;
            self.closing += 1;
            c.state = State::Closing { deadline, write_shut: false };
            c.decoder = Decoder::new(Framing::Raw, 1, 1);
        }
        self.write(idx, now);
    }

    fn remove(&mut self, idx: usize) {
        if let Some(c) = self.slots.get_mut(idx).and_then(Option::take) {
            match c.state {
                State::Serving { .. } => self.serving -= 1,
                State::Closing { .. } => self.closing -= 1,
            }
            self.free.push(idx);
            // Dropping the stream closes it and takes it out of the poll.
        }
    }

    /// Close idle clients and closing clients past their deadline.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        let idle = self.server.config().idle_timeout;
        let mut idle_ones = Vec::new();
        let mut expired = Vec::new();
        for (idx, c) in self.slots.iter().enumerate() {
            let Some(c) = c else { continue };
            match c.state {
                State::Serving { eof: false } => {
                    if idle.is_some_and(|t| now.duration_since(c.last_message) >= t) {
                        idle_ones.push(idx);
                    }
                }
                State::Serving { eof: true } => {}
                State::Closing { deadline, .. } => {
                    if deadline.is_some_and(|d| now >= d) {
                        expired.push(idx);
                    }
                }
            }
        }
        for idx in expired {
            self.remove(idx);
        }
        for idx in idle_ones {
            if let Some(c) = self.slot(idx) {
                let e = Error::Timeout {
                    op: format!("waiting for a complete message from {}", c.addr),
                    after: idle.unwrap_or_default(),
                };
                log_at!(LogLevel::Warn, "echo: dropping {}: {e}", c.addr);
            }
            self.stats.errors += 1;
            self.begin_close(idx, now);
        }
    }

    /// The service stops: each client gets what the socket takes at once of
    /// its echoes, then our end of stream, and is closed.
    fn close_all(&mut self) {
        for idx in 0..self.slots.len() {
            if let Some(c) = self.slot(idx) {
                let _ = c.flush();
                let _ = c.stream.shutdown(Shutdown::Write);
            }
            self.remove(idx);
        }
    }
}
