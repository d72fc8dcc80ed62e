//! A framed TCP connection: send and receive whole messages, with timeouts,
//! cancellation from another thread and a graceful close.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access::AddressSlot;
use crate::config::{Config, Framing};
use crate::error::{Error, Result};
use crate::framing::{encode, Decoder, Located};
use crate::log::{log_at, LogLevel};
use crate::sys::{self, Canceller, PollFd, Ready};

/// Write buffers larger than this are released after a flush, so that one big
/// message does not pin its memory for the life of the connection.
const KEEP_WRITE_CAPACITY: usize = 256 * 1024;

/// One framed TCP connection, from [`crate::connect`] or [`crate::Server::accept`].
///
/// * [`Conn::send`] sends one message; [`Conn::send_many`] (or
///   [`Conn::queue`] then [`Conn::flush`]) sends many with one system call.
/// * [`Conn::recv`] returns the next message, or `Ok(None)` once the peer has
///   closed and every message it sent has been returned.
/// * Timeouts come from the [`Config`] and can be changed per connection;
///   one that expires gives [`Error::Timeout`] and leaves the connection usable.
/// * [`Conn::canceller`] gives a handle another thread can use to stop a
///   blocked call ([`Error::Cancelled`]); a server's shutdown does the same
///   for every connection it accepted.
/// * [`Conn::close`] closes gracefully: it sends what is queued, shuts down
///   the write half, reads and discards what the peer still sends until it
///   closes too (for at most [`Config::close_timeout`]), then closes, so
///   nothing sent before the close is lost and no RST is provoked. Dropping a
///   `Conn` does the same.
///
/// A `Conn` is used by one thread at a time (it is `Send`, not `Sync`); only
/// its [`Canceller`] is meant to be shared.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    config: Arc<Config>,
    decoder: Decoder,
    wbuf: Vec<u8>,
    peer: SocketAddr,
    local: SocketAddr,
    cancel: Canceller,
    shutdown: Option<Canceller>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    close_timeout: Duration,
    /// Set once the connection can no longer be used, with the reason.
    broken: Option<String>,
    write_shut: bool,
    closed: bool,
    /// The descriptor for the program's own event loop, once asked for.
    poll: Option<PollFd>,
    /// Holds this connection's place in the server's per-address count.
    _slot: Option<AddressSlot>,
}

