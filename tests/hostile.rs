//! Faults and bad input against every service: the echo server and the chat
//! server in each framing, and the room (line framing only).
//!
//! Each case runs against a fresh service: a well-behaved client is served
//! first, the hostile peers do their worst, and then a well-behaved client
//! must again be served promptly (within [`PROMPT`]) and the process's
//! memory must be back within [`MEMORY_BOUND`] of where it was, both its
//! resident size afterwards and its peak during the case (VmRSS and VmHWM of
//! /proc/self/status; the peak is reset before each case). The services run
//! in this process, so the cases of this file run one at a time (under
//! [`serial`]) to keep those figures their own.
//!
//! The services use short limits here: an idle timeout (echo, room) and a
//! read timeout (chat) of [`IDLE`], and one-second write and close
//! timeouts. The chat server serves one client at a time by design, so for
//! it "served promptly" means once the hostile session ahead of the client
//! has ended, which those limits bound.
//!
//! Nothing sleeps to synchronise: every wait is a read (or an accept) with
//! a timeout; the slowloris peers pace their bytes with such reads too.

mod common;

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{garbage, spawn, RoomPeer as Member, Task, LIMIT};
use tcpchat::framing::{encode, Decoder};
use tcpchat::{ChatHandler, Config, Conn, EchoStats, Framing, Result, Room, RoomConfig, Server};

/// The idle timeout of the echo server and the room, and the chat server's
/// read timeout: how long a peer may take to send a whole message.
const IDLE: Duration = Duration::from_millis(300);
/// How long a well-behaved client may wait for its answer after a case.
const PROMPT: Duration = Duration::from_secs(3);
/// How much the process's resident memory may grow over a case (resident
/// size after it, and peak during it).
const MEMORY_BOUND: u64 = 64 << 20;
/// The services' maximum message size (the default).
const MAX: usize = 1 << 20;

// ----- running the cases one at a time ----------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

/// Hold this while a case runs: the cases measure the whole process.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A field of /proc/self/status, in bytes.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
        * 1024
}

fn rss() -> u64 {
    status_kib("VmRSS:")
}

/// Reset the peak resident size (VmHWM) to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
}

fn peak() -> u64 {
    status_kib("VmHWM:")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

// ----- the services ------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Echo(Framing),
    Chat(Framing),
    Room,
}

use Kind::{Chat, Echo};

const ALL: [Kind; 7] = [
    Echo(Framing::Raw),
    Echo(Framing::Line),
    Echo(Framing::Frame),
    Chat(Framing::Raw),
    Chat(Framing::Line),
    Chat(Framing::Frame),
    Kind::Room,
];

impl Kind {
    fn framing(self) -> Framing {
        match self {
            Echo(f) | Chat(f) => f,
            Kind::Room => Framing::Line,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Echo(fr) => write!(f, "echo/{fr}"),
            Chat(fr) => write!(f, "chat/{fr}"),
            Kind::Room => f.write_str("room"),
        }
    }
}

/// The services' configuration: short limits, a backlog for the storms.
fn service_config(kind: Kind) -> Config {
    let read = match kind {
        Chat(_) => Some(IDLE),
        _ => Some(LIMIT),
    };
    Config::default()
        .with_framing(kind.framing())
        .with_idle_timeout(Some(IDLE))
        .with_read_timeout(read)
        .with_write_timeout(Some(Duration::from_secs(1)))
        .with_close_timeout(Duration::from_secs(1))
        .with_backlog(1024)
}

/// A well-behaved client's configuration.
fn client_config(framing: Framing, wait: Duration) -> Config {
    Config::default()
        .with_framing(framing)
        .with_read_timeout(Some(wait))
        .with_write_timeout(Some(wait))
}

/// What the chat server's handler has seen.
#[derive(Default)]
struct ChatCounts {
    sessions: AtomicU64,
    messages: AtomicU64,
}

/// The chat server's side: greets with `hello`, then answers each message
/// with `re: ` and the message's first [`REPLY_PREFIX`] bytes. Keeps no more
/// than that of anything it receives.
struct Replier {
    last: Option<Vec<u8>>,
    counts: Arc<ChatCounts>,
}

const REPLY_PREFIX: usize = 64;

fn reply_to(msg: &[u8]) -> Vec<u8> {
    [b"re: ", &msg[..msg.len().min(REPLY_PREFIX)]].concat()
}

