//! A framed TCP connection: send and receive whole messages, with timeouts,
//! cancellation from another thread and a graceful close; full-duplex, and
//! splittable into a receiving half and a sending half for two threads.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
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
/// # Threads: full-duplex
///
/// A connection's receiving side and sending side never wait for each
/// other. To receive on one thread while another sends, [`Conn::split`] it
/// into a [`RecvHalf`] and a [`SendHalf`]: each is `Send`, moves to its own
/// thread, has its own timeout, and shares the connection's [`Canceller`];
/// [`RecvHalf::reunite`] gives the whole `Conn` back.
///
/// ```no_run
/// # fn main() -> tcpchat::Result<()> {
/// let conn = tcpchat::connect("127.0.0.1", 8080, &tcpchat::Config::default())?;
/// let (mut rx, mut tx) = conn.split();
/// let printer = std::thread::spawn(move || {
///     while let Ok(Some(line)) = rx.recv() {
///         println!("{}", String::from_utf8_lossy(&line));
///     }
/// });
/// tx.send(b"hello, room")?;
/// tx.shutdown_write()?; // the peer sees end of stream after our line
/// printer.join().unwrap();
/// # Ok(()) }
/// ```
///
/// A `Conn` is `Send` and `Sync`, but its methods take `&mut self`, so the
/// borrow checker gives one thread at a time the whole connection; sharing
/// it behind a lock is never needed (split it instead). Its [`Canceller`]
/// may be used from any thread at any time.
#[derive(Debug)]
pub struct Conn {
    // Dropped in this order: the receiving half notes whether it saw end of
    // stream, then the sending half, dropped last, closes gracefully.
    rx: RecvHalf,
    tx: SendHalf,
}

/// The receiving half of a [`Conn`], from [`Conn::split`]: every receive
/// call of a `Conn`, for a thread of its own. `Send`; its calls never wait
/// for the [`SendHalf`]'s.
///
/// Dropping it while the sending half lives leaves the socket open (the
/// sending half's drop then closes gracefully); dropping both closes the
/// connection gracefully, as dropping a `Conn` does.
#[derive(Debug)]
pub struct RecvHalf {
    sh: Arc<Shared>,
    decoder: Decoder,
    read_timeout: Option<Duration>,
    /// Inside a whole `Conn`: a broken format leaves the shutdown to the
    /// `Conn`, which first sends the replies queued before the bad message.
    joined: bool,
}

/// The sending half of a [`Conn`], from [`Conn::split`]: every send call of
/// a `Conn`, and [`SendHalf::shutdown_write`], for a thread of its own.
/// `Send`; its calls never wait for the [`RecvHalf`]'s.
///
/// Dropping it sends what is queued and shuts down the write half (the peer
/// reads end of stream), as [`SendHalf::shutdown_write`] does; when the
/// receiving half is gone too, the connection is then closed gracefully.
#[derive(Debug)]
pub struct SendHalf {
    sh: Arc<Shared>,
    wbuf: Vec<u8>,
    write_timeout: Option<Duration>,
}

