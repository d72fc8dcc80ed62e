//! The room's event loop: one thread, non-blocking sockets, `mio`.
//!
//! Clients live in a slab indexed by their token. A line read from a client
//! is turned into one shared, reference-counted buffer (`Arc<[u8]>`) that is
//! pushed onto the outgoing queue of every receiver; queues are written with
//! one `sendmsg` (`MSG_NOSIGNAL`: never a SIGPIPE) per client after each
//! round of events, so a broadcast costs one copy of the line, a pointer in
//! each receiver's queue and one system call per receiver. Reads go through one buffer shared by all clients; a
//! client's own [`Decoder`] holds only the unfinished part of a line. Both a
//! client's decoder and its queue free their memory whenever they are empty,
//! so an idle client holds no buffer at all.
//!
//! Writable events are watched only while a queue waits for room in its
//! socket; otherwise every ACK from a client would wake the loop.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::text::{self, Input};
use super::{Counters, Inbox, LeaveReason, MemberRate, RoomConfig, RoomEvent, RELAY_MAX};
use crate::access::{self, AddressSlot, IpNet, PerAddress};
use crate::config::Framing;
use crate::echo::server_full_message;
use crate::error::{Error, Result};
use crate::framing::{Decoder, READ_CHUNK};
use crate::log::{log_at, LogLevel};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Client `i` of the slab has token `FIRST_CLIENT + i`.
const FIRST_CLIENT: usize = 2;
/// Events taken per wake-up.
const EVENTS: usize = 1024;
/// Connections accepted per wake-up before the others get a turn.
const ACCEPT_BATCH: usize = 256;
/// Bytes read from one client per turn before the others get theirs.
const READ_BUDGET: usize = 4 * READ_CHUNK;
/// The work one client may cause per turn before the others get theirs, in
/// deliveries (a line to N receivers is N; a command answered to its sender
/// alone is 1, `/who` and `/nick` as many as a line): what bounds a round,
/// since 64 KiB of two-byte lines to 1,000 receivers is 32 million
/// deliveries. Between turns the loop checks for shutdown, accepts, and
/// serves everyone else. (One line always goes, however many receive it.)
const ROUND_WORK: usize = 16 * 1024;
/// Lines handed to one `sendmsg`.
const IOV: usize = 128;
/// How long to stop accepting after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The most clients the tables are sized for up front.
const MAX_PRESIZE: usize = 1 << 16;
/// Bounds of the period of the idle and close-deadline sweep.
const SWEEP_MIN: Duration = Duration::from_millis(5);
const SWEEP_MAX: Duration = Duration::from_secs(1);

/// The event handler installed with `Room::on_event`.
pub(super) type Handler = Box<dyn FnMut(&RoomEvent) + Send>;

#[derive(Clone, Copy, Debug)]
enum State {
    /// In the room, at `members[pos]`.
    Member { pos: usize },
    /// Leaving (or refused): flush the queue, shut the write half down, read
    /// and drop until the peer closes or the deadline passes (`None`: a
    /// close timeout too long to represent, so never).
    Closing {
        deadline: Option<Instant>,
        write_shut: bool,
        eof: bool,
    },
}

struct Client {
    stream: TcpStream,
    addr: SocketAddr,
    /// 0 for a client refused because the room was full.
    id: u64,
    name: String,
    decoder: Decoder,
    /// Lines waiting to be written; the first has `out_off` bytes written.
    out: VecDeque<Arc<[u8]>>,
    out_off: usize,
    /// Bytes in `out` not yet written.
    out_bytes: usize,
    /// Since when the decoder has held an unfinished line (`None`: nothing
    /// but complete lines so far). The idle timeout runs from here: a
    /// member that only reads holds no unfinished line and stays.
    partial_since: Option<Instant>,
    /// Its rate: what it may still send now.
    bucket: Bucket,
    /// Over its rate: not read from until then (in `Engine::throttled`).
    throttled_until: Option<Instant>,
    /// Over its rate since then, without catching up in between.
    over_since: Option<Instant>,
    state: State,
    /// In `Engine::dirty`.
    dirty: bool,
    /// In `Engine::again`.
    again: bool,
    /// In `Engine::doomed`: no more lines are queued or read.
    doomed: bool,
    /// Registered for writable events (while `out` waits for the socket).
    watch_write: bool,
    /// Counts this connection against `Config::max_per_address` until the
    /// client is dropped.
    _address: AddressSlot,
}

impl Client {
    fn is_member(&self) -> bool {
        matches!(self.state, State::Member { .. })
    }