impl ChatHandler for Replier {
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(Some(match self.last.take() {
            None => b"hello".to_vec(),
            Some(m) => reply_to(&m),
        }))
    }
    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        self.counts.messages.fetch_add(1, Ordering::Relaxed);
        self.last = Some(msg[..msg.len().min(REPLY_PREFIX)].to_vec());
        Ok(())
    }
    fn on_connect(&mut self, _peer: SocketAddr) -> Result<()> {
        self.last = None;
        self.counts.sessions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

enum Service {
    Echo(Arc<Server>, Task<Result<EchoStats>>),
    Chat(Arc<Server>, Task<Result<()>>),
    Room(Room, Task<Vec<String>>),
}

/// A running service under attack.
struct Target {
    kind: Kind,
    addr: SocketAddr,
    config: Config,
    /// Taken by [`Target::stop`]; a case that fails leaves it to `Drop`.
    service: Option<Service>,
    chat: Arc<ChatCounts>,
    probes: AtomicU64,
}

impl Target {
    fn start(kind: Kind, config: Config) -> Target {
        let chat = Arc::new(ChatCounts::default());
        let (addr, service) = match kind {
            Echo(_) => {
                let server = Arc::new(Server::bind("127.0.0.1", 0, config.clone()).unwrap());
                let s = server.clone();
                (
                    server.local_addr(),
                    Service::Echo(server, spawn(move || s.serve_echo())),
                )
            }
            Chat(_) => {
                let server = Arc::new(Server::bind("127.0.0.1", 0, config.clone()).unwrap());
                let s = server.clone();
                let counts = chat.clone();
                let task = spawn(move || {
                    let mut h = Replier { last: None, counts };
                    s.serve_chat(&mut h, false)
                });
                (server.local_addr(), Service::Chat(server, task))
            }
            Kind::Room => {
                let room = Room::bind("127.0.0.1", 0, RoomConfig::from(config.clone())).unwrap();
                room.start().unwrap();
                let addr = room.local_addr();
                (addr, Service::Room(room, bystander(addr)))
            }
        };
        Target {
            kind,
            addr,
            config,
            service: Some(service),
            chat,
            probes: AtomicU64::new(0),
        }
    }

    fn framing(&self) -> Framing {
        self.kind.framing()
    }

    /// A well-behaved client's round trip, which must be done within
    /// [`PROMPT`]: an echo, a short chat session, or a line from one
    /// member of the room to another.
    fn probe(&self) {
        let n = self.probes.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let text = format!("probe {n}");
        match self.kind {
            Echo(f) => self.echo_client(f, PROMPT, &text).close().unwrap(),
            Chat(f) => {
                let mut c = self.connect(&client_config(f, PROMPT));
                assert_eq!(
                    recv_len(&mut c, f, 5),
                    b"hello",
                    "{}: probe greeting",
                    self.kind
                );
                c.send(text.as_bytes()).unwrap();
                let want = reply_to(text.as_bytes());
                assert_eq!(
                    recv_len(&mut c, f, want.len()),
                    want,
                    "{}: probe reply",
                    self.kind
                );
                c.send(b"BYE").unwrap();
                assert_eq!(
                    c.recv().unwrap(),
                    None,
                    "{}: the server ends the session",
                    self.kind
                );
                c.close().unwrap();
            }
            Kind::Room => {
                let mut a = Member::join_within(self.addr, PROMPT);
                let mut b = Member::join_within(self.addr, PROMPT);
                a.wait_for(&format!("* {} joined", b.name));
                b.send(&text);
                a.wait_for(&format!("{}: {text}", b.name));
            }
        }
        let took = started.elapsed();
        assert!(
            took < PROMPT,
            "{}: a well-behaved client waited {took:?}",
            self.kind
        );
    }

    /// A client of the echo service that has had `text` echoed.
    ///
    /// A place freed by a client that has just closed is free once the
    /// server's thread for it has finished, which a client cannot see: with
    /// the small limit of `more_clients_than_the_limit` a new client may
    /// still find the server full, and tries again (up to 100 times).
    fn echo_client(&self, f: Framing, wait: Duration, text: &str) -> Conn {
        let full = tcpchat::echo::server_full_message(self.config.max_clients);
        for attempt in 0.. {
            let mut c = self.connect(&client_config(f, wait));
            c.send(text.as_bytes()).expect("echo client: send");
            let got = recv_len(&mut c, f, text.len());
            let refused = !got.is_empty()
                && full
                    .as_bytes()
                    .starts_with(&got[..got.len().min(full.len())]);
            if refused && self.config.max_clients < 10 && attempt < 100 {
                continue;
            }
            assert_eq!(got, text.as_bytes(), "{}: echo", self.kind);
            return c;
        }
        unreachable!()
    }

    fn connect(&self, config: &Config) -> Conn {
        tcpchat::connect("127.0.0.1", self.addr.port(), config).expect("connect")
    }

    /// A plain socket, for bytes no tcpchat client would send.
    fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
        s
    }

    /// A plain socket that resets the connection when closed (SO_LINGER 0).
    fn resetting(&self) -> TcpStream {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_linger(Some(Duration::ZERO)).unwrap();
        s.connect(&self.addr.into()).expect("connect");
        let s: TcpStream = s.into();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
        s
    }

    /// Stop the service; it must stop within [`LIMIT`] and without a failure.
    fn stop(mut self) {
        let started = Instant::now();
        match self.service.take().unwrap() {
            Service::Echo(server, task) => {
                server.shutdown();
                task.join()
                    .expect("the echo service panicked")
                    .expect("the echo service failed");
            }
            Service::Chat(server, task) => {
                server.shutdown();
                task.join()
                    .expect("the chat server panicked")
                    .expect("the chat server failed");
            }
            Service::Room(room, watcher) => {
                room.shutdown();
                let lines = watcher.join().expect("the bystander panicked");
                assert_eq!(
                    lines.last().map(String::as_str),
                    Some("* server shutting down"),
                    "the bystander was not in the room to the end"
                );
            }
        }
        assert!(
            started.elapsed() < LIMIT,
            "{}: stopping took {:?}",
            self.kind,
            started.elapsed()
        );
    }
}

impl Drop for Target {
    /// A case that failed: stop the service anyway, so that the next case
    /// does not run beside it.
    fn drop(&mut self) {
        match self.service.take() {
            Some(Service::Echo(server, _)) | Some(Service::Chat(server, _)) => server.shutdown(),
            Some(Service::Room(room, _)) => room.shutdown(),
            None => {}
        }
    }
}