/// What both halves of one connection share: the socket and the state that
/// either side may change.
#[derive(Debug)]
struct Shared {
    stream: TcpStream,
    config: Arc<Config>,
    peer: SocketAddr,
    local: SocketAddr,
    cancel: Canceller,
    shutdown: Option<Canceller>,
    /// Set once the connection can no longer be used, with the reason.
    broken: OnceLock<String>,
    write_shut: AtomicBool,
    /// The receiving half saw end of stream (set when it is dropped).
    eof_seen: AtomicBool,
    /// Halves not yet dropped; the last one closes the socket gracefully.
    halves: AtomicUsize,
    close_timeout_ms: AtomicU64,
    /// The close was interrupted or cancelled: do not wait for the peer.
    hurry: AtomicBool,
    /// The descriptor for the program's own event loop, once asked for.
    poll: Mutex<Option<PollFd>>,
    has_poll: AtomicBool,
    /// Holds this connection's place in the server's per-address count.
    _slot: OnceLock<AddressSlot>,
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
        let sh = Arc::new(Shared {
            stream,
            peer,
            local,
            cancel,
            shutdown,
            broken: OnceLock::new(),
            write_shut: AtomicBool::new(false),
            eof_seen: AtomicBool::new(false),
            halves: AtomicUsize::new(2),
            close_timeout_ms: AtomicU64::new(duration_ms(config.close_timeout)),
            hurry: AtomicBool::new(false),
            poll: Mutex::new(None),
            has_poll: AtomicBool::new(false),
            _slot: OnceLock::new(),
            config,
        });
        Ok(Conn {
            rx: RecvHalf {
                sh: sh.clone(),
                decoder,
                read_timeout: sh.config.read_timeout,
                joined: true,
            },
            tx: SendHalf {
                wbuf: Vec::new(),
                write_timeout: sh.config.write_timeout,
                sh,
            },
        })
    }

    /// The connection's poll descriptor, reachable without either half
    /// (the C face asks for it while a half may be busy on another thread).
    pub(crate) fn poll_access(&self) -> PollAccess {
        PollAccess(Arc::downgrade(&self.rx.sh))
    }

    /// What a wait outside this connection's own calls needs in order to
    /// watch it ([`crate::session::wait_for_input`]): the socket, the
    /// connection's canceller and the server's shutdown canceller, if any.
    pub(crate) fn watch_parts(&self) -> (RawFd, Canceller, Option<Canceller>) {
        (self.rx.sh.stream.as_raw_fd(), self.rx.sh.cancel.clone(), self.rx.sh.shutdown.clone())
    }

    pub(crate) fn with_address_slot(self, slot: AddressSlot) -> Conn {
        let _ = self.rx.sh._slot.set(slot);
        self
    }

    /// Split into a receiving half and a sending half, for one thread that
    /// receives while another sends. Nothing is lost: messages already
    /// received and output already queued stay with their half. See
    /// [`RecvHalf::reunite`] for the way back.
    pub fn split(self) -> (RecvHalf, SendHalf) {
        let Conn { mut rx, tx } = self;
        rx.joined = false;
        (rx, tx)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.rx.sh.peer
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.rx.sh.local
    }

    /// The configuration this connection was made with.
    pub fn config(&self) -> &Config {
        &self.rx.sh.config
    }

    /// The framing in use.
    pub fn framing(&self) -> Framing {
        self.rx.sh.config.framing
    }

    /// A handle that another thread can use to cancel this connection's
    /// blocking calls (sticky: after it fires, every later blocking call on
    /// this connection fails with [`Error::Cancelled`], which also makes
    /// [`Conn::close`] skip waiting for the peer).
    pub fn canceller(&self) -> Canceller {
        self.rx.sh.cancel.clone()
    }

    /// Change how long [`Conn::recv`] waits (`None` = for ever).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.rx.set_read_timeout(t)
    }

    /// Change how long a send waits for the peer to make room (`None` = for ever).
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        self.tx.set_write_timeout(t)
    }

    /// Change how long [`Conn::close`] waits for the peer to finish.
    pub fn set_close_timeout(&mut self, t: Duration) {
        self.rx.sh.close_timeout_ms.store(duration_ms(t), Ordering::Relaxed);
    }

    /// The current read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.rx.read_timeout
    }

    /// The current write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.tx.write_timeout
    }

    /// Whether the peer has closed its side and every message it sent has
    /// been received.
    pub fn peer_closed(&mut self) -> bool {
        self.rx.peer_closed()
    }

    /// Bytes received and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.rx.buffered()
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
        let r = self.rx.recv();
        self.after_recv(r, true)
    }

    /// Receive the next message and hand it to `f` without copying it; the
    /// slice is only valid during the call. Same results as [`Conn::recv`].
    pub fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        let r = self.rx.recv_with(f);
        self.after_recv(r, true)
    }

    /// Receive the next message into `buf` and return its length.
    ///
    /// When `buf` is too small the message stays queued and the call fails
    /// with [`Error::BufferTooSmall`] naming the size needed; call again with
    /// a big enough buffer. `Ok(None)` means the peer closed. Allocates
    /// nothing in the steady state.
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        let r = self.rx.recv_into(buf);
        self.after_recv(r, true)
    }

    /// Receive up to `max` messages in one call, for throughput: blocks for
    /// the first, then takes every further message already received without
    /// waiting, handing each to `f`. Returns how many were handed over (0
    /// means the peer closed). `f` returns `false` to stop early (the message
    /// it refused stays queued).
    pub fn recv_batch(&mut self, max: usize, f: impl FnMut(&[u8]) -> bool) -> Result<usize> {
        let r = self.rx.recv_batch(max, f);
        self.after_recv(r, true)
    }

    /// After a receive: when the peer broke the format, what was queued
    /// before the bad message (the echo service's replies to the good
    /// messages that came with it) still goes out, then the socket is shut.
    /// `block`: whether that last flush may wait (not for the `try_*`
    /// calls, which never wait).
    fn after_recv<T>(&mut self, r: Result<T>, block: bool) -> Result<T> {
        if let Err(Error::MessageTooLarge { .. } | Error::Protocol(_)) = &r {
            if !self.tx.wbuf.is_empty() {
                let _ = self.tx.flush_inner(block, false);
            }
            let _ = self.rx.sh.stream.shutdown(Shutdown::Both);
        }
        r
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
        self.tx.send(msg)
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
        self.tx.send_many(msgs)
    }

    /// Add one message to the outgoing buffer without sending it; [`Conn::flush`]
    /// sends everything queued. Refuses the same messages as [`Conn::send`].
    pub fn queue(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.queue(msg)
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.tx.queued()
    }

    /// Send everything queued, waiting (up to the write timeout) for the peer
    /// to make room. On a timeout the unsent rest stays queued.
    pub fn flush(&mut self) -> Result<()> {
        self.tx.flush()
    }

    /// Send as much of what is queued as the socket takes now, without
    /// waiting: `Ok(())` when all of it went, [`Error::WouldBlock`] when some
    /// is still queued (wait for [`Conn::poll_fd`] and call again).
    pub fn try_flush(&mut self) -> Result<()> {
        self.tx.try_flush()
    }

    // ----- non-blocking use from the program's own event loop ---------------

    /// A descriptor for the program's own event loop (`poll`, `epoll`,
    /// Python's `loop.add_reader`), level-triggered: it is readable while
    /// [`Conn::try_recv`] can return something without blocking (a message,
    /// end of stream, or an error) and, while output is queued, while
    /// [`Conn::try_flush`] can make progress. A readable descriptor may still
    /// find only part of a message; `try_recv` then says
    /// [`Error::WouldBlock`] and the descriptor stops being readable until
    /// more arrives. It keeps this meaning after [`Conn::split`], with each
    /// half keeping its part of it up to date.
    ///
    /// Created on first use (it costs two descriptors) and owned by the
    /// connection: do not close it; it is closed with the connection.
    pub fn poll_fd(&mut self) -> Result<RawFd> {
        let fd = self.rx.sh.poll_fd()?;
        self.rx.sync_poll();
        self.tx.sync_poll();
        Ok(fd)
    }

    /// Receive the next message without waiting: `Ok(Some(msg))`,
    /// `Ok(None)` once the peer has closed (as [`Conn::recv`]), or
    /// [`Error::WouldBlock`] when no complete message has arrived yet.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>> {
        let r = self.rx.try_recv();
        self.after_recv(r, false)
    }

    /// [`Conn::try_recv`] into a caller's buffer, with the rules of
    /// [`Conn::recv_into`] (a buffer too small leaves the message queued).
    pub fn try_recv_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        let r = self.rx.try_recv_into(buf);
        self.after_recv(r, false)
    }

    /// Send one message without waiting for the peer: it is accepted
    /// (`Ok`) and sent as far as the socket takes it now, the rest staying
    /// queued for [`Conn::try_flush`] (or any blocking call). When earlier
    /// output is still queued and cannot move, the message is not accepted
    /// and the call fails with [`Error::WouldBlock`]. Refuses the same
    /// messages as [`Conn::send`].
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.try_send(msg)
    }

    // ----- closing ---------------------------------------------------------

    /// Shut down the write half after sending what is queued: the peer reads
    /// end of stream after our last message, and we can still receive.
    pub fn shutdown_write(&mut self) -> Result<()> {
        self.tx.shutdown_write()
    }

    /// Close gracefully: send what is queued, shut down the write half, read
    /// and discard whatever the peer still sends until it closes (for at most
    /// [`Config::close_timeout`]), then close the socket. Returns the error of
    /// the final flush, if any; the socket is closed either way.
    pub fn close(mut self) -> Result<()> {
        // The drop that follows finds the write half shut and only drains.
        let r = self.tx.shutdown_write();
        if matches!(r, Err(Error::Interrupted(_) | Error::Cancelled(_))) {
            // A signal (Ctrl-C) or a cancel stopped the final flush: the
            // program wants out, so the drain takes only what is here.
            self.rx.sh.hurry.store(true, Ordering::SeqCst);
        }
        r
    }
}