    /// Write queued lines until the queue is empty (`Ok(true)`) or the
    /// socket is full (`Ok(false)`).
    fn flush(&mut self) -> io::Result<bool> {
        while !self.out.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV];
            let mut n = 0;
            for (slot, chunk) in iov.iter_mut().zip(self.out.iter()) {
                *slot = IoSlice::new(if n == 0 {
                    &chunk[self.out_off..]
                } else {
                    chunk
                });
                n += 1;
            }
            match crate::sys::send_vectored(&self.stream, &iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut written) => {
                    self.out_bytes -= written;
                    while written > 0 {
                        let left = self.out[0].len() - self.out_off;
                        if written >= left {
                            written -= left;
                            self.out.pop_front();
                            self.out_off = 0;
                        } else {
                            self.out_off += written;
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // An idle client keeps no queue memory.
        if self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
        Ok(true)
    }
}

/// The limits the loop applies, from the room's configuration.
struct Limits {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    max_per_address: usize,
    max_line: usize,
    idle: Option<Duration>,
    close_timeout: Duration,
    max_clients: usize,
    queue_limit: usize,
    nodelay: bool,
    rate: MemberRate,
}

pub(super) struct Engine {
    poll: Poll,
    /// `None` once the room stops accepting.
    listener: Option<TcpListener>,
    local: SocketAddr,
    inbox: Arc<Inbox>,
    limits: Limits,
    slots: Vec<Option<Client>>,
    free: Vec<usize>,
    /// Slots in use (members and closing clients).
    live: usize,
    /// Slots of the members, in no particular order.
    members: Vec<usize>,
    /// Members by [`text::name_key`].
    names: HashMap<String, usize>,
    /// Names given up lately, reserved for their last owner's address.
    holds: NameHolds,
    /// Open connections per address.
    per_address: PerAddress,
    /// Clients in the `Closing` state.
    closing: usize,
    next_id: u64,
    next_guest: u64,
    rbuf: Box<[u8]>,
    /// Clients with lines to write.
    dirty: Vec<usize>,
    /// Clients that used their turn and may have more to do.
    again: Vec<usize>,
    /// Members over their rate, waiting for `Client::throttled_until`.
    throttled: Vec<usize>,
    /// Members to drop once the current broadcast is done.
    doomed: Vec<(usize, LeaveReason)>,
    /// The accept batch ran out before the backlog did.
    accept_more: bool,
    /// Accepting paused until then (out of descriptors).
    accept_paused: Option<Instant>,
    last_sweep: Instant,
    stopping: bool,
    handler: Option<Handler>,
}

impl Engine {
    /// Listen and set up the loop (it runs later, in [`Engine::run`]).
    pub(super) fn bind(
        host: &str,
        port: u16,
        config: &RoomConfig,
    ) -> Result<(Engine, Arc<Inbox>, SocketAddr)> {
        let c = &config.config;
        debug_assert_eq!(c.framing, Framing::Line);
        let mut last = None;
        let mut bound = None;
        for addr in crate::client::resolve(host, port)? {
            match crate::server::listen(addr, c.backlog) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    last = Some(Error::AddressInUse { addr })
                }
                Err(e) => last = Some(Error::io(format!("listening on {addr}"), e)),
            }
        }
        let Some(std_listener) = bound else {
            return Err(last.unwrap_or_else(|| Error::invalid("no address to listen on")));
        };
        let local = std_listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let poll = Poll::new().map_err(|e| Error::io("creating the room's event loop", e))?;
        let mut listener = TcpListener::from_std(std_listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| Error::io("registering the room's listener", e))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| Error::io("creating the room's waker", e))?;
        let inbox = Arc::new(Inbox {
            waker,
            posts: Mutex::new(Vec::new()),
            raw_text: AtomicBool::new(config.raw_text),
            stop: Default::default(),
            counters: Counters::default(),
        });
        // Size the client tables for the room's limit at once: growing them
        // later would copy them and leave the old copies as holes in the heap,
        // resident for good. Untouched capacity costs address space only.
        let table = c.max_clients.min(MAX_PRESIZE) + 64;
        let engine = Engine {
            poll,
            listener: Some(listener),
            local,
            inbox: inbox.clone(),
            limits: Limits {
                allow: c.allow.clone(),
                deny: c.deny.clone(),
                max_per_address: c.max_per_address,
                max_line: config.line_limit(),
                idle: c.idle_timeout,
                close_timeout: c.close_timeout,
                max_clients: c.max_clients,
                queue_limit: config.queue_limit,
                nodelay: c.nodelay,
                rate: config.rate,
            },
            slots: Vec::with_capacity(table),
            free: Vec::new(),
            live: 0,
            members: Vec::with_capacity(table),
            names: HashMap::with_capacity(table),
            holds: NameHolds::new(c.max_clients.max(MIN_HOLDS)),
            per_address: PerAddress::default(),
            closing: 0,
            next_id: 1,
            next_guest: 1,
            rbuf: vec![0; READ_CHUNK].into_boxed_slice(),
            dirty: Vec::new(),
            again: Vec::new(),
            throttled: Vec::new(),
            doomed: Vec::new(),
            accept_more: false,
            accept_paused: None,
            last_sweep: Instant::now(),
            stopping: false,
            handler: None,
        };
        Ok((engine, inbox, local))
    }

    pub(super) fn set_handler(&mut self, handler: Handler) {
        self.handler = Some(handler);
    }

    pub(super) fn set_rate(&mut self, rate: MemberRate) {
        self.limits.rate = rate;
    }

    fn counters(&self) -> &Counters {
        &self.inbox.counters
    }

    /// Serve until the room has stopped and every client is closed.
    /// `Err(Interrupted)` when a signal handler ran: the state is intact and
    /// calling `run` again goes on.
    pub(super) fn run(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            if !self.stopping && self.inbox.stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                self.begin_shutdown(now);
                self.settle(now);
            }
            if self.stopping && self.live == 0 {
                log_at!(LogLevel::Info, "room on {} stopped", self.local);
                return Ok(());
            }
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    return Err(Error::Interrupted(format!(
                        "serving the room on {}",
                        self.local
                    )));
                }
                return Err(Error::io(
                    format!("waiting for events in the room on {}", self.local),
                    e,
                ));
            }
            let now = Instant::now();
            let again = std::mem::take(&mut self.again);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => self.take_posts(),
                    Token(t) => {
                        let idx = t - FIRST_CLIENT;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(idx, now);
                        }
                        if event.is_writable() || event.is_write_closed() {
                            self.mark_dirty(idx);
                        }
                    }
                }
            }
            for idx in again {
                if let Some(c) = self.client_mut(idx) {
                    c.again = false;
                    self.on_readable(idx, now);
                }
            }
            self.wake_throttled(now);
            if self.accept_more || self.accept_paused.is_some_and(|t| now >= t) {
                self.accept(now);
            }
            self.settle(now);
            if self
                .sweep_period()
                .is_some_and(|p| now >= self.last_sweep + p)
            {
                self.sweep(now);
                self.settle(now);
            }
        }
    }

    /// How long the next poll may wait.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || self.accept_more {
            return Some(Duration::ZERO);
        }
        let mut due = self.sweep_period().map(|p| self.last_sweep + p);
        let throttled = self.throttled.iter().filter_map(|&i| {
            self.slots.get(i)?.as_ref()?.throttled_until
        });
        for t in self.accept_paused.into_iter().chain(throttled) {
            due = Some(due.map_or(t, |d| d.min(t)));
        }
        due.map(|d| d.saturating_duration_since(now))
    }

    /// Give the members whose throttle has run out their turn.
    fn wake_throttled(&mut self, now: Instant) {
        if self.throttled.is_empty() {
            return;
        }
        let mut waiting = std::mem::take(&mut self.throttled);
        waiting.retain(|&idx| {
            let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
                return false;
            };
            match c.throttled_until {
                Some(t) if t > now => true,
                Some(_) => {
                    c.throttled_until = None;
                    if !c.again {
                        c.again = true;
                        self.again.push(idx);
                    }
                    false
                }
                None => false, // dropped, or a new client in the slot
            }
        });
        waiting.append(&mut self.throttled);
        self.throttled = waiting;
    }

    /// How often to look for idle members and closing clients past their
    /// deadline; `None` when there is nothing to look for.
    fn sweep_period(&self) -> Option<Duration> {
        let mut period = None::<Duration>;
        if let Some(idle) = self.limits.idle.filter(|_| !self.members.is_empty()) {
            period = Some(idle / 10);
        }
        if self.closing > 0 {
            let p = self.limits.close_timeout / 10;
            period = Some(period.map_or(p, |q| q.min(p)));
        }
        period.map(|p| p.clamp(SWEEP_MIN, SWEEP_MAX))
    }

    fn client_mut(&mut self, idx: usize) -> Option<&mut Client> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }

    fn emit(&mut self, event: RoomEvent) {
        if let Some(handler) = self.handler.as_mut() {
            if catch_unwind(AssertUnwindSafe(|| handler(&event))).is_err() {
                log_at!(
                    LogLevel::Error,
                    "room: the event handler panicked on {event:?}"
                );
            }
        }
    }

    // ----- accepting -----

    fn accept(&mut self, now: Instant) {
        self.accept_more = false;
        self.accept_paused = None;
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => self.admit(stream, addr, now),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                    _ => {
                        // Out of descriptors or memory: the connection stays
                        // in the backlog; try again a little later.
                        log_at!(LogLevel::Error, "room on {}: accepting: {e}", self.local);
                        self.accept_paused = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                },
            }
        }
        self.accept_more = true;
    }

    fn admit(&mut self, mut stream: TcpStream, addr: SocketAddr, now: Instant) {
        // The access rules (crate::access): closed at once, without a byte.
        if !access::permitted(&self.limits.allow, &self.limits.deny, addr.ip()) {
            log_at!(
                LogLevel::Warn,
                "room: refused {addr}: not allowed by the access lists"
            );
            return;
        }
        let max_per_address = self.limits.max_per_address;
        let Some(address) = self.per_address.acquire(addr.ip(), max_per_address) else {
            log_at!(
                LogLevel::Warn,
                "room: refused {addr}: {max_per_address} connections from that address already"
            );
            return;
        };
        if self.limits.nodelay {
            let _ = stream.set_nodelay(true);
        }
        // Dead peers (gone without a FIN or RST) are found by keepalive
        // probes, not by the idle timeout: a member that only reads stays.
        if let Err(e) = crate::server::set_keepalive(&stream) {
            log_at!(LogLevel::Warn, "room: cannot enable TCP keepalive for {addr}: {e}");
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(FIRST_CLIENT + idx),
            Interest::READABLE,
        ) {
            log_at!(LogLevel::Error, "room: cannot watch {addr}: {e}");
            self.free.push(idx);
            return;
        }
        let mut client = Client {
            stream,
            addr,
            id: 0,
            name: String::new(),
            decoder: Decoder::new(Framing::Line, self.limits.max_line, 1),
            out: VecDeque::new(),
            out_off: 0,
            out_bytes: 0,
            partial_since: None,
            bucket: Bucket::full(&self.limits.rate, now),
            throttled_until: None,
            over_since: None,
            state: State::Member {
                pos: self.members.len(),
            },
            dirty: false,
            again: false,
            doomed: false,
            watch_write: false,
            _address: address,
        };
        self.live += 1;
        if self.members.len() >= self.limits.max_clients {
            let max = self.limits.max_clients;
            log_at!(
                LogLevel::Warn,
                "room: refusing {addr}: server full ({max} clients)"
            );
            self.counters().refused.fetch_add(1, Ordering::Relaxed);
            client.state = State::Closing {
                deadline: now.checked_add(self.limits.close_timeout),
                write_shut: false,
                eof: false,
            };
            client.out.push_back(text::line(&server_full_message(max)));
            client.out_bytes = client.out[0].len();
            self.closing += 1;
            self.slots[idx] = Some(client);
            self.mark_dirty(idx);
            return;
        }
        let name = loop {
            let name = format!("guest{}", self.next_guest);
            self.next_guest += 1;
            if !self.names.contains_key(&name) && !self.holds.held_against(&name, addr.ip(), now) {
                break name;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        client.id = id;
        client.name = name.clone();
        self.slots[idx] = Some(client);
        self.members.push(idx);
        self.names.insert(text::name_key(&name), idx);
        self.counters().joined.fetch_add(1, Ordering::Relaxed);
        self.counters().online.fetch_add(1, Ordering::Relaxed);
        log_at!(LogLevel::Info, "room: {addr} joined as {name}");
        if self.handler.is_some() {
            self.emit(RoomEvent::Join {
                id,
                name: name.clone(),
                addr,
            });
        }
        self.enqueue(idx, &text::welcome(&name));
        self.broadcast(Some(idx), &text::joined(&name));
    }

    // ----- reading -----

    /// A client's turn: act on the lines it has sent, reading more only
    /// when none is left, until its round's work is done
    /// ([`ROUND_WORK`], [`READ_BUDGET`]: it goes on next round, after the
    /// others), its rate is spent (it waits, unread, until its bucket has
    /// refilled), or its socket is drained.
    fn on_readable(&mut self, idx: usize, now: Instant) {
        let mut budget = READ_BUDGET;
        let mut work = ROUND_WORK;
        loop {
            let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            if c.doomed {
                return;
            }
            if c.is_member() {
                if c.throttled_until.is_some_and(|t| now < t) {
                    return; // its bytes wait (in the decoder, then the kernel)
                }
                c.throttled_until = None;
                match self.take_lines(idx, now, &mut work) {
                    Turn::Done => {}
                    Turn::Throttled => return,
                    Turn::Spent => return self.again_later(idx),
                }
                let Some(c) = self.client_mut(idx).filter(|c| c.is_member()) else {
                    return;
                };
                // The idle clock starts with the first byte of an
                // unfinished line; a complete line stops it.
                if c.decoder.buffered() == 0 {
                    c.partial_since = None;
                } else if c.partial_since.is_none() {
                    c.partial_since = Some(now);
                }
                if c.decoder.is_eof() {
                    // Every line before its end of stream is out.
                    return self.drop_member(idx, LeaveReason::Closed, now);
                }
            }
            let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            if budget == 0 {
                return self.again_later(idx);
            }
            match c.stream.read(&mut self.rbuf) {
                Ok(0) => match &mut c.state {
                    // Its last lines are taken on the next turn of the loop.
                    State::Member { .. } => c.decoder.set_eof(),
                    State::Closing {
                        eof, write_shut, ..
                    } => {
                        *eof = true;
                        if *write_shut {
                            self.remove(idx);
                        }
                        return;
                    }
                },
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    if c.is_member() {
                        c.decoder.feed(&self.rbuf[..n]);
                    }
                    // A closing client's bytes are dropped.
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.decoder.shrink_if_empty();
                    // Caught up with everything it sent: not flooding.
                    c.over_since = None;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(idx, &e),
            }
        }
    }

    /// Give a client another turn after the others have had theirs.
    fn again_later(&mut self, idx: usize) {
        if let Some(c) = self.client_mut(idx) {
            if !c.again {
                c.again = true;
                self.again.push(idx);
            }
        }
    }

    /// A member over its rate: not read from until `until`; dropped with
    /// `error: excess flood` when it has been over its rate, with no pause
    /// to catch up, for the flood timeout.
    fn throttle(&mut self, idx: usize, until: Instant, now: Instant) -> Turn {
        let flood_timeout = self.limits.rate.flood_timeout;
        let Some(c) = self.client_mut(idx) else {
            return Turn::Throttled;
        };
        let since = *c.over_since.get_or_insert(now);
        if now.duration_since(since) >= flood_timeout {
            log_at!(LogLevel::Warn, "room: {} ({}) floods: over its rate for {flood_timeout:?}", c.addr, c.name);
            self.drop_member(idx, LeaveReason::Flood, now);
            return Turn::Throttled;
        }
        c.throttled_until = Some(until);
        self.throttled.push(idx);
        Turn::Throttled
    }

    fn lost(&mut self, idx: usize, e: &io::Error) {
        let Some(c) = self.client_mut(idx) else {
            return;
        };
        log_at!(LogLevel::Info, "room: {} ({}): {e}", c.addr, c.name);
        if c.is_member() {
            self.drop_member(idx, LeaveReason::Lost, Instant::now());
        } else {
            self.remove(idx);
        }
    }

    /// Act on the complete lines the client's decoder holds, while its
    /// round's `work` (deliveries: lines times receivers, and commands) and
    /// its rate allow.
    fn take_lines(&mut self, idx: usize, now: Instant, work: &mut usize) -> Turn {
        let want_text = self.handler.is_some();
        let raw_text = self.inbox.raw_text.load(Ordering::Relaxed);
        let rate = self.limits.rate;
        let receivers = self.members.len().saturating_sub(1).max(1);
        loop {
            let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
                return Turn::Done;
            };
            if !c.is_member() || c.doomed {
                return Turn::Done;
            }
            let at = match c.decoder.peek() {
                Ok(None) => return Turn::Done,
                Ok(Some(at)) => at,
                Err(e) => {
                    log_at!(
                        LogLevel::Warn,
                        "room: dropping {} ({}): {e}",
                        c.addr,
                        c.name
                    );
                    self.drop_member(idx, LeaveReason::LineTooLong, now);
                    return Turn::Done;
                }
            };
            if *work == 0 {
                return Turn::Spent;
            }
            let input = text::parse(c.decoder.message(&at));
            // What it costs: every line one line and its bytes; `/who` also
            // the bytes of its answer (about 12 a member, at most 8 KiB).
            let bytes = at.len() as u64 + 1
                + match input {
                    Input::Who => (12 * receivers as u64).min(8 * 1024),
                    _ => 0,
                };
            // An empty line is ignored: it costs its bytes only.
            let lines = u32::from(!matches!(input, Input::Empty));
            if let Err(wait) = c.bucket.take(&rate, lines, bytes, now) {
                return self.throttle(idx, now + wait, now);
            }
            *work = work.saturating_sub(match input {
                Input::Say(_) | Input::Who | Input::Nick(_) => receivers,
                _ => 1,
            });
            let action = match input {
                Input::Empty => None,
                Input::Say(t) => {
                    let line = if raw_text {
                        text::chat(&c.name, t)
                    } else {
                        text::chat(&c.name, &crate::text::escape_text(t))
                    };
                    // Without its newline, what every client accepts.
                    Some(if line.len() - 1 > RELAY_MAX {
                        Action::Reply(text::too_long_to_relay(line.len() - 1, RELAY_MAX))
                    } else {
                        Action::Say {
                            line,
                            text: want_text.then(|| t.to_string()),
                        }
                    })
                }
                Input::Nick(n) => Some(Action::Nick(n.to_string())),
                Input::Who => Some(Action::Who),
                Input::Quit => Some(Action::Quit),
                Input::Help => Some(Action::Reply(text::help())),
                Input::Unknown(w) => Some(Action::Reply(text::unknown_command(w))),
                Input::BadUtf8 => Some(Action::Reply(text::bad_utf8())),
            };
            c.decoder.consume(at);
            c.partial_since = None;
            if let Some(action) = action {
                self.act(idx, action, now);
            }
        }
    }

    fn act(&mut self, idx: usize, action: Action, now: Instant) {
        match action {
            Action::Say { line, text } => {
                self.counters().messages.fetch_add(1, Ordering::Relaxed);
                if let (Some(text), Some(c)) = (text, self.slots[idx].as_ref()) {
                    let event = RoomEvent::Message {
                        id: c.id,
                        name: c.name.clone(),
                        text,
                    };
                    self.emit(event);
                }
                self.broadcast(Some(idx), &line);
            }
            Action::Nick(new) => self.rename(idx, new, now),
            Action::Who => {
                let mut present: Vec<(u64, &str)> = self
                    .members
                    .iter()
                    .filter_map(|&m| self.slots[m].as_ref())
                    .map(|c| (c.id, c.name.as_str()))
                    .collect();
                present.sort_unstable();
                let line = text::who(present.into_iter().map(|(_, n)| n));
                self.enqueue(idx, &line);
            }
            Action::Quit => self.drop_member(idx, LeaveReason::Quit, now),
            Action::Reply(line) => self.enqueue(idx, &line),
        }
    }

    fn rename(&mut self, idx: usize, new: String, now: Instant) {
        let Some(c) = self.slots[idx].as_ref() else {
            return;
        };
        if c.name == new {
            return self.enqueue(idx, &text::you_already_are(&new));
        }
        if !text::valid_name(&new) {
            return self.enqueue(idx, &text::name_invalid(&new));
        }
        let key = text::name_key(&new);
        if self.names.get(&key).is_some_and(|&owner| owner != idx) {
            return self.enqueue(idx, &text::name_taken(&new));
        }
        if let Some(left) = self.holds.held_against_for(&key, c.addr.ip(), now) {
            return self.enqueue(idx, &text::name_held(&new, left));
        }
        let Some(c) = self.slots[idx].as_mut() else {
            return;
        };
        let old = std::mem::replace(&mut c.name, new.clone());
        let id = c.id;
        log_at!(LogLevel::Info, "room: {old} is now known as {new}");
        let ip = c.addr.ip();
        self.names.remove(&text::name_key(&old));
        self.holds.release(&key);
        if text::name_key(&old) != key {
            self.holds.hold(text::name_key(&old), ip, now);
        }
        self.names.insert(key, idx);
        self.enqueue(idx, &text::you_are_now(&new));
        self.broadcast(Some(idx), &text::renamed(&old, &new));
        if self.handler.is_some() {
            self.emit(RoomEvent::Rename { id, old, new });
        }
    }

    fn take_posts(&mut self) {
        let posts =
            std::mem::take(&mut *self.inbox.posts.lock().unwrap_or_else(|e| e.into_inner()));
        if self.stopping {
            return;
        }
        for line in posts {
            self.broadcast(None, &line);
        }
    }

    // ----- writing -----

    /// Queue `line` for every member but `except`.
    fn broadcast(&mut self, except: Option<usize>, line: &Arc<[u8]>) {
        for i in 0..self.members.len() {
            let m = self.members[i];
            if Some(m) != except {
                self.enqueue(m, line);
            }
        }
    }

    /// Queue `line` for one client. A client whose queue would pass the
    /// limit (once the socket has taken what it can) is doomed to be dropped
    /// as too slow instead.
    fn enqueue(&mut self, idx: usize, line: &Arc<[u8]>) {
        let limit = self.limits.queue_limit;
        let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if c.doomed {
            return;
        }
        if !c.out.is_empty() && c.out_bytes + line.len() > limit {
            // The socket may have room by now: give it what it takes first.
            let verdict = match c.flush() {
                Ok(_) if c.out.is_empty() || c.out_bytes + line.len() <= limit => None,
                Ok(_) => Some(LeaveReason::SlowReader),
                Err(_) => Some(LeaveReason::Lost),
            };
            if let Some(reason) = verdict {
                c.doomed = true;
                self.doomed.push((idx, reason));
                return;
            }
        }
        c.out.push_back(line.clone());
        c.out_bytes += line.len();
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(idx);
        }
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Drop the doomed members and write the dirty queues until neither is
    /// left (dropping one member notifies the others, which may doom more).
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some((idx, reason)) = self.doomed.pop() {
                self.drop_member(idx, reason, now);
            }
            if self.dirty.is_empty() {
                return;
            }
            for idx in std::mem::take(&mut self.dirty) {
                self.write(idx);
            }
        }
    }

    /// Write a client's queue; close a closing client once it is written.
    fn write(&mut self, idx: usize) {
        let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        c.dirty = false;
        if c.doomed {
            return;
        }
        let flushed = c.flush();
        let blocked = matches!(flushed, Ok(false));
        if blocked != c.watch_write {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(FIRST_CLIENT + idx);
            match self
                .poll
                .registry()
                .reregister(&mut c.stream, token, interest)
            {
                Ok(()) => c.watch_write = blocked,
                Err(e) => return self.lost(idx, &e),
            }
        }
        match flushed {
            Ok(true) => {
                if let State::Closing {
                    write_shut, eof, ..
                } = &mut c.state
                {
                    if !*write_shut {
                        let _ = c.stream.shutdown(Shutdown::Write);
                        *write_shut = true;
                    }
                    if *eof {
                        self.remove(idx);
                    }
                }
            }
            Ok(false) => {}
            Err(e) => self.lost(idx, &e),
        }
    }

    // ----- leaving -----

    /// Take a member out of the room: tell the handler and the others, then
    /// close it (at once, or gracefully with a last line).
    fn drop_member(&mut self, idx: usize, reason: LeaveReason, now: Instant) {
        let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let State::Member { pos } = c.state else {
            return;
        };
        let (id, name, addr) = (c.id, std::mem::take(&mut c.name), c.addr);
        self.members.swap_remove(pos);
        if let Some(&moved) = self.members.get(pos) {
            if let Some(m) = self.slots[moved].as_mut() {
                m.state = State::Member { pos };
            }
        }
        self.names.remove(&text::name_key(&name));
        if reason != LeaveReason::Shutdown {
            self.holds.hold(text::name_key(&name), addr.ip(), now);
        }
        self.counters().online.fetch_sub(1, Ordering::Relaxed);
        let last = match reason {
            LeaveReason::Quit => Some(text::bye()),
            LeaveReason::Closed => None,
            LeaveReason::IdleTimeout => self.limits.idle.map(text::idle),
            LeaveReason::LineTooLong => Some(text::too_long(self.limits.max_line)),
            LeaveReason::Flood => Some(text::excess_flood()),
            LeaveReason::Shutdown => Some(text::shutting_down()),
            LeaveReason::Lost | LeaveReason::SlowReader => {
                self.remove(idx);
                None
            }
        };
        if matches!(
            reason,
            LeaveReason::SlowReader
                | LeaveReason::IdleTimeout
                | LeaveReason::LineTooLong
                | LeaveReason::Flood
        ) {
            self.counters().dropped.fetch_add(1, Ordering::Relaxed);
            log_at!(LogLevel::Warn, "room: dropped {addr} ({name}): {reason}");
        } else {
            log_at!(LogLevel::Info, "room: {addr} ({name}) left: {reason}");
        }
        if self.slots[idx].is_some() {
            self.begin_close(idx, last, reason == LeaveReason::Closed, now);
        }
        if let Some(notice) = text::left(&name, reason) {
            self.broadcast(None, &notice);
        }
        if self.handler.is_some() {
            self.emit(RoomEvent::Leave { id, name, reason });
        }
    }

    fn begin_close(&mut self, idx: usize, last: Option<Arc<[u8]>>, eof: bool, now: Instant) {
        let deadline = now.checked_add(self.limits.close_timeout);
        let Some(c) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        c.state = State::Closing {
            deadline,
            write_shut: false,
            eof,
        };
        c.decoder = Decoder::new(Framing::Line, 1, 1);
        // A member doomed as too slow by the notice of another's leaving,
        // and then dropped for another reason, still gets its last line.
        c.doomed = false;
        if let Some(line) = last {
            c.out_bytes += line.len();
            c.out.push_back(line);
        }
        self.closing += 1;
        self.mark_dirty(idx);
    }

    /// Close a client now and free its slot.
    fn remove(&mut self, idx: usize) {
        if let Some(c) = self.slots.get_mut(idx).and_then(Option::take) {
            if matches!(c.state, State::Closing { .. }) {
                self.closing -= 1;
            }
            self.live -= 1;
            self.free.push(idx);
            // Dropping the stream closes it, which also takes it out of the poll.
        }
    }

    /// Drop members that held an unfinished line for the idle timeout, and
    /// close closing clients past their deadline.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        let mut idle = Vec::new();
        let mut expired = Vec::new();
        for (idx, c) in self.slots.iter().enumerate() {
            let Some(c) = c else { continue };
            match c.state {
                State::Member { .. } => {
                    let unfinished = c.partial_since.zip(self.limits.idle);
                    if unfinished.is_some_and(|(since, t)| now.duration_since(since) >= t) {
                        idle.push(idx);
                    }
                }
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
        for idx in idle {
            self.drop_member(idx, LeaveReason::IdleTimeout, now);
        }
    }

    /// Stop accepting and start closing every member with the closing line.
    fn begin_shutdown(&mut self, now: Instant) {
        self.stopping = true;
        self.listener = None;
        self.accept_more = false;
        self.accept_paused = None;
        log_at!(
            LogLevel::Info,
            "room on {}: shutting down ({} clients)",
            self.local,
            self.members.len()
        );
        while let Some(&idx) = self.members.last() {
            self.drop_member(idx, LeaveReason::Shutdown, now);
        }
    }
}