/// Receive `len` bytes' worth of messages: one message in line and frame
/// framing, as many reads as it takes in raw framing.
fn recv_len(c: &mut Conn, framing: Framing, len: usize) -> Vec<u8> {
    let mut got = c.recv().expect("recv").expect("a message, not the end");
    while framing == Framing::Raw && got.len() < len {
        got.extend(c.recv().expect("recv").expect("more bytes, not the end"));
    }
    got
}

/// Run `case` against a fresh `kind` service (configured by `tweak`), with
/// a well-behaved round trip before and after, and the memory checks.
fn check(name: &str, kind: Kind, tweak: impl FnOnce(Config) -> Config, case: impl FnOnce(&Target)) {
    let target = Target::start(kind, tweak(service_config(kind)));
    target.probe();
    let before = rss();
    reset_peak();
    let started = Instant::now();
    case(&target);
    target.probe();
    let (after, top) = (rss(), peak());
    eprintln!(
        "{name} {kind}: {:?}; resident {:.1} -> {:.1} MiB, peak {:.1} MiB",
        started.elapsed(),
        mib(before),
        mib(after),
        mib(top)
    );
    assert!(
        after <= before + MEMORY_BOUND,
        "{name} {kind}: resident memory grew from {:.1} to {:.1} MiB",
        mib(before),
        mib(after)
    );
    assert!(
        top <= before + MEMORY_BOUND,
        "{name} {kind}: resident memory peaked at {:.1} MiB (from {:.1})",
        mib(top),
        mib(before)
    );
    target.stop();
}

fn same(c: Config) -> Config {
    c
}

// ----- room members ---------------------------------------------------------------

/// A member that stays in the room from its start to its shutdown, reading
/// everything (the room must only ever write whole UTF-8 lines, and never
/// drop it) and sending an empty line every 50 ms so that it is never idle.
/// Returns the last lines it read.
fn bystander(addr: SocketAddr) -> Task<Vec<String>> {
    // Raw framing: it cuts the room's bytes into lines itself, so that half a
    // line at the end (or a line that is not UTF-8) fails it.
    let mut m = Member::join_raw(addr);
    m.set_read_timeout(Duration::from_millis(50));
    spawn(move || {
        let started = Instant::now();
        let mut last = Vec::new();
        let mut keepalive = Instant::now();
        let mut sending = true;
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "the bystander outlived its room"
            );
            if sending && keepalive.elapsed() >= Duration::from_millis(50) {
                // A failure means the room has closed its end (which a
                // failed send also does to ours): what it sent before is
                // in already.
                sending = m.conn().send(b"\n").is_ok();
                keepalive = Instant::now();
            }
            match m.next_line() {
                Ok(Some(line)) => {
                    assert!(
                        !line.starts_with("error:"),
                        "the bystander was told {line:?}"
                    );
                    if last.len() == 8 {
                        last.remove(0);
                    }
                    last.push(line);
                }
                Ok(None) => break,
                Err(tcpchat::Error::Timeout { .. }) => {}
                Err(tcpchat::Error::ConnectionReset(_)) => break,
                Err(tcpchat::Error::Closed(_)) if !sending => break,
                Err(e) => panic!("bystander: {e}"),
            }
        }
        last
    })
}

// ----- hostile helpers -------------------------------------------------------------

/// Read until end of stream (a reset counts as the end), within [`LIMIT`].
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    read_each(s, |b| got.extend_from_slice(b));
    got
}

/// Hand every chunk read to `f` until end of stream, within [`LIMIT`];
/// returns how long it took.
fn read_each(s: &mut TcpStream, mut f: impl FnMut(&[u8])) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        assert!(
            started.elapsed() < LIMIT,
            "the server never closed the connection"
        );
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(n) => f(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("waiting for the server to close: {e}"),
        }
    }
}

/// What a decoder makes of `wire`: the messages up to the first error, and
/// whether there was one.
fn decode(framing: Framing, max: usize, wire: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut d = Decoder::new(framing, max, 1024);
    d.feed(wire);
    d.set_eof();
    let mut msgs = Vec::new();
    loop {
        match d.next_message() {
            Ok(Some(m)) => msgs.push(m.to_vec()),
            Ok(None) => return (msgs, false),
            Err(_) => return (msgs, true),
        }
    }
}

fn encode_all<M: AsRef<[u8]>>(framing: Framing, msgs: &[M]) -> Vec<u8> {
    let mut wire = Vec::new();
    for m in msgs {
        encode(framing, usize::MAX >> 1, m.as_ref(), &mut wire).unwrap();
    }
    wire
}

/// What the chat server sends for these messages: the greeting, then a
/// reply to each.
fn chat_replies(msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = vec![b"hello".to_vec()];
    out.extend(msgs.iter().map(|m| reply_to(m)));
    out
}

fn assert_prefix(kind: Kind, got: &[u8], want: &[u8]) {
    assert!(
        got.len() <= want.len() && got == &want[..got.len()],
        "{kind}: the server wrote {} bytes that are not a prefix of the {} expected",
        got.len(),
        want.len()
    );
}