impl Conn {
    /// Wrap a connected stream. `shutdown` is the server's shutdown canceller
    /// for accepted connections.
    pub(crate) fn new(
        stream: TcpStream,
        config: Arc<Config>,
        shutdown: Option<Canceller>,
    ) -> Result<Conn> {
        let peer = stream
            .peer_addr()
            .map_err(|e| Error::io("reading the peer address", e))?;
        let local = stream
            .local_addr()
            .map_err(|e| Error::io("reading the local address", e))?;
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io(format!("configuring the connection to {peer}"), e))?;
        if config.nodelay {
            stream
                .set_nodelay(true)
                .map_err(|e| Error::io(format!("setting TCP_NODELAY for {peer}"), e))?;
        }
        let cancel = Canceller::new().map_err(|e| Error::io("creating a cancel handle", e))?;
        let decoder = Decoder::new(config.framing, config.max_message_size, config.raw_buffer_size);
        Ok(Conn {
            stream,
            decoder,
            wbuf: Vec::new(),
            peer,
            local,
            cancel,
            shutdown,
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            close_timeout: config.close_timeout,
            config,
            broken: None,
            write_shut: false,
            closed: false,
            poll: None,
            _slot: None,
        })
    }

    pub(crate) fn with_address_slot(mut self, slot: AddressSlot) -> Conn {
        self._slot = Some(slot);
        self
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The configuration this connection was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The framing in use.
    pub fn framing(&self) -> Framing {
        self.config.framing
    }

    /// A handle that another thread can use to cancel this connection's
    /// blocking calls (sticky: after it fires, every later blocking call on
    /// this connection fails with [`Error::Cancelled`], which also makes
    /// [`Conn::close`] skip waiting for the peer).
    pub fn canceller(&self) -> Canceller {
        self.cancel.clone()
    }

    /// Change how long [`Conn::recv`] waits (`None` = for ever).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        check_timeout("read_timeout", t)?;
        self.read_timeout = t;
        Ok(())
    }

    /// Change how long a send waits for the peer to make room (`None` = for ever).
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        check_timeout("write_timeout", t)?;
        self.write_timeout = t;
        Ok(())
    }

    /// Change how long [`Conn::close`] waits for the peer to finish.
    pub fn set_close_timeout(&mut self, t: Duration) {
        self.close_timeout = t;
    }

    /// The current read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// The current write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// Whether the peer has closed its side and every message it sent has
    /// been received.
    pub fn peer_closed(&mut self) -> bool {
        self.decoder.is_eof() && self.decoder.buffered() == 0
    }

    /// Bytes received and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    // ----- receiving -----------------------------------------------------

    /// Receive the next message as a new `Vec`.
    ///
    /// Returns `Ok(None)` once the peer has closed and all its messages have
    /// been returned. Fails with [`Error::Timeout`] after the read timeout
    /// (the connection stays usable), [`Error::Cancelled`] when cancelled,
    /// [`Error::MessageTooLarge`] or [`Error::Protocol`] when the peer breaks
    /// the format (the connection is then closed), and
    /// [`Error::ConnectionReset`] when the peer resets it.
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.recv_with(|m| m.to_vec())
    }

    /// Receive the next message and hand it to `f` without copying it; the
    /// slice is only valid during the call. Same results as [`Conn::recv`].
    pub fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        match self.next_located(Deadline::after(self.read_timeout))? {
            None => Ok(None),
            Some(at) => {
                let t = f(self.decoder.message(&at));
                self.decoder.consume(at);
                self.sync_poll();
                Ok(Some(t))
            }
        }
    }

    /// Receive the next message into `buf` and return its length.
    ///
    /// When `buf` is too small the message stays queued and the call fails
    /// with [`Error::BufferTooSmall`] naming the size needed; call again with
    /// a big enough buffer. `Ok(None)` means the peer closed. Allocates
    /// nothing in the steady state.
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        match self.next_located(Deadline::after(self.read_timeout))? {
            None => Ok(None),
            Some(at) => {
                let msg = self.decoder.message(&at);
                if msg.len() > buf.len() {
                    return Err(Error::BufferTooSmall {
                        needed: msg.len(),
                        capacity: buf.len(),
                    });
                }
                buf[..msg.len()].copy_from_slice(msg);
                let n = msg.len();
                self.decoder.consume(at);
                self.sync_poll();
                Ok(Some(n))
            }
        }
    }

    /// Receive up to `max` messages in one call, for throughput: blocks for
    /// the first, then takes every further message already received without
    /// waiting, handing each to `f`. Returns how many were handed over (0
    /// means the peer closed). `f` returns `false` to stop early (the message
    /// it refused stays queued).
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&[u8]) -> bool) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let mut n = 0;
        let mut next = self.next_located(Deadline::after(self.read_timeout))?;
        while let Some(at) = next {
            if !f(self.decoder.message(&at)) {
                break;
            }
            self.decoder.consume(at);
            n += 1;
            if n == max {
                break;
            }
            // The decoder's inlined fast path first; a read only when the
            // buffer holds no further complete message.
            next = match self.decoder.peek() {
                Ok(Some(at)) => Some(at),
                _ => self.try_next_located()?,
            };
        }
        self.sync_poll();
        Ok(n)
    }

    /// The next complete message already received (or readable without
    /// blocking), if any.
    fn try_next_located(&mut self) -> Result<Option<Located>> {
        loop {
            match self.decoder.peek() {
                Ok(Some(at)) => return Ok(Some(at)),
                Ok(None) => {}
                Err(e) => return Err(self.fail_format(e)),
            }
            if self.decoder.is_eof() {
                return Ok(None);
            }
            match self.decoder.read_from(&mut self.stream) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail_io("reading", e)),
            }
        }
    }

    /// Block until a complete message is buffered (or end of stream).
    fn next_located(&mut self, mut deadline: Deadline) -> Result<Option<Located>> {
        self.check_usable()?;
        loop {
            match self.decoder.peek() {
                Ok(Some(at)) => return Ok(Some(at)),
                Ok(None) => {}
                Err(e) => return Err(self.fail_format(e)),
            }
            if self.decoder.is_eof() {
                self.decoder.shrink_if_empty();
                return Ok(None);
            }
            if self.decoder.source_drained() {
                // The last read emptied the socket: wait for readiness first
                // instead of a read that would fail with EAGAIN (one system
                // call fewer per message on request/response traffic).
                self.wait(false, deadline.instant(), "waiting for a message")?;
            }
            match self.decoder.read_from(&mut self.stream) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(false, deadline.instant(), "waiting for a message")?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail_io("reading", e)),
            }
        }
    }

    // ----- sending -------------------------------------------------------

    /// Send one message and wait until the kernel has taken all of it.
    ///
    /// On a timeout, a cancel or a signal ([`Error::Interrupted`]) the part
    /// not yet sent stays queued: a later [`Conn::flush`] (or send) sends it.
    ///
    /// Refuses, with nothing sent, a message over the maximum message size
    /// ([`Error::MessageTooLarge`]) or, in `line` framing, containing a
    /// newline ([`Error::InvalidArgument`]).
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        if self.config.framing == Framing::Raw && self.wbuf.is_empty() {
            // Raw bytes go straight from the caller's buffer: no copy, and a
            // huge raw send needs no memory of ours.
            self.check_writable()?;
            return self.write_all_direct(msg);
        }
        self.queue(msg)?;
        self.flush()
    }

    /// Send every message of `msgs` with as few system calls as possible.
    ///
    /// All or nothing on refusal: if any message is refused (too large, or a
    /// newline in `line` framing) none is sent and the error names it.
    pub fn send_many<I, M>(&mut self, msgs: I) -> Result<()>
    where
        I: IntoIterator<Item = M>,
        M: AsRef<[u8]>,
    {
        self.check_writable()?;
        let mark = self.wbuf.len();
        for (i, m) in msgs.into_iter().enumerate() {
            if let Err(e) = encode(self.config.framing, self.config.max_message_size, m.as_ref(), &mut self.wbuf) {
                self.wbuf.truncate(mark);
                return Err(match e {
                    Error::InvalidArgument(s) => Error::InvalidArgument(format!("message {i}: {s}")),
                    other => other,
                });
            }
        }
        self.flush()
    }

    /// Add one message to the outgoing buffer without sending it; [`Conn::flush`]
    /// sends everything queued. Refuses the same messages as [`Conn::send`].
    pub fn queue(&mut self, msg: &[u8]) -> Result<()> {
        self.check_writable()?;
        encode(self.config.framing, self.config.max_message_size, msg, &mut self.wbuf)?;
        self.sync_poll();
        Ok(())
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Send everything queued, waiting (up to the write timeout) for the peer
    /// to make room. On a timeout the unsent rest stays queued.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_inner(true)
    }

    /// Send as much of what is queued as the socket takes now, without
    /// waiting: `Ok(())` when all of it went, [`Error::WouldBlock`] when some
    /// is still queued (wait for [`Conn::poll_fd`] and call again).
    pub fn try_flush(&mut self) -> Result<()> {
        self.flush_inner(false)
    }

    fn flush_inner(&mut self, block: bool) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.check_writable()?;
        let mut deadline = Deadline::after(if block { self.write_timeout } else { None });
        let mut sent = 0;
        let result = loop {
            if sent == self.wbuf.len() {
                break Ok(());
            }
            match self.stream.write(&self.wbuf[sent..]) {
                Ok(0) => break Err(Error::Closed(format!("{} stopped accepting data", self.peer))),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !block {
                        break Err(Error::WouldBlock(format!(
                            "{} bytes still queued for {}",
                            self.wbuf.len() - sent,
                            self.peer
                        )));
                    }
                    if let Err(e) = self.wait(true, deadline.instant(), "sending") {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(self.fail_io("sending", e)),
            }
        };
        self.wbuf.drain(..sent);
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_WRITE_CAPACITY {
            self.wbuf = Vec::new();
        }
        self.sync_poll();
        result
    }

    fn write_all_direct(&mut self, mut data: &[u8]) -> Result<()> {
        let mut deadline = Deadline::after(self.write_timeout);
        while !data.is_empty() {
            match self.stream.write(data) {
                Ok(0) => return Err(Error::Closed(format!("{} stopped accepting data", self.peer))),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.wait(true, deadline.instant(), "sending") {
                        // A timeout, cancel or signal: keep the unsent rest
                        // queued, as flush does, so nothing is silently cut.
                        self.wbuf.extend_from_slice(data);
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail_io("sending", e)),
            }
        }
        Ok(())
    }

    // ----- non-blocking use from the program's own event loop ---------------

    /// A descriptor for the program's own event loop (`poll`, `epoll`,
    /// Python's `loop.add_reader`), level-triggered: it is readable while
    /// [`Conn::try_recv`] can return something without blocking (a message,
    /// end of stream, or an error) and, while output is queued, while
    /// [`Conn::try_flush`] can make progress. A readable descriptor may still
    /// find only part of a message; `try_recv` then says
    /// [`Error::WouldBlock`] and the descriptor stops being readable until
    /// more arrives.
    ///
    /// Created on first use (it costs two descriptors) and owned by the
    /// connection: do not close it; it is closed with the connection.
    pub fn poll_fd(&mut self) -> Result<RawFd> {
        if self.poll.is_none() {
            let p = PollFd::new(self.stream.as_raw_fd())
                .map_err(|e| Error::io("creating the connection's poll descriptor", e))?;
            self.poll = Some(p);
            self.sync_poll();
        }
        Ok(self.poll.as_ref().map(PollFd::fd).unwrap_or(-1))
    }

    /// Receive the next message without waiting: `Ok(Some(msg))`,
    /// `Ok(None)` once the peer has closed (as [`Conn::recv`]), or
    /// [`Error::WouldBlock`] when no complete message has arrived yet.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.try_recv_with(|m| m.to_vec())
    }

    /// [`Conn::try_recv`] into a caller's buffer, with the rules of
    /// [`Conn::recv_into`] (a buffer too small leaves the message queued).
    pub fn try_recv_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        let r = self.try_recv_with(|m| {
            if m.len() > buf.len() {
                return Err(Error::BufferTooSmall {
                    needed: m.len(),
                    capacity: buf.len(),
                });
            }
            buf[..m.len()].copy_from_slice(m);
            Ok(m.len())
        });
        match r {
            Ok(Some(Ok(n))) => Ok(Some(n)),
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Conn::try_recv`] handing the message to `f` without copying it. A
    /// message is consumed only if `f` returns `Ok` (or a non-`Result`);
    /// this is what lets `try_recv_into` keep a message its buffer cannot hold.
    fn try_recv_with<T: Consumed>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        self.check_usable()?;
        let r = match self.try_next_located() {
            Ok(Some(at)) => {
                let t = f(self.decoder.message(&at));
                if t.consumed() {
                    self.decoder.consume(at);
                }
                Ok(Some(t))
            }
            Ok(None) if self.decoder.is_eof() => Ok(None),
            Ok(None) => Err(Error::WouldBlock(format!("no complete message from {} yet", self.peer))),
            Err(e) => Err(e),
        };
        self.sync_poll();
        r
    }

    /// Send one message without waiting for the peer: it is accepted
    /// (`Ok`) and sent as far as the socket takes it now, the rest staying
    /// queued for [`Conn::try_flush`] (or any blocking call). When earlier
    /// output is still queued and cannot move, the message is not accepted
    /// and the call fails with [`Error::WouldBlock`]. Refuses the same
    /// messages as [`Conn::send`].
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.check_writable()?;
        if !self.wbuf.is_empty() {
            self.try_flush()?;
        }
        encode(self.config.framing, self.config.max_message_size, msg, &mut self.wbuf)?;
        match self.try_flush() {
            Ok(()) | Err(Error::WouldBlock(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Tell the poll descriptor (if any) whether a message is waiting in our
    /// buffer and whether output is queued.
    fn sync_poll(&mut self) {
        if self.poll.is_none() {
            return;
        }
        // An error to report counts as "something to receive".
        let pending = !matches!(self.decoder.peek(), Ok(None));
        let want_write = !self.wbuf.is_empty();
        if let Some(p) = self.poll.as_mut() {
            p.set_pending(pending);
            let _ = p.set_want_write(want_write);
        }
    }

    // ----- the echo service's inner step -----------------------------------

    /// Wait (up to `timeout`) for input, then echo every complete message
    /// received so far back in the same framing, with one flush. Returns how
    /// many messages were echoed; 0 means end of stream.
    pub(crate) fn echo_step(&mut self, timeout: Option<Duration>) -> Result<usize> {
        let mut next = self.next_located(Deadline::after(timeout))?;
        let mut n = 0;
        while let Some(at) = next {
            n += 1;
            let msg = self.decoder.message(&at);
            // An incoming message is within the limit, so re-encoding it cannot fail.
            encode(self.config.framing, self.config.max_message_size, msg, &mut self.wbuf)?;
            self.decoder.consume(at);
            if self.wbuf.len() >= crate::framing::READ_CHUNK {
                self.flush()?;
            }
            next = self.try_next_located()?;
        }
        self.flush()?;
        self.decoder.shrink_if_empty();
        Ok(n)
    }

    /// Send bytes already in wire form (no framing added).
    pub(crate) fn send_wire(&mut self, wire: &[u8]) -> Result<()> {
        self.flush()?;
        self.check_writable()?;
        self.write_all_direct(wire)
    }

    // ----- closing ---------------------------------------------------------

    /// Shut down the write half after sending what is queued: the peer reads
    /// end of stream after our last message, and we can still receive.
    pub fn shutdown_write(&mut self) -> Result<()> {
        if self.write_shut || self.closed {
            return Ok(());
        }
        let r = if self.broken.is_none() { self.flush() } else { Ok(()) };
        self.write_shut = true;
        let _ = self.stream.shutdown(Shutdown::Write);
        r
    }

    /// Close gracefully: send what is queued, shut down the write half, read
    /// and discard whatever the peer still sends until it closes (for at most
    /// [`Config::close_timeout`]), then close the socket. Returns the error of
    /// the final flush, if any; the socket is closed either way.
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.shutdown_write();
        self.closed = true;
        if self.broken.is_none() && !self.decoder.is_eof() {
            self.drain();
        }
        log_at!(LogLevel::Debug, "closed connection with {}", self.peer);
        r
    }

    /// Read and discard until the peer closes or the close timeout passes, so
    /// that our close finds no unread data (which would send RST).
    fn drain(&mut self) {
        let deadline = sys::deadline(Some(self.close_timeout));
        let cancelled = self.cancel.is_cancelled()
            || self.shutdown.as_ref().is_some_and(|s| s.is_cancelled());
        // Cancelled: do not wait for the peer, only take what is already here.
        let deadline = if cancelled { Some(Instant::now()) } else { deadline };
        let mut scratch = [0u8; 4096];
        loop {
            match io::Read::read(&mut self.stream, &mut scratch) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A cancel or server shutdown during the wait ends it too,
                    // so stopping a service never waits out a close timeout.
                    let mut cancels: Vec<&Canceller> = vec![&self.cancel];
                    cancels.extend(self.shutdown.as_ref());
                    // A signal (Ctrl-C) ends the wait too: the program wants out.
                    match sys::wait(self.stream.as_raw_fd(), false, &cancels, deadline) {
                        Ok(Ready::Io) => continue,
                        _ => return,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    // ----- helpers ---------------------------------------------------------

    fn wait(&mut self, write: bool, deadline: Option<Instant>, what: &str) -> Result<()> {
        let mut cancels: [&Canceller; 2] = [&self.cancel, &self.cancel];
        let n = match &self.shutdown {
            Some(s) => {
                cancels[1] = s;
                2
            }
            None => 1,
        };
        match sys::wait(self.stream.as_raw_fd(), write, &cancels[..n], deadline) {
            Ok(Ready::Io) => Ok(()),
            Ok(Ready::Cancelled) => Err(Error::Cancelled(format!("{what} ({})", self.peer))),
            Ok(Ready::TimedOut) => Err(Error::Timeout {
                op: format!("{what} ({})", self.peer),
                after: if write { self.write_timeout } else { self.read_timeout }.unwrap_or_default(),
            }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                Err(Error::Interrupted(format!("{what} ({})", self.peer)))
            }
            Err(e) => Err(Error::io(format!("{what} ({})", self.peer), e)),
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed("the connection was closed locally".into()));
        }
        if let Some(why) = &self.broken {
            return Err(Error::Closed(format!("the connection was closed after an error: {why}")));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.check_usable()?;
        if self.write_shut {
            return Err(Error::Closed("the write half was shut down".into()));
        }
        Ok(())
    }

    /// The peer broke the format: close the connection and add who did it.
    fn fail_format(&mut self, e: Error) -> Error {
        let e = match e {
            Error::MessageTooLarge { size, max, .. } => Error::MessageTooLarge {
                size,
                max,
                context: format!(" (received from {}; connection closed)", self.peer),
            },
            Error::Protocol(s) => Error::Protocol(format!("{s} from {}; connection closed", self.peer)),
            other => other,
        };
        // What was queued before the bad message (the echo service's replies
        // to the good messages that came with it) still goes out first.
        if !self.wbuf.is_empty() {
            let _ = self.flush_inner(true);
        }
        self.break_with(&e);
        e
    }

    fn fail_io(&mut self, what: &str, e: io::Error) -> Error {
        let e = Error::io(format!("{what} ({})", self.peer), e);
        self.break_with(&e);
        e
    }

    fn break_with(&mut self, e: &Error) {
        log_at!(LogLevel::Warn, "closing connection with {}: {e}", self.peer);
        self.broken = Some(e.to_string());
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.close_inner();
    }
}

/// The deadline of one blocking call, read from the clock only when the call
/// first has to wait: a receive that finds its message already buffered (the
/// common case when messages stream in) costs no clock read.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    timeout: Option<Duration>,
    at: Option<Option<Instant>>,
}

impl Deadline {
    fn after(timeout: Option<Duration>) -> Deadline {
        Deadline { timeout, at: None }
    }

    fn instant(&mut self) -> Option<Instant> {
        let timeout = self.timeout;
        *self.at.get_or_insert_with(|| sys::deadline(timeout))
    }
}

pub(crate) fn check_timeout(name: &str, t: Option<Duration>) -> Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(Error::invalid(format!("{name} must be positive (use no timeout to wait for ever)")));
    }
    Ok(())
}

/// Whether a `try_recv_with` callback's result means the message was taken.
trait Consumed {
    fn consumed(&self) -> bool;
}
impl Consumed for Vec<u8> {
    fn consumed(&self) -> bool {
        true
    }
}
impl<T> Consumed for Result<T> {
    fn consumed(&self) -> bool {
        self.is_ok()
    }
}