/// How long a name given up (its member left, or renamed) stays reserved
/// for the address that had it: the same address may take it back at once,
/// any other gets `error: the name NAME was given up moments ago; it is
/// free again in Ns`. So that nobody can take a name the moment its owner's
/// connection drops and speak in its place.
pub(super) const NAME_HOLD: Duration = Duration::from_secs(30);

/// The fewest names held at once (the table holds `max(this, max_clients)`;
/// past that the oldest hold ends early), so that a connect-and-leave storm
/// cannot grow it without bound.
const MIN_HOLDS: usize = 4096;

/// Names given up lately ([`NAME_HOLD`]), by [`text::name_key`]: who may
/// take them back, and until when. Holds end in the order they began, so a
/// queue in that order finds the expired ones.
struct NameHolds {
    by_key: HashMap<String, (IpAddr, Instant)>,
    order: VecDeque<(String, Instant)>,
    cap: usize,
}

impl NameHolds {
    fn new(cap: usize) -> NameHolds {
        NameHolds {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Reserve `key` for `ip` from `now` for [`NAME_HOLD`].
    fn hold(&mut self, key: String, ip: IpAddr, now: Instant) {
        self.expire(now);
        while self.order.len() >= self.cap {
            self.pop_oldest();
        }
        let until = now.checked_add(NAME_HOLD).unwrap_or(now);
        self.by_key.insert(key.clone(), (access::canonical(ip), until));
        self.order.push_back((key, until));
    }

    /// End the hold of `key` (its owner took it back).
    fn release(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    /// How long `key` stays held against `ip` (an address other than the
    /// one that gave it up); `None` when `ip` may take it.
    fn held_against_for(&self, key: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        let &(owner, until) = self.by_key.get(key)?;
        (until > now && owner != access::canonical(ip)).then(|| until - now)
    }

    fn held_against(&self, key: &str, ip: IpAddr, now: Instant) -> bool {
        self.held_against_for(key, ip, now).is_some()
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, until)| *until <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((key, until)) = self.order.pop_front() {
            // A key held again later has a later entry of its own.
            if self.by_key.get(&key).is_some_and(|&(_, u)| u == until) {
                self.by_key.remove(&key);
            }
        }
        if self.order.is_empty() && self.order.capacity() > 64 {
            self.order = VecDeque::new();
            self.by_key = HashMap::new();
        }
    }
}

/// How a client's turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// No complete line left.
    Done,
    /// Its round's work is spent: it goes on after the others.
    Spent,
    /// Over its rate: it waits for its bucket (or was dropped for flooding).
    Throttled,
}

/// A member's token buckets ([`MemberRate`]): lines and bytes it may still
/// send, refilled continuously up to the bursts.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    lines: f64,
    bytes: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: &MemberRate, now: Instant) -> Bucket {
        Bucket {
            lines: f64::from(rate.line_burst),
            bytes: rate.byte_burst as f64,
            at: now,
        }
    }

    /// Take `lines` (0 or 1) and `bytes` (capped at the byte burst, so that
    /// every line can pass), or say how long until it could.
    fn take(
        &mut self,
        rate: &MemberRate,
        lines: u32,
        bytes: u64,
        now: Instant,
    ) -> std::result::Result<(), Duration> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let mut wait: f64 = 0.0;
        if rate.lines_per_second > 0 {
            let (r, burst) = (f64::from(rate.lines_per_second), f64::from(rate.line_burst));
            self.lines = (self.lines + dt * r).min(burst);
            if self.lines < f64::from(lines) {
                wait = wait.max((f64::from(lines) - self.lines) / r);
            }
        }
        let cost = bytes.min(rate.byte_burst) as f64;
        if rate.bytes_per_second > 0 {
            let (r, burst) = (rate.bytes_per_second as f64, rate.byte_burst as f64);
            self.bytes = (self.bytes + dt * r).min(burst);
            if self.bytes < cost {
                wait = wait.max((cost - self.bytes) / r);
            }
        }
        if wait > 0.0 {
            // At least a millisecond, so that the loop does not spin.
            return Err(Duration::from_secs_f64(wait.clamp(0.001, 3600.0)));
        }
        if rate.lines_per_second > 0 {
            self.lines -= f64::from(lines);
        }
        if rate.bytes_per_second > 0 {
            self.bytes -= cost;
        }
        Ok(())
    }
}