/// A peer that sends `bytes` one at a time (cycling), pacing them with
/// 50 ms reads, until the server closes the connection; returns how long
/// that took.
fn trickle(addr: SocketAddr, bytes: &[u8]) -> Duration {
    // From before the connect: the server may start its clock as soon as
    // the handshake is done, before connect returns here.
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 4096];
    for i in 0.. {
        assert!(
            started.elapsed() < LIMIT,
            "a slowloris peer was never dropped"
        );
        if s.write_all(&bytes[i % bytes.len()..][..1]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {} // a greeting, a notice: what closes it comes next
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    started.elapsed()
}

/// Send many bytes from another thread until done (or `total` sent or the
/// server refuses more); then shut down the write half.
fn pour(s: &TcpStream, total: usize, byte: u8, done: Arc<AtomicBool>) -> Task<usize> {
    let mut w = s.try_clone().unwrap();
    spawn(move || {
        let chunk = vec![byte; 64 * 1024];
        let mut sent = 0;
        while sent < total && !done.load(Ordering::Relaxed) {
            match w.write(&chunk[..chunk.len().min(total - sent)]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = w.shutdown(Shutdown::Write);
        sent
    })
}

// ----- the cases ---------------------------------------------------------------------

/// Random bytes, and valid messages followed by random bytes: the echo is
/// exactly what the decoder reads of them (a prefix, when the connection is
/// dropped for breaking the format), the chat server answers each message,
/// the room answers or relays each line; then the connection ends.
#[test]
fn random_bytes() {
    let _g = serial();
    for kind in ALL {
        check("random bytes", kind, same, |t| {
            for seed in 1..=6u64 {
                let mut input = Vec::new();
                if seed % 2 == 0 {
                    // Well-formed messages first, so the junk lands mid-stream.
                    let msgs: Vec<Vec<u8>> = (0..50)
                        .map(|i| garbage((i * 37 + seed as usize) % 300, seed * 1000 + i as u64))
                        .map(|mut m| {
                            m.retain(|&b| b != b'\n');
                            m
                        })
                        .collect();
                    input = encode_all(t.framing(), &msgs);
                }
                input.extend(garbage(64 * 1024, seed));
                let mut s = t.raw();
                let _ = s.write_all(&input);
                let _ = s.shutdown(Shutdown::Write);
                let got = read_all(&mut s);
                let (msgs, broken) = decode(t.framing(), MAX, &input);
                match t.kind {
                    Echo(Framing::Raw) => assert!(got == input, "{}: the echo differs", t.kind),
                    Echo(f) => {
                        let want = encode_all(f, &msgs);
                        assert_prefix(t.kind, &got, &want);
                        if !broken {
                            assert_eq!(got.len(), want.len(), "{}: echoes missing", t.kind);
                        }
                    }
                    Chat(Framing::Raw) => assert!(got.starts_with(b"hello"), "{}", t.kind),
                    Chat(f) => {
                        let want = encode_all(f, &chat_replies(&msgs));
                        assert_prefix(t.kind, &got, &want);
                        if !broken {
                            assert_eq!(got.len(), want.len(), "{}: replies missing", t.kind);
                        }
                    }
                    Kind::Room => {
                        let text = String::from_utf8(got).expect("the room writes UTF-8");
                        assert!(text.starts_with("* welcome, you are "), "{text:.100}");
                        assert!(text.is_empty() || text.ends_with('\n'));
                    }
                }
            }
        });
    }
}

/// Lines that are not UTF-8: the room tells the sender alone and keeps it;
/// the echo and chat servers carry them as the bytes they are.
#[test]
fn invalid_utf8_where_text_is_expected() {
    let _g = serial();
    let bad: [&[u8]; 6] = [
        b"caf\xc3\x28",
        b"\xff\xfe",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"ok \xf4\x90\x80\x80",
        b"/nick \xff",
    ];
    check("invalid UTF-8", Kind::Room, same, |t| {
        let mut a = Member::join(t.addr);
        // Raw framing: its last line is cut short.
        let mut b = Member::join_raw(t.addr);
        a.wait_for(&format!("* {} joined", b.name));
        for line in bad {
            b.send_line(line);
            assert_eq!(
                b.line(),
                "error: your line is not valid UTF-8; it was not sent"
            );
        }
        b.send("still here");
        assert_eq!(
            a.line(),
            format!("{}: still here", b.name),
            "nothing else reached a"
        );
        // A last line cut inside a character, then the end of the stream.
        b.send_bytes(b"cut \xc3");
        b.shutdown_write();
        assert_eq!(
            b.until_eof(),
            ["error: your line is not valid UTF-8; it was not sent"]
        );
        assert_eq!(a.line(), format!("* {} left", b.name));
    });
    for kind in [
        Echo(Framing::Line),
        Echo(Framing::Frame),
        Chat(Framing::Line),
        Chat(Framing::Frame),
    ] {
        check("invalid UTF-8", kind, same, |t| {
            let msgs: Vec<Vec<u8>> = bad.iter().map(|m| m.to_vec()).collect();
            let mut s = t.raw();
            s.write_all(&encode_all(t.framing(), &msgs)).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let got = read_all(&mut s);
            let want = match t.kind {
                Echo(f) => encode_all(f, &msgs),
                _ => encode_all(t.framing(), &chat_replies(&msgs)),
            };
            assert!(got == want, "{}: {got:?}", t.kind);
        });
    }
}

/// 16 MiB without a newline: refused as soon as the limit passes (line), or
/// streamed back (the raw echo) and answered piece by piece (raw chat).
#[test]
fn a_line_of_many_mib_without_a_newline() {
    const TOTAL: usize = 16 << 20;
    let _g = serial();
    for kind in [
        Echo(Framing::Raw),
        Echo(Framing::Line),
        Chat(Framing::Raw),
        Chat(Framing::Line),
        Kind::Room,
    ] {
        check("16 MiB line", kind, same, |t| {
            let mut s = t.raw();
            let done = Arc::new(AtomicBool::new(false));
            let writer = pour(&s, TOTAL, b'x', done.clone());
            let mut got = 0usize;
            let mut head = Vec::new();
            read_each(&mut s, |b| {
                got += b.len();
                if head.len() < 4096 {
                    head.extend_from_slice(&b[..b.len().min(4096)]);
                }
                if t.kind == Echo(Framing::Raw) {
                    assert!(b.iter().all(|&c| c == b'x'), "the raw echo differs");
                }
            });
            done.store(true, Ordering::Relaxed);
            let sent = writer.join().unwrap();
            match t.kind {
                Echo(Framing::Raw) => assert_eq!((sent, got), (TOTAL, TOTAL), "raw echo"),
                Echo(_) => assert_eq!(got, 0, "{}: nothing is echoed", t.kind),
                Chat(Framing::Raw) => assert!(
                    head.starts_with(b"hello") && got > TOTAL / 1024 * 4,
                    "{got}"
                ),
                Chat(_) => assert_eq!(head, encode_all(t.framing(), &[b"hello"]), "{}", t.kind),
                Kind::Room => {
                    let text = String::from_utf8(head).unwrap();
                    let lines: Vec<&str> = text.lines().collect();
                    assert_eq!(lines.len(), 2, "{text}");
                    assert_eq!(
                        lines[1],
                        format!(
                            "error: line longer than {} bytes; closing",
                            RoomConfig::default().line_limit()
                        )
                    );
                }
            }
        });
    }
}

/// A frame length of 0xFFFFFFFF, and one of 1 GiB with a little payload:
/// refused at once with the default limit, nothing allocated.
#[test]
fn hostile_frame_lengths_are_refused_at_once() {
    let _g = serial();
    for kind in [Echo(Framing::Frame), Chat(Framing::Frame)] {
        check("frame length 0xFFFFFFFF / 1 GiB", kind, same, |t| {
            for header in [u32::MAX, 1 << 30, MAX as u32 + 1] {
                let mut s = t.raw();
                let _ = s.write_all(&[&header.to_be_bytes()[..], &[7u8; 1000]].concat());
                let started = Instant::now();
                let got = read_all(&mut s);
                assert!(
                    started.elapsed() < PROMPT,
                    "{}: dropped after {:?}",
                    t.kind,
                    started.elapsed()
                );
                let want: &[u8] = if matches!(t.kind, Echo(_)) {
                    b""
                } else {
                    b"\0\0\0\x05hello"
                };
                assert_eq!(got, want, "{}: length {header:#x}", t.kind);
            }
        });
    }
}

/// A frame that promises 1 GiB (within a limit raised to 1 GiB), sends
/// 64 KiB of it and stops: the server commits memory only for what came,
/// and drops the peer at the timeout. Ten such peers at once.
#[test]
fn a_frame_that_promises_1_gib_and_stops() {
    let _g = serial();
    for kind in [Echo(Framing::Frame), Chat(Framing::Frame)] {
        check(
            "1 GiB promise",
            kind,
            |c| c.with_max_message_size(1 << 30),
            |t| {
                // The chat server takes them one after the other: fewer.
                let peers = if matches!(t.kind, Chat(_)) { 3 } else { 10 };
                let peers: Vec<TcpStream> = (0..peers)
                    .map(|_| {
                        let mut s = t.raw();
                        s.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
                        s.write_all(&vec![9u8; 64 * 1024]).unwrap();
                        s
                    })
                    .collect();
                for mut s in peers {
                    let took = read_each(&mut s, |_| {});
                    assert!(took < LIMIT, "{}", t.kind);
                }
            },
        );
    }
}

/// Empty lines and empty frames: echoed as empty messages, answered by the
/// chat server, ignored by the room.
#[test]
fn zero_length_messages() {
    let _g = serial();
    for kind in [
        Echo(Framing::Line),
        Echo(Framing::Frame),
        Chat(Framing::Line),
        Chat(Framing::Frame),
    ] {
        check("zero-length messages", kind, same, |t| {
            let f = t.framing();
            let mut c = t.connect(&client_config(f, LIMIT));
            if matches!(t.kind, Echo(_)) {
                let msgs: Vec<&[u8]> = (0..1000)
                    .map(|i| if i % 100 == 99 { &b"x"[..] } else { &b""[..] })
                    .collect();
                c.send_many(&msgs).unwrap();
                for want in &msgs {
                    assert_eq!(c.recv().unwrap().unwrap(), *want);
                }
            } else {
                assert_eq!(c.recv().unwrap().unwrap(), b"hello");
                for _ in 0..100 {
                    c.send(b"").unwrap();
                    assert_eq!(c.recv().unwrap().unwrap(), b"re: ");
                }
                c.send(b"BYE").unwrap();
            }
            c.shutdown_write().unwrap();
            assert_eq!(c.recv().unwrap(), None);
            c.close().unwrap();
        });
    }
    check("zero-length messages", Kind::Room, same, |t| {
        let mut a = Member::join(t.addr);
        let mut b = Member::join(t.addr);
        a.wait_for(&format!("* {} joined", b.name));
        // "\n\r\n" a thousand times.
        b.send_lines(&[&b""[..], b"\r"].repeat(1000));
        b.send("after the empty lines");
        assert_eq!(a.line(), format!("{}: after the empty lines", b.name));
    });
}

/// Peers that reset the connection (SO_LINGER 0) in the middle of a
/// message, with answers still unread, at every stage of a session.
#[test]
fn a_peer_that_resets_mid_message() {
    let _g = serial();
    for kind in ALL {
        check("reset mid-message", kind, same, |t| {
            let f = t.framing();
            for i in 0..20usize {
                let mut s = t.resetting();
                let whole: Vec<String> = (0..i * 10).map(|n| format!("message {n}")).collect();
                let mut wire = encode_all(f, &whole);
                match f {
                    Framing::Frame => wire.extend_from_slice(&[0, 0, 1, 0, b'h', b'a', b'l', b'f']),
                    _ => wire.extend_from_slice(b"half a mess"),
                }
                let _ = s.write_all(&wire);
                if i % 2 == 1 {
                    // Wait for a first answer (greeting, echo, welcome), so
                    // the reset lands while the service is busy with us.
                    let mut buf = [0u8; 1];
                    let _ = s.read(&mut buf);
                }
                drop(s); // RST
            }
        });
    }
}

/// 500 connections opened, then all closed at once (half of them with a
/// reset), twice.
#[test]
fn connect_and_close_storms() {
    let _g = serial();
    for kind in ALL {
        check("connect/close storm", kind, same, |t| {
            for _round in 0..2 {
                let storm: Vec<TcpStream> = (0..500)
                    .map(|i| if i % 2 == 0 { t.raw() } else { t.resetting() })
                    .collect();
                drop(storm);
            }
        });
    }
}

/// Slowloris: peers trickling one byte at a time, never finishing a
/// message, are dropped at the timeout; the others are served meanwhile. In
/// raw framing every byte is a message, so a trickle is served, and a
/// silent peer is what gets dropped.
#[test]
fn slowloris_peers_are_dropped_at_the_timeout() {
    let _g = serial();
    for kind in ALL {
        check("slowloris", kind, same, |t| {
            let bytes: &[u8] = match t.framing() {
                Framing::Frame => &[0, 0, 0, 200],
                _ => b"a",
            };
            if t.framing() == Framing::Raw {
                let mut c = t.connect(&client_config(Framing::Raw, LIMIT));
                if matches!(t.kind, Chat(_)) {
                    assert_eq!(recv_len(&mut c, Framing::Raw, 5), b"hello");
                }
                for b in b"trickle" {
                    c.send(&[*b]).unwrap();
                    let want = if matches!(t.kind, Echo(_)) {
                        vec![*b]
                    } else {
                        reply_to(&[*b])
                    };
                    assert_eq!(recv_len(&mut c, Framing::Raw, want.len()), want);
                }
                c.close().unwrap();
                // A silent peer (timed from before its connect).
                let started = Instant::now();
                let mut s = t.raw();
                read_each(&mut s, |_| {});
                let took = started.elapsed();
                assert!(
                    took >= IDLE && took < IDLE + PROMPT,
                    "{}: silent peer dropped after {took:?}",
                    t.kind
                );
                return;
            }
            // The chat server serves one client at a time: two in a row.
            // The others: twenty at once, and a well-behaved client during.
            let peers = if matches!(t.kind, Chat(_)) { 2 } else { 20 };
            let addr = t.addr;
            let tricklers: Vec<Task<Duration>> = (0..peers)
                .map(|_| {
                    let bytes = bytes.to_vec();
                    spawn(move || trickle(addr, &bytes))
                })
                .collect();
            if !matches!(t.kind, Chat(_)) {
                t.probe();
            }
            for (i, tr) in tricklers.into_iter().enumerate() {
                let took = tr.join().expect("a trickler panicked");
                // Chat: the second waits for the first's session to end.
                let slack = if matches!(t.kind, Chat(_)) {
                    IDLE * peers as u32 + PROMPT
                } else {
                    PROMPT
                };
                assert!(
                    took >= IDLE && took < IDLE + slack,
                    "{} peer {i}: dropped after {took:?}",
                    t.kind
                );
            }
        });
    }
}

/// Half-close: the peer shuts its write side and still gets the answers to
/// everything it sent, then the end of the stream.
#[test]
fn half_close_still_gets_every_answer() {
    let _g = serial();
    for kind in ALL {
        check("half-close", kind, same, |t| match t.kind {
            Echo(Framing::Raw) => {
                let data = garbage(256 * 1024, 99);
                let mut s = t.raw();
                let w = {
                    let mut w = s.try_clone().unwrap();
                    let data = data.clone();
                    spawn(move || {
                        w.write_all(&data).unwrap();
                        w.shutdown(Shutdown::Write).unwrap();
                    })
                };
                let got = read_all(&mut s);
                w.join().unwrap();
                assert!(got == data, "the raw echo differs");
            }
            Echo(f) => {
                let mut c = t.connect(&client_config(f, LIMIT));
                let msgs: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
                c.send_many(&msgs).unwrap();
                c.shutdown_write().unwrap();
                for want in &msgs {
                    assert_eq!(c.recv().unwrap().unwrap(), want.as_bytes());
                }
                assert_eq!(c.recv().unwrap(), None);
                c.close().unwrap();
            }
            Chat(f) => {
                let mut c = t.connect(&client_config(f, LIMIT));
                assert_eq!(recv_len(&mut c, f, 5), b"hello");
                c.send(b"one and done").unwrap();
                c.shutdown_write().unwrap();
                let want = reply_to(b"one and done");
                assert_eq!(recv_len(&mut c, f, want.len()), want);
                assert_eq!(c.recv().unwrap(), None, "then the end");
                c.close().unwrap();
            }
            Kind::Room => {
                let mut a = Member::join(t.addr);
                // Raw framing: its last line has no newline.
                let mut b = Member::join_raw(t.addr);
                a.wait_for(&format!("* {} joined", b.name));
                b.send_bytes(b"/who\nfirst\nlast words");
                b.shutdown_write();
                let rest = b.until_eof();
                assert_eq!(rest.len(), 1, "{rest:?}");
                assert!(rest[0].starts_with("* 3 online: "), "{rest:?}");
                assert_eq!(a.line(), format!("{}: first", b.name));
                assert_eq!(a.line(), format!("{}: last words", b.name));
                assert_eq!(a.line(), format!("* {} left", b.name));
            }
        });
    }
}

/// 200 clients at once, each checking that every answer it should get
/// arrives once and in order.
#[test]
fn two_hundred_concurrent_clients_lose_nothing() {
    const CLIENTS: usize = 200;
    let _g = serial();
    for kind in ALL {
        // Room members joined early wait for the others to join before they
        // speak: give them more than the usual idle time.
        let tweak = |c: Config| {
            if kind == Kind::Room {
                c.with_idle_timeout(Some(LIMIT))
            } else {
                c
            }
        };
        check("200 clients", kind, tweak, |t| {
            match t.kind {
                Echo(f) => {
                    let clients: Vec<Task<()>> = (0..CLIENTS)
                        .map(|i| {
                            let mut c = t.connect(&client_config(f, LIMIT));
                            spawn(move || {
                                let msgs: Vec<String> = (0..50)
                                    .map(|m| format!("client {i} message {m:02};"))
                                    .collect();
                                if f == Framing::Raw {
                                    let all = msgs.concat();
                                    c.send(all.as_bytes()).unwrap();
                                    assert_eq!(recv_len(&mut c, f, all.len()), all.as_bytes());
                                } else {
                                    for batch in msgs.chunks(10) {
                                        c.send_many(batch).unwrap();
                                        for want in batch {
                                            assert_eq!(c.recv().unwrap().unwrap(), want.as_bytes());
                                        }
                                    }
                                }
                                c.shutdown_write().unwrap();
                                assert_eq!(c.recv().unwrap(), None, "nothing more, nothing twice");
                                c.close().unwrap();
                            })
                        })
                        .collect();
                    for c in clients {
                        c.join().expect("an echo client failed");
                    }
                }
                Chat(f) => {
                    let before = t.chat.messages.load(Ordering::Relaxed);
                    let clients: Vec<Task<()>> = (0..CLIENTS)
                        .map(|i| {
                            // They all wait in the backlog; each is served in turn.
                            let mut c = t.connect(&client_config(f, LIMIT));
                            spawn(move || {
                                assert_eq!(recv_len(&mut c, f, 5), b"hello");
                                for m in 0..5 {
                                    let msg = format!("client {i} message {m}");
                                    c.send(msg.as_bytes()).unwrap();
                                    let want = reply_to(msg.as_bytes());
                                    assert_eq!(recv_len(&mut c, f, want.len()), want);
                                }
                                c.send(b"BYE").unwrap();
                                assert_eq!(c.recv().unwrap(), None);
                                c.close().unwrap();
                            })
                        })
                        .collect();
                    for c in clients {
                        c.join().expect("a chat client failed");
                    }
                    assert_eq!(
                        t.chat.messages.load(Ordering::Relaxed) - before,
                        (CLIENTS * 5) as u64
                    );
                }
                Kind::Room => room_crowd(t.addr, CLIENTS, 10),
            }
        });
    }
}

/// `clients` members, each sending `lines` numbered lines once all have
/// joined, and checking it gets every other member's lines once and in order.
fn room_crowd(addr: SocketAddr, clients: usize, lines: usize) {
    let members: Vec<Member> = (0..clients).map(|_| Member::join(addr)).collect();
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let tasks: Vec<Task<()>> = members
        .into_iter()
        .map(|mut m| {
            let names = names.clone();
            spawn(move || {
                let batch: Vec<String> = (0..lines).map(|n| format!("{n} from {}", m.name)).collect();
                m.send_lines(&batch);
                // sender -> the next line number expected from it
                let mut next: std::collections::HashMap<String, usize> = Default::default();
                let mut got = 0;
                while got < (clients - 1) * lines {
                    let l = m.line();
                    if l.starts_with("* ") {
                        continue; // joins of the later members
                    }
                    let (from, text) = l.split_once(": ").unwrap_or_else(|| panic!("{l:?}"));
                    assert_ne!(from, m.name, "a member got its own line");
                    let n = next.entry(from.to_string()).or_default();
                    assert_eq!(
                        text,
                        format!("{n} from {from}"),
                        "{}: lost, doubled or out of order",
                        m.name
                    );
                    *n += 1;
                    got += 1;
                }
                assert_eq!(next.len(), clients - 1);
                assert!(names
                    .iter()
                    .all(|n| *n == m.name || next.get(n) == Some(&lines)));
                m.send("/quit");
            })
        })
        .collect();
    for t in tasks {
        t.join().expect("a room member failed");
    }
}

/// More clients than the limit: each one over it is told the server is
/// full and closed; the others are served as before and places free up.
/// (The chat server serves one client at a time: the others wait their
/// turn, and every one of them is served.)
#[test]
fn more_clients_than_the_limit() {
    const LIMIT_CLIENTS: usize = 4;
    let _g = serial();
    for kind in ALL {
        check(
            "over the limit",
            kind,
            |c| c.with_max_clients(LIMIT_CLIENTS),
            |t| match t.kind {
                Echo(f) => {
                    let mut held: Vec<Conn> = (0..LIMIT_CLIENTS)
                        .map(|i| t.echo_client(f, LIMIT, &format!("held {i}")))
                        .collect();
                    let notice =
                        format!("error: server full ({LIMIT_CLIENTS} clients); try again later\n");
                    let extra: Vec<TcpStream> = (0..20).map(|_| t.raw()).collect();
                    for mut s in extra {
                        let got = read_all(&mut s);
                        let want = match f {
                            Framing::Frame => encode_all(f, &[notice.trim_end()]),
                            _ => notice.clone().into_bytes(),
                        };
                        assert_eq!(got, want, "{}", t.kind);
                    }
                    for c in held.iter_mut() {
                        c.send(b"still served").unwrap();
                        assert_eq!(recv_len(c, f, 12), b"still served");
                    }
                    for c in held {
                        c.close().unwrap();
                    }
                }
                Chat(f) => {
                    let mut first = t.connect(&client_config(f, LIMIT));
                    assert_eq!(recv_len(&mut first, f, 5), b"hello");
                    let waiting: Vec<Conn> = (0..20)
                        .map(|_| t.connect(&client_config(f, LIMIT)))
                        .collect();
                    first.send(b"BYE").unwrap();
                    assert_eq!(first.recv().unwrap(), None);
                    first.close().unwrap();
                    for mut c in waiting {
                        assert_eq!(recv_len(&mut c, f, 5), b"hello");
                        c.send(b"BYE").unwrap();
                        assert_eq!(c.recv().unwrap(), None);
                        c.close().unwrap();
                    }
                }
                Kind::Room => {
                    // The bystander holds one place.
                    let held: Vec<Member> = (1..LIMIT_CLIENTS)
                        .map(|_| Member::join(t.addr))
                        .collect();
                    for _ in 0..20 {
                        let mut extra = Member::connect(t.addr);
                        assert_eq!(
                            extra.until_eof(),
                            [format!(
                                "error: server full ({LIMIT_CLIENTS} clients); try again later"
                            )]
                        );
                    }
                    // Each leaves, and its place is free once it has its "bye".
                    // The refused never joined: nobody heard of them.
                    for mut m in held {
                        m.send("/quit");
                        let lines = m.until_eof();
                        assert_eq!(lines.last().map(String::as_str), Some("* bye"), "{lines:?}");
                        for l in &lines[..lines.len() - 1] {
                            assert!(l.ends_with(" joined") || l.ends_with(" left"), "{l:?}");
                        }
                    }
                    if let Some(Service::Room(room, _)) = &t.service {
                        assert_eq!(room.stats().refused, 20);
                    }
                }
            },
        );
    }
}

/// Regression (found by the fuzz target `line_decoder`): a last line without
/// its newline, one byte over the limit, then end of stream, was taken as a
/// message. It must be refused like any line over the limit.
#[test]
fn a_final_line_one_byte_over_the_limit_is_refused() {
    let _g = serial();
    check(
        "final line over the limit",
        Kind::Room,
        |c| c.with_max_message_size(1024),
        |t| {
            let mut a = Member::join(t.addr);
            // Raw framing: its last line has no newline.
            let mut b = Member::join_raw(t.addr);
            a.wait_for(&format!("* {} joined", b.name));
            b.send_bytes(&[b'z'; 1025]);
            b.shutdown_write();
            assert_eq!(
                b.until_eof(),
                ["error: line longer than 1024 bytes; closing"]
            );
            assert_eq!(
                a.line(),
                format!("* {} was dropped (line too long)", b.name)
            );
        },
    );
    check(
        "final line over the limit",
        Chat(Framing::Line),
        |c| c.with_max_message_size(1024),
        |t| {
            let mut s = t.raw();
            s.write_all(&[b'z'; 1025]).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_all(&mut s), b"hello\n", "no reply to an oversize line");
        },
    );
}

/// Regression: a peer that connects and resets before the server accepts
/// it made the accept fail (its address could no longer be read), which
/// stopped the chat server's loop for good and paused the echo server's
/// accepting for 100 ms per such peer. The chat server is busy with a
/// session here, so the resets are sure to land in its backlog.
#[test]
fn peers_that_reset_before_they_are_accepted() {
    let _g = serial();
    for kind in ALL {
        check("reset before accept", kind, same, |t| {
            let f = t.framing();
            let mut busy = matches!(t.kind, Chat(_)).then(|| {
                let mut c = t.connect(&client_config(f, LIMIT));
                assert_eq!(recv_len(&mut c, f, 5), b"hello");
                c
            });
            for _ in 0..100 {
                drop(t.resetting());
            }
            if let Some(mut c) = busy.take() {
                c.send(b"BYE").unwrap();
                assert_eq!(c.recv().unwrap(), None);
                c.close().unwrap();
            }
        });
    }
}