impl RecvHalf {
    /// Put the two halves of one connection back together. Fails with
    /// [`Error::InvalidArgument`] when `tx` belongs to another connection
    /// (both halves are then dropped, which closes both connections'
    /// halves as dropping does).
    pub fn reunite(mut self, tx: SendHalf) -> Result<Conn> {
        if !Arc::ptr_eq(&self.sh, &tx.sh) {
            return Err(Error::invalid("reunite: the two halves belong to different connections"));
        }
        self.joined = true;
        Ok(Conn { rx: self, tx })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.sh.peer
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.sh.local
    }

    /// The configuration the connection was made with.
    pub fn config(&self) -> &Config {
        &self.sh.config
    }

    /// The connection's canceller (the same for both halves): cancelling it
    /// stops the blocked calls of both halves.
    pub fn canceller(&self) -> Canceller {
        self.sh.cancel.clone()
    }

    /// Change how long a receive waits (`None` = for ever).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        check_timeout("read_timeout", t)?;
        self.read_timeout = t;
        Ok(())
    }

    /// The current read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
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

    /// Receive the next message, as [`Conn::recv`].
    pub fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.recv_with(|m| m.to_vec())
    }

    /// Receive the next message into a callback without copying it, as
    /// [`Conn::recv_with`].
    pub fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        match self.next_located(Deadline::after(self.read_timeout), self.read_timeout)? {
            None => Ok(None),
            Some(at) => {
                let t = f(self.decoder.message(&at));
                self.decoder.consume(at);
                self.sync_poll();
                Ok(Some(t))
            }
        }
    }

    /// Receive the next message into `buf`, as [`Conn::recv_into`] (a
    /// buffer too small leaves the message queued).
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        match self.next_located(Deadline::after(self.read_timeout), self.read_timeout)? {
            None => Ok(None),
            Some(at) => {
                let msg = self.decoder.message(&at);
                if msg.len() > buf.len() {
                    let needed = msg.len();
                    // The message stays queued: the descriptor must say so.
                    self.sync_poll();
                    return Err(Error::BufferTooSmall {
                        needed,
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

    /// Receive up to `max` messages in one call, as [`Conn::recv_batch`].
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&[u8]) -> bool) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let mut n = 0;
        let mut next = self.next_located(Deadline::after(self.read_timeout), self.read_timeout)?;
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

    /// Receive without waiting, as [`Conn::try_recv`]: never waits for
    /// anything, the sending half included.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.try_recv_with(|m| m.to_vec())
    }

    /// [`RecvHalf::try_recv`] into a caller's buffer, as [`Conn::try_recv_into`].
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

    /// [`RecvHalf::try_recv`] handing the message to `f` without copying it.
    /// A message is consumed only if `f` returns `Ok` (or a non-`Result`);
    /// this is what lets `try_recv_into` keep a message its buffer cannot hold.
    fn try_recv_with<T: Consumed>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        self.sh.check_usable()?;
        let r = match self.try_next_located() {
            Ok(Some(at)) => {
                let t = f(self.decoder.message(&at));
                if t.consumed() {
                    self.decoder.consume(at);
                }
                Ok(Some(t))
            }
            Ok(None) if self.decoder.is_eof() => Ok(None),
            Ok(None) => Err(Error::WouldBlock(format!("no complete message from {} yet", self.sh.peer))),
            Err(e) => Err(e),
        };
        self.sync_poll();
        r
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
            match self.decoder.read_from(&mut &self.sh.stream) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.sh.fail_io("reading", e)),
            }
        }
    }

    /// Block until a complete message is buffered (or end of stream).
    fn next_located(&mut self, mut deadline: Deadline, timeout: Option<Duration>) -> Result<Option<Located>> {
        self.sh.check_usable()?;
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
                self.sh.wait(false, deadline.instant(), timeout, "waiting for a message")?;
            }
            match self.decoder.read_from(&mut &self.sh.stream) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sh.wait(false, deadline.instant(), timeout, "waiting for a message")?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.sh.fail_io("reading", e)),
            }
        }
    }

    /// The peer broke the format: mark the connection broken and add who
    /// did it. A split half shuts the socket at once; a whole `Conn` does so
    /// after sending what it had queued.
    fn fail_format(&mut self, e: Error) -> Error {
        let e = match e {
            Error::MessageTooLarge { size, max, .. } => Error::MessageTooLarge {
                size,
                max,
                context: format!(" (received from {}; connection closed)", self.sh.peer),
            },
            Error::Protocol(s) => Error::Protocol(format!("{s} from {}; connection closed", self.sh.peer)),
            other => other,
        };
        self.sh.mark_broken(&e);
        if !self.joined {
            let _ = self.sh.stream.shutdown(Shutdown::Both);
        }
        e
    }

    /// Tell the poll descriptor (if any) whether a message (or an error to
    /// report) is waiting in our buffer.
    #[inline]
    pub(crate) fn sync_poll(&mut self) {
        if self.sh.has_poll.load(Ordering::Acquire) {
            self.sync_poll_slow();
        }
    }

    #[cold]
    fn sync_poll_slow(&mut self) {
        let pending = !matches!(self.decoder.peek(), Ok(None));
        self.sh.with_poll(|p| p.set_pending(pending));
    }
}