/// What a line asks the room to do, owned so the client can be let go of.
enum Action {
    Say {
        line: Arc<[u8]>,
        text: Option<String>,
    },
    Nick(String),
    Who,
    Quit,
    Reply(Arc<[u8]>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_given_up_name_is_held_for_its_address_only() {
        let t0 = Instant::now();
        let mut h = NameHolds::new(8);
        h.hold("alice".into(), ip("192.0.2.1"), t0);
        assert!(!h.held_against("alice", ip("192.0.2.1"), t0), "the same address takes it back");
        assert!(!h.held_against("alice", ip("::ffff:192.0.2.1"), t0), "mapped IPv4 is the same address");
        let left = h.held_against_for("alice", ip("192.0.2.2"), t0 + Duration::from_secs(10));
        assert_eq!(left, Some(NAME_HOLD - Duration::from_secs(10)));
        assert!(!h.held_against("alice", ip("192.0.2.2"), t0 + NAME_HOLD), "free after the hold");
        assert!(!h.held_against("bob", ip("192.0.2.2"), t0));
        h.release("alice");
        assert!(!h.held_against("alice", ip("192.0.2.2"), t0));
    }

    #[test]
    fn the_holds_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut h = NameHolds::new(4);
        for i in 0..10 {
            h.hold(format!("n{i}"), ip("192.0.2.1"), t0);
        }
        assert_eq!(h.order.len(), 4);
        assert_eq!(h.by_key.len(), 4);
        assert!(h.held_against("n9", ip("192.0.2.9"), t0) && !h.held_against("n0", ip("192.0.2.9"), t0));
        // Held again: the later hold counts, the earlier entry expires harmlessly.
        h.hold("n9".into(), ip("192.0.2.1"), t0 + Duration::from_secs(20));
        h.expire(t0 + NAME_HOLD);
        assert!(h.held_against("n9", ip("192.0.2.9"), t0 + NAME_HOLD));
        h.expire(t0 + NAME_HOLD + Duration::from_secs(20));
        assert!(h.by_key.is_empty() && h.order.is_empty());
    }

    #[test]
    fn accepted_members_have_keepalive_on() {
        use crate::server::{KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES};
        let (mut engine, _inbox, local) =
            Engine::bind("127.0.0.1", 0, &RoomConfig::default()).unwrap();
        let _client = std::net::TcpStream::connect(local).unwrap();
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.members.is_empty() && Instant::now() < deadline {
            engine.poll.poll(&mut events, Some(Duration::from_secs(1))).unwrap();
            engine.accept(Instant::now());
        }
        let idx = *engine.members.first().expect("the client was never accepted");
        let c = engine.slots[idx].as_ref().unwrap();
        let s = socket2::SockRef::from(&c.stream);
        assert!(s.keepalive().unwrap(), "SO_KEEPALIVE is off");
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(s.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }
}