impl Drop for RecvHalf {
    fn drop(&mut self) {
        if self.decoder.is_eof() {
            self.sh.eof_seen.store(true, Ordering::SeqCst);
        }
        if self.sh.halves.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.sh.final_close();
        }
    }
}

impl SendHalf {
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.sh.peer
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.sh.local
    }

    /// The configuration the connection was made with.
    pub fn config(&self) -> &Config {
        &self.sh.config
    }

    /// The connection's canceller (the same for both halves): cancelling it
    /// stops the blocked calls of both halves.
    pub fn canceller(&self) -> Canceller {
        self.sh.cancel.clone()
    }

    /// Change how long a send waits for the peer to make room (`None` = for ever).
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        check_timeout("write_timeout", t)?;
        self.write_timeout = t;
        Ok(())
    }

    /// The current write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// Send one message, as [`Conn::send`].
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        if self.sh.config.framing == Framing::Raw && self.wbuf.is_empty() {
            // Raw bytes go straight from the caller's buffer: no copy, and a
            // raw send needs no memory of ours. The size limit holds as
            // in the other framings, checked before any byte is read.
            self.sh.check_writable()?;
            crate::framing::check_size(msg.len(), self.sh.config.max_message_size)?;
            return self.write_all_direct(msg);
        }
        self.queue(msg)?;
        self.flush()
    }

    /// Send many messages with as few system calls as possible, as
    /// [`Conn::send_many`] (all or nothing on refusal).
    pub fn send_many<I, M>(&mut self, msgs: I) -> Result<()>
    where
        I: IntoIterator<Item = M>,
        M: AsRef<[u8]>,
    {
        self.sh.check_writable()?;
        let mark = self.wbuf.len();
        let (framing, max) = (self.sh.config.framing, self.sh.config.max_message_size);
        for (i, m) in msgs.into_iter().enumerate() {
            if let Err(e) = encode(framing, max, m.as_ref(), &mut self.wbuf) {
                self.wbuf.truncate(mark);
                return Err(match e {
                    Error::InvalidArgument(s) => Error::InvalidArgument(format!("message {i}: {s}")),
                    other => other,
                });
            }
        }
        self.flush()
    }

    /// Queue one message without sending it, as [`Conn::queue`].
    pub fn queue(&mut self, msg: &[u8]) -> Result<()> {
        self.sh.check_writable()?;
        encode(self.sh.config.framing, self.sh.config.max_message_size, msg, &mut self.wbuf)?;
        self.sync_poll();
        Ok(())
    }

    /// Bytes queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Send everything queued, as [`Conn::flush`].
    pub fn flush(&mut self) -> Result<()> {
        self.flush_inner(true, true)
    }

    /// Send what the socket takes now without waiting, as [`Conn::try_flush`].
    pub fn try_flush(&mut self) -> Result<()> {
        self.flush_inner(false, true)
    }

    /// Send one message without waiting, as [`Conn::try_send`]: never waits
    /// for anything, the receiving half included.
    pub fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.sh.check_writable()?;
        if !self.wbuf.is_empty() {
            self.try_flush()?;
        }
        encode(self.sh.config.framing, self.sh.config.max_message_size, msg, &mut self.wbuf)?;
        match self.try_flush() {
            Ok(()) | Err(Error::WouldBlock(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Send what is queued, then shut down the write half: the peer reads
    /// end of stream after our last message, and the receiving half can
    /// still receive. Calling it again does nothing.
    pub fn shutdown_write(&mut self) -> Result<()> {
        if self.sh.write_shut.load(Ordering::SeqCst) {
            return Ok(());
        }
        let r = if self.sh.broken.get().is_none() { self.flush() } else { Ok(()) };
        self.sh.write_shut.store(true, Ordering::SeqCst);
        let _ = self.sh.stream.shutdown(Shutdown::Write);
        self.sync_poll();
        r
    }

    /// `check`: refuse on a broken or shut connection (not when flushing the
    /// replies queued before a bad message).
    fn flush_inner(&mut self, block: bool, check: bool) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if check {
            self.sh.check_writable()?;
        }
        let timeout = if block { self.write_timeout } else { None };
        let mut deadline = Deadline::after(timeout);
        let mut sent = 0;
        let result = loop {
            if sent == self.wbuf.len() {
                break Ok(());
            }
            match (&self.sh.stream).write(&self.wbuf[sent..]) {
                Ok(0) => break Err(Error::Closed(format!("{} stopped accepting data", self.sh.peer))),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !block {
                        break Err(Error::WouldBlock(format!(
                            "{} bytes still queued for {}",
                            self.wbuf.len() - sent,
                            self.sh.peer
                        )));
                    }
                    if let Err(e) = self.sh.wait(true, deadline.instant(), timeout, "sending") {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(self.sh.fail_io("sending", e)),
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
            match (&self.sh.stream).write(data) {
                Ok(0) => return Err(Error::Closed(format!("{} stopped accepting data", self.sh.peer))),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.sh.wait(true, deadline.instant(), self.write_timeout, "sending") {
                        // A timeout, cancel or signal: keep the unsent rest
                        // queued, as flush does, so nothing is silently cut.
                        self.wbuf.extend_from_slice(data);
                        self.sync_poll();
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.sh.fail_io("sending", e)),
            }
        }
        Ok(())
    }

    /// Tell the poll descriptor (if any) whether output is queued.
    #[inline]
    pub(crate) fn sync_poll(&mut self) {
        if self.sh.has_poll.load(Ordering::Acquire) {
            self.sync_poll_slow();
        }
    }

    #[cold]
    fn sync_poll_slow(&mut self) {
        let want = !self.wbuf.is_empty() && !self.sh.write_shut.load(Ordering::SeqCst);
        self.sh.with_poll(|p| {
            let _ = p.set_want_write(want);
        });
    }
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        let _ = self.shutdown_write();
        if self.sh.halves.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.sh.final_close();
        }
    }
}

impl Shared {
    fn check_usable(&self) -> Result<()> {
        if let Some(why) = self.broken.get() {
            return Err(Error::LocallyClosed(format!("the connection was closed after an error: {why}")));
        }
        if self.cancel.is_closing() {
            return Err(Error::LocallyClosed("the connection is being closed by another thread".into()));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.check_usable()?;
        if self.write_shut.load(Ordering::Relaxed) {
            return Err(Error::LocallyClosed("the write half was shut down".into()));
        }
        Ok(())
    }

    /// Wait for the socket (readable, or writable when `write`), a cancel or
    /// `deadline`; `timeout` is only named in the error.
    fn wait(&self, write: bool, deadline: Option<Instant>, timeout: Option<Duration>, what: &str) -> Result<()> {
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
            Ok(Ready::Cancelled) => {
                let cancelled = self.cancel.is_cancelled() || self.shutdown.as_ref().is_some_and(|s| s.is_cancelled());
                if !cancelled && self.cancel.is_closing() {
                    Err(Error::LocallyClosed(format!(
                        "{what} ({}): the connection was closed by another thread",
                        self.peer
                    )))
                } else {
                    Err(Error::Cancelled(format!("{what} ({})", self.peer)))
                }
            }
            Ok(Ready::TimedOut) => Err(Error::Timeout {
                op: format!("{what} ({})", self.peer),
                after: timeout.unwrap_or_default(),
            }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                Err(Error::Interrupted(format!("{what} ({})", self.peer)))
            }
            Err(e) => Err(Error::io(format!("{what} ({})", self.peer), e)),
        }
    }

    fn fail_io(&self, what: &str, e: io::Error) -> Error {
        let e = Error::io(format!("{what} ({})", self.peer), e);
        self.mark_broken(&e);
        let _ = self.stream.shutdown(Shutdown::Both);
        e
    }

    fn mark_broken(&self, e: &Error) {
        if self.broken.set(e.to_string()).is_ok() {
            log_at!(LogLevel::Warn, "closing connection with {}: {e}", self.peer);
        }
    }

    fn poll_fd(&self) -> Result<RawFd> {
        let mut guard = self.poll.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let p = PollFd::new(self.stream.as_raw_fd())
                .map_err(|e| Error::io("creating the connection's poll descriptor", e))?;
            *guard = Some(p);
            self.has_poll.store(true, Ordering::Release);
        }
        Ok(guard.as_ref().map(PollFd::fd).unwrap_or(-1))
    }

    fn with_poll(&self, f: impl FnOnce(&mut PollFd)) {
        let mut guard = self.poll.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = guard.as_mut() {
            f(p);
        }
    }

    /// The last half is gone: make sure the write half is shut, then read and
    /// discard until the peer closes or the close timeout passes, so that
    /// our close finds no unread data (which would send RST).
    fn final_close(&self) {
        if !self.write_shut.swap(true, Ordering::SeqCst) {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        // No other call can be waiting now.
        self.cancel.end_closing();
        if self.broken.get().is_none() && !self.eof_seen.load(Ordering::SeqCst) {
            self.drain();
        }
        log_at!(LogLevel::Debug, "closed connection with {}", self.peer);
    }

    fn drain(&self) {
        let timeout = Duration::from_millis(self.close_timeout_ms.load(Ordering::Relaxed));
        let cancelled = self.cancel.is_cancelled()
            || self.shutdown.as_ref().is_some_and(|s| s.is_cancelled())
            || self.hurry.load(Ordering::SeqCst);
        // Cancelled (or a close cut short by a signal): do not wait for the
        // peer, only take what is already here.
        let deadline = if cancelled { Some(Instant::now()) } else { sys::deadline(Some(timeout)) };
        let mut scratch = [0u8; 4096];
        loop {
            match io::Read::read(&mut &self.stream, &mut scratch) {
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
}

/// See [`Conn::poll_access`].
#[derive(Debug)]
pub(crate) struct PollAccess(Weak<Shared>);

impl PollAccess {
    /// The poll descriptor, created on first use; the caller then brings
    /// each half's part of its state up to date (`sync_poll`).
    pub(crate) fn fd(&self) -> Result<RawFd> {
        match self.0.upgrade() {
            Some(sh) => sh.poll_fd(),
            None => Err(Error::LocallyClosed("the connection was closed".into())),
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn halves_are_send() {
        assert_send::<RecvHalf>();
        assert_send::<SendHalf>();
        assert_send::<Conn>();
    }
}
