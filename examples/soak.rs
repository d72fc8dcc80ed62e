//! A bounded soak run of the chat room: well-behaved clients and hostile
//! ones, reconnecting, for a fixed time; then every check, and a report.
//!
//!     cargo run --release --example soak                 # 600 s
//!     cargo run --release --example soak -- --seconds 120
//!     cargo run --release --example soak -- --quick      # 10 s, for CI
//!
//! The room runs in a child process (this program started again with
//! `--room-child`), so that its resident memory can be read on its own from
//! /proc/PID/status. It has an idle timeout of 2 s, a line limit of 64 KiB,
//! room for 64 clients and a queue of 32 KiB per client. Everything
//! is on 127.0.0.1; every loop is bounded in time, and the child exits when
//! this program closes its standard input (or dies).
//!
//! Every client is a tcpchat connection ([`tcpchat::connect`]): the
//! well-behaved ones in `line` framing, the hostile ones that send bytes
//! line framing refuses (random bytes, half lines, a line over the limit,
//! one byte at a time) in `raw` framing. Only three hostile actions use
//! plain sockets, for what tcpchat's client cannot do: a reset (SO_LINGER
//! 0), a storm of connections dropped at once (half of them reset), and a
//! reader with a tiny receive buffer (SO_RCVBUF).
//!
//! Well-behaved clients ([`WELL_BEHAVED`] of them) each send numbered lines
//! (`seq N`) in small bursts, read everything, and leave (`/quit`) and join
//! again every 1 to 4 s. What must match: every line a well-behaved client
//! sends while another well-behaved client is in the room reaches that
//! client once and in order. Precisely, for a sender S and a receiver R:
//!
//! * R gets S's lines as one gapless run, in order, none twice;
//! * if S joined after R (R saw `* S joined`), the run starts at S's first
//!   line; otherwise it starts no later than the first line S sent after it
//!   read `* R joined`;
//! * if S leaves while R stays (R sees `* S left`), the run ends with S's
//!   last line; at the end of the run every well-behaved client stops
//!   sending and waits until it holds every other one's last line.
//!
//! "Expected" counts the deliveries those rules require, "received" the
//! ones that came; they must be equal, with nothing lost, doubled or out of
//! order.
//!
//! Hostile clients meanwhile send random bytes and invalid UTF-8, lines over
//! the limit, trickle bytes (slowloris), reset connections mid-line, open
//! and close 50 connections at once, read nothing (slow readers) and
//! half-close. Each outcome is counted by kind; those the room must produce
//! (dropping the peer, refusing it when full, ...) are expected, anything
//! else fails the run.
//!
//! The room's resident memory is read when the well-behaved clients have
//! joined (start), every second, and once the hostile clients are gone and
//! the room has dropped every one of them (end): end must not exceed start
//! by more than `--memory-bound-mib` (default 8). Exit status 0 when every
//! check passed, 1 otherwise, 2 for bad flags.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tcpchat::{Config, Conn, Error, Framing, Room, RoomConfig};

/// Well-behaved clients.
const WELL_BEHAVED: usize = 8;
/// Hostile client threads (each runs one hostile action after another).
const HOSTILE: usize = 6;
/// The room's settings (in the child).
const IDLE: Duration = Duration::from_secs(2);
const MAX_LINE: usize = 64 * 1024;
const MAX_CLIENTS: usize = 64;
/// A small queue per client, so that slow readers are dropped within seconds.
const QUEUE_LIMIT: usize = 32 * 1024;
/// The longest any single wait on the room may take before it counts as a
/// failure.
const WAIT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: soak [--seconds N | --quick] [--memory-bound-mib M]
  --seconds N           how long the mixed traffic runs (default 600)
  --quick               a 10 s run, for CI
  --memory-bound-mib M  how much the room's resident memory may grow from
                        start to end (default 8)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--room-child") {
        room_child();
        return;
    }
    let mut seconds = 600u64;
    let mut bound_mib = 8u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage_error(&format!("{name} needs a number")))
        };
        match a.as_str() {
            "--seconds" => seconds = number("--seconds"),
            "--quick" => seconds = 10,
            "--memory-bound-mib" => bound_mib = number("--memory-bound-mib"),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => usage_error(&format!("unknown flag {other}")),
        }
    }
    if seconds == 0 {
        usage_error("--seconds must be at least 1");
    }
    let ok = run(Duration::from_secs(seconds), bound_mib << 20);
    std::process::exit(if ok { 0 } else { 1 });
}

fn usage_error(why: &str) -> ! {
    eprintln!("soak: {why}\n{USAGE}");
    std::process::exit(2);
}

// ----- the room, in a child process --------------------------------------------

/// The child: a room on 127.0.0.1, its address on stdout, until stdin ends;
/// then shut down and print the room's statistics.
fn room_child() {
    let config = Config::default()
        .with_idle_timeout(Some(IDLE))
        .with_max_message_size(MAX_LINE)
        .with_max_clients(MAX_CLIENTS)
        .with_close_timeout(Duration::from_secs(1));
    let config = RoomConfig::from(config)
        .with_queue_limit(QUEUE_LIMIT)
        .with_max_line(MAX_LINE);
    let room = Room::bind("127.0.0.1", 0, config).expect("soak: binding the room");
    room.start().expect("soak: starting the room");
    println!("listening on {}", room.local_addr());
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    room.shutdown();
    let s = room.stats();
    println!(
        "stats joined={} refused={} messages={} dropped={} online={}",
        s.joined, s.refused, s.messages, s.dropped, s.online
    );
}

struct RoomProcess {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
}

impl RoomProcess {
    fn start() -> RoomProcess {
        let exe = std::env::current_exe().expect("soak: finding this program");
        let mut child = Command::new(exe)
            .arg("--room-child")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("soak: starting the room's process");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("soak: reading the room's address");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("soak: the room said {first:?}"));
        RoomProcess {
            child,
            addr,
            stdout,
        }
    }

    /// The room's resident memory and its peak so far, in bytes.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("soak: reading the room's /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Close its stdin, which shuts the room down; its statistics line.
    fn stop(mut self) -> Option<String> {
        drop(self.child.stdin.take());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut stdout = self.stdout;
        thread::spawn(move || {
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            let _ = tx.send(line);
        });
        let stats = rx.recv_timeout(WAIT).ok();
        match stats {
            Some(_) => {
                let _ = self.child.wait();
            }
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        stats
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }
}

// ----- what the run counts -----------------------------------------------------------

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
    expected: AtomicU64,
    lost: AtomicU64,
    doubled: AtomicU64,
    out_of_order: AtomicU64,
    reconnects: AtomicU64,
    hostile_connections: AtomicU64,
}

/// One incarnation of a well-behaved client (from its join to its quit),
/// as the others need to know it.
struct Inc {
    /// Lines sent so far; set for good (`finished`) when it stops sending.
    sent: AtomicU64,
    finished: AtomicBool,
    /// For each client whose join it read: how many lines it had sent then.
    notice: Mutex<HashMap<String, u64>>,
}

struct Shared {
    addr: SocketAddr,
    /// The mixed traffic runs until then; then the final phase.
    stop_at: Instant,
    /// Every well-behaved incarnation ever, by its (never reused) name.
    registry: Mutex<HashMap<String, Arc<Inc>>>,
    /// Well-behaved clients in the final phase: client number -> name.
    current: Mutex<HashMap<usize, String>>,
    /// Well-behaved clients that have joined once (the run starts then).
    joined: AtomicUsize,
    /// Well-behaved clients holding every other one's last line.
    complete: AtomicUsize,
    /// The well-behaved clients may leave.
    quit: AtomicBool,
    counts: Counts,
    /// What happened, by kind: outcomes the room must produce.
    events: Mutex<BTreeMap<String, u64>>,
    /// What must not happen, by kind (any makes the run fail).
    failures: Mutex<BTreeMap<String, u64>>,
    /// The first few failures in full.
    details: Mutex<Vec<String>>,
}

impl Shared {
    fn event(&self, kind: &str) {
        *self
            .events
            .lock()
            .unwrap()
            .entry(kind.to_string())
            .or_default() += 1;
    }

    fn fail(&self, kind: &str, detail: String) {
        *self
            .failures
            .lock()
            .unwrap()
            .entry(kind.to_string())
            .or_default() += 1;
        let mut d = self.details.lock().unwrap();
        if d.len() < 20 {
            d.push(format!("{kind}: {detail}"));
        }
    }

    fn inc(&self, name: &str) -> Option<Arc<Inc>> {
        self.registry.lock().unwrap().get(name).cloned()
    }
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A tcpchat connection to the room in `framing` (line for the
/// well-behaved, raw for the hostile); connecting and sending wait at most
/// [`WAIT`], a receive at most `read_timeout`.
fn connect(addr: SocketAddr, framing: Framing, read_timeout: Duration) -> tcpchat::Result<Conn> {
    let config = Config::default()
        .with_framing(framing)
        .with_connect_timeout(Some(WAIT))
        .with_read_timeout(Some(read_timeout))
        .with_write_timeout(Some(WAIT))
        .with_raw_buffer_size(16 * 1024);
    tcpchat::connect(&addr.ip().to_string(), addr.port(), &config)
}

/// A receive that gave nothing yet, and may be tried again.
fn waiting(e: &Error) -> bool {
    matches!(e, Error::Timeout { .. } | Error::Interrupted(_))
}

// ----- well-behaved clients --------------------------------------------------------------

/// A run of one sender's lines as one receiver got them.
struct Track {
    first: u64,
    next: u64,
}

/// One incarnation of a well-behaved client: its connection (line
/// framing) and what it has received from each well-behaved sender.
struct Member<'a> {
    shared: &'a Shared,
    name: String,
    inc: Arc<Inc>,
    conn: Conn,
    tracks: HashMap<String, Track>,
    /// Senders whose join this one read (their lines must all come).
    joined_after: HashSet<String>,
    bye: bool,
    eof: bool,
}

impl<'a> Member<'a> {
    /// Join the room; `None` when it is full (counted) or the run is over.
    fn join(shared: &'a Shared) -> Option<Member<'a>> {
        for _ in 0..1000 {
            if Instant::now() > shared.stop_at + WAIT {
                return None;
            }
            let mut conn = match connect(shared.addr, Framing::Line, WAIT) {
                Ok(c) => c,
                Err(e) => {
                    shared.fail("well-behaved: cannot connect", e.to_string());
                    return None;
                }
            };
            let first = match conn.recv() {
                Ok(Some(line)) => Some(String::from_utf8_lossy(&line).into_owned()),
                _ => None,
            };
            match first
                .as_deref()
                .and_then(|l| l.strip_prefix("* welcome, you are "))
            {
                Some(rest) => {
                    let name = rest.split(' ').next().unwrap_or_default().to_string();
                    let inc = Arc::new(Inc {
                        sent: AtomicU64::new(0),
                        finished: AtomicBool::new(false),
                        notice: Mutex::new(HashMap::new()),
                    });
                    shared
                        .registry
                        .lock()
                        .unwrap()
                        .insert(name.clone(), inc.clone());
                    conn.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    return Some(Member {
                        shared,
                        name,
                        inc,
                        conn,
                        tracks: HashMap::new(),
                        joined_after: HashSet::new(),
                        bye: false,
                        eof: false,
                    });
                }
                None if first
                    .as_deref()
                    .is_some_and(|l| l.starts_with("error: server full")) =>
                {
                    shared.event("well-behaved: refused, room full (joined again)");
                    thread::sleep(Duration::from_millis(50));
                }
                None => {
                    shared.fail("well-behaved: no welcome", format!("{first:?}"));
                    return None;
                }
            }
        }
        shared.fail("well-behaved: never joined", "1000 refusals".into());
        None
    }

    /// Send lines with one write.
    fn send(&mut self, lines: &[&[u8]]) {
        if let Err(e) = self.conn.send_many(lines) {
            self.shared
                .fail("well-behaved: send failed", format!("{}: {e}", self.name));
            self.eof = true;
        }
    }

    /// Send `n` numbered lines at once.
    fn burst(&mut self, n: u64) {
        let first = self.inc.sent.load(Ordering::Relaxed);
        let lines: Vec<String> = (first..first + n).map(|i| format!("seq {i}")).collect();
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        // Counted first: a receiver may read them before this returns.
        self.inc.sent.store(first + n, Ordering::Relaxed);
        self.send(&lines);
        self.shared.counts.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Wait (up to the read timeout) for a line, then take every line
    /// already received, and act on each.
    fn pump(&mut self) {
        if self.eof {
            return;
        }
        let mut lines = Vec::new();
        match self.conn.recv_batch(usize::MAX, |l| {
            lines.push(String::from_utf8_lossy(l).into_owned());
            true
        }) {
            Ok(0) => self.eof = true,
            Ok(_) => {}
            Err(e) if waiting(&e) => {}
            Err(e) => {
                self.shared.fail(
                    "well-behaved: connection failed",
                    format!("{}: {e}", self.name),
                );
                self.eof = true;
            }
        }
        for line in lines {
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        let shared = self.shared;
        if let Some(rest) = line.strip_prefix("* ") {
            if rest == "bye" {
                self.bye = true;
            } else if let Some(who) = rest.strip_suffix(" joined") {
                let sent = self.inc.sent.load(Ordering::Relaxed);
                self.inc
                    .notice
                    .lock()
                    .unwrap()
                    .insert(who.to_string(), sent);
                self.joined_after.insert(who.to_string());
            } else if let Some(who) = rest.strip_suffix(" left") {
                if shared.inc(who).is_some() {
                    self.validate(who, true);
                }
            } else if let Some((who, why)) = rest.split_once(' ') {
                if shared.inc(who).is_some()
                    && (why.starts_with("was dropped") || why.starts_with("left ("))
                {
                    shared.fail(
                        "well-behaved: a well-behaved client was dropped",
                        line.to_string(),
                    );
                }
            }
            if rest == "server shutting down" {
                shared.fail("well-behaved: the room shut down early", self.name.clone());
            }
            return;
        }
        if line.starts_with("error:") {
            shared.fail(
                "well-behaved: told an error",
                format!("{}: {line}", self.name),
            );
            return;
        }
        let Some((from, text)) = line.split_once(": ") else {
            shared.fail("well-behaved: a line it cannot read", line.to_string());
            return;
        };
        if shared.inc(from).is_none() {
            return; // a hostile client's line
        }
        let Some(seq) = text
            .strip_prefix("seq ")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            shared.fail(
                "well-behaved: a bad line from a well-behaved client",
                line.to_string(),
            );
            return;
        };
        shared.counts.received.fetch_add(1, Ordering::Relaxed);
        match self.tracks.get_mut(from) {
            None => {
                self.tracks.insert(
                    from.to_string(),
                    Track {
                        first: seq,
                        next: seq + 1,
                    },
                );
            }
            Some(t) if seq == t.next => t.next += 1,
            Some(t) if seq > t.next => {
                shared
                    .counts
                    .lost
                    .fetch_add(seq - t.next, Ordering::Relaxed);
                shared.fail(
                    "well-behaved: lines lost in the middle",
                    format!("{} from {from}: {} to {seq}", self.name, t.next),
                );
                t.next = seq + 1;
            }
            Some(t) => {
                let c = if seq + 1 == t.next {
                    &shared.counts.doubled
                } else {
                    &shared.counts.out_of_order
                };
                c.fetch_add(1, Ordering::Relaxed);
                shared.fail(
                    "well-behaved: a line doubled or out of order",
                    format!("{} from {from}: {seq} after {}", self.name, t.next - 1),
                );
            }
        }
    }

    /// Where the run of `from`'s lines must start for this receiver, if
    /// known yet.
    fn start_bound(&self, from: &str, inc: &Inc) -> Option<u64> {
        if self.joined_after.contains(from) {
            return Some(0);
        }
        inc.notice.lock().unwrap().get(&self.name).copied()
    }

    /// Check the run of `from`'s lines; `ended`: `from` has left, so the run
    /// must end with its last line.
    fn validate(&mut self, from: &str, ended: bool) {
        let shared = self.shared;
        let Some(inc) = shared.inc(from) else {
            return;
        };
        let bound = self.start_bound(from, &inc);
        let last = inc.sent.load(Ordering::Relaxed);
        let t = self.tracks.remove(from);
        let (first, next) = match &t {
            Some(t) => (t.first, t.next),
            None => (last, last),
        };
        let start = bound.map_or(first, |b| b.min(first));
        let end = if ended { last.max(next) } else { next };
        shared
            .counts
            .expected
            .fetch_add(end - start, Ordering::Relaxed);
        if first > start {
            shared
                .counts
                .lost
                .fetch_add(first - start, Ordering::Relaxed);
            shared.fail(
                "well-behaved: first lines lost",
                format!("{} from {from}: got {first}, due from {start}", self.name),
            );
        }
        if end > next {
            shared.counts.lost.fetch_add(end - next, Ordering::Relaxed);
            shared.fail(
                "well-behaved: last lines lost",
                format!("{} from {from}: got to {next}, sent {end}", self.name),
            );
        }
    }

    /// Whether this member holds every line of every other well-behaved
    /// client in the final phase (all of them have stopped sending).
    fn holds_everything(&self) -> bool {
        let current: Vec<String> = self
            .shared
            .current
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        current.iter().filter(|n| **n != self.name).all(|from| {
            let Some(inc) = self.shared.inc(from) else {
                return true;
            };
            let last = inc.sent.load(Ordering::Relaxed);
            match (self.tracks.get(from), self.start_bound(from, &inc)) {
                (Some(t), _) => t.next >= last,
                (None, Some(b)) => b >= last,
                (None, None) => false,
            }
        })
    }

    /// Leave: `/quit`, read to the `* bye` and the end, check what came.
    fn quit(mut self) {
        self.inc.finished.store(true, Ordering::Relaxed);
        self.send(&[b"/quit"]);
        let started = Instant::now();
        while !self.bye && !self.eof {
            if started.elapsed() > WAIT {
                self.shared.fail("well-behaved: no bye", self.name.clone());
                break;
            }
            self.pump();
        }
        let senders: Vec<String> = self.tracks.keys().cloned().collect();
        for from in senders {
            self.validate(&from, false);
        }
    }
}

/// Read one line from a fresh plain socket (the welcome of [`reset`]).
fn read_line_raw(s: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into_owned()),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

fn well_behaved(i: usize, shared: Arc<Shared>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
    let mut first = true;
    loop {
        let Some(mut m) = Member::join(&shared) else {
            return;
        };
        if first {
            shared.joined.fetch_add(1, Ordering::SeqCst);
            first = false;
        } else {
            shared.counts.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let until = Instant::now() + Duration::from_millis(1000 + rng.below(3000));
        let mut last_burst = Instant::now() - Duration::from_secs(1);
        while Instant::now() < until.min(shared.stop_at) && !m.eof {
            // Three lines every 10 ms at most: about 300 a second each.
            if last_burst.elapsed() >= Duration::from_millis(10) {
                m.burst(3);
                last_burst = Instant::now();
            }
            m.pump();
        }
        if Instant::now() < shared.stop_at {
            m.quit();
            continue;
        }
        final_phase(i, m, &shared);
        return;
    }
}

/// The end of the run: stop sending, wait until every well-behaved client
/// holds every other one's lines, wait for leave to go, leave.
fn final_phase(i: usize, mut m: Member<'_>, shared: &Shared) {
    m.inc.finished.store(true, Ordering::Relaxed);
    shared.current.lock().unwrap().insert(i, m.name.clone());
    let started = Instant::now();
    let mut keepalive = Instant::now();
    let mut complete = false;
    m.conn
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while !shared.quit.load(Ordering::SeqCst) && !m.eof {
        if started.elapsed() > 3 * WAIT {
            shared.fail("well-behaved: the final phase never ended", m.name.clone());
            break;
        }
        // An empty line is ignored by the room but keeps us from idling out.
        if keepalive.elapsed() > IDLE / 4 {
            m.send(&[b""]);
            keepalive = Instant::now();
        }
        m.pump();
        let all_in = shared.current.lock().unwrap().len() == WELL_BEHAVED;
        if !complete && all_in && m.holds_everything() {
            complete = true;
            shared.complete.fetch_add(1, Ordering::SeqCst);
        }
    }
    m.quit();
}

// ----- hostile clients -------------------------------------------------------------------

/// One hostile action: one or more connections, each bounded in time.
type Action = fn(&Shared, &mut Rng);

fn hostile(h: usize, shared: Arc<Shared>) {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (h as u64 + 1));
    let actions: [(&str, Action); 7] = [
        ("garbage", garbage),
        ("oversize line", oversize),
        ("slowloris", slowloris),
        ("reset mid-line", reset),
        ("connect/close storm", storm),
        ("slow reader", slow_reader),
        ("half-close", half_close),
    ];
    let mut n = h;
    while Instant::now() < shared.stop_at {
        let (name, action) = actions[n % actions.len()];
        n += 1 + rng.below(2) as usize;
        shared.event(&format!("hostile action: {name}"));
        action(&shared, &mut rng);
    }
}

/// A hostile connection in raw framing (it sends bytes as they are),
/// counted; `None` (counted) if the room cannot be reached.
fn hostile_connect(shared: &Shared, read_timeout: Duration) -> Option<Conn> {
    shared
        .counts
        .hostile_connections
        .fetch_add(1, Ordering::Relaxed);
    match connect(shared.addr, Framing::Raw, read_timeout) {
        Ok(s) => Some(s),
        Err(e) => {
            shared.fail("hostile: cannot connect", e.to_string());
            None
        }
    }
}

/// Read until the room closes, within [`WAIT`] plus the idle timeout.
fn read_to_close(shared: &Shared, c: &mut Conn, what: &str) -> Vec<u8> {
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        if started.elapsed() > WAIT + IDLE {
            shared.fail(
                "hostile: the room never closed the connection",
                what.to_string(),
            );
            return got;
        }
        match c.recv() {
            Ok(None) => return got,
            Ok(Some(bytes)) => {
                if got.len() < 1 << 20 {
                    got.extend_from_slice(&bytes);
                }
            }
            Err(Error::ConnectionReset(_)) => return got,
            Err(e) if waiting(&e) => {}
            Err(e) => {
                shared.fail("hostile: reading failed", format!("{what}: {e}"));
                return got;
            }
        }
    }
}

fn refused_full(got: &[u8]) -> bool {
    got.starts_with(b"error: server full")
}

/// Random bytes (some lines not UTF-8, some commands), then the end.
fn garbage(shared: &Shared, rng: &mut Rng) {
    let Some(mut s) = hostile_connect(shared, Duration::from_millis(200)) else {
        return;
    };
    let mut bytes: Vec<u8> = (0..8192)
        .map(|_| match rng.below(64) {
            0 => b'\n',
            1 => 0xff,
            _ => rng.below(256) as u8,
        })
        .collect();
    bytes.extend_from_slice(b"\n/who\n/nick\n\xc3\x28\n//x\n");
    let _ = s.send(&bytes);
    let _ = s.shutdown_write();
    let got = read_to_close(shared, &mut s, "garbage");
    if refused_full(&got) {
        shared.event("hostile: refused, room full");
    } else if !got.windows(21).any(|w| w == b"is not valid UTF-8; i") {
        shared.fail(
            "hostile: invalid UTF-8 was not refused",
            String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned(),
        );
    } else {
        shared.event("hostile garbage: answered, then closed at its end");
    }
}

/// A line over the limit.
fn oversize(shared: &Shared, _rng: &mut Rng) {
    let Some(mut s) = hostile_connect(shared, Duration::from_millis(200)) else {
        return;
    };
    let chunk = vec![b'y'; 16 * 1024];
    for _ in 0..(2 * MAX_LINE / chunk.len()) {
        if s.send(&chunk).is_err() {
            break;
        }
    }
    let got = read_to_close(shared, &mut s, "oversize line");
    let want = format!("error: line longer than {MAX_LINE} bytes; closing\n");
    if refused_full(&got) {
        shared.event("hostile: refused, room full");
    } else if got.ends_with(want.as_bytes()) {
        shared.event("hostile oversize line: dropped (line too long)");
    } else {
        shared.fail(
            "hostile: an oversize line was not refused",
            String::from_utf8_lossy(&got).into_owned(),
        );
    }
}

/// One byte every 100 ms, never a whole line: dropped at the idle timeout.
fn slowloris(shared: &Shared, _rng: &mut Rng) {
    let Some(mut s) = hostile_connect(shared, Duration::from_millis(100)) else {
        return;
    };
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        if started.elapsed() > IDLE + WAIT {
            shared.fail(
                "hostile: a slowloris peer was not dropped",
                format!("after {:?}", started.elapsed()),
            );
            return;
        }
        if s.send(b"s").is_err() {
            break;
        }
        match s.recv() {
            Ok(None) => break,
            Ok(Some(bytes)) => got.extend_from_slice(&bytes),
            Err(e) if waiting(&e) => {}
            Err(_) => break,
        }
    }
    let want = format!("error: no complete line for {IDLE:?}; closing");
    if refused_full(&got) {
        shared.event("hostile: refused, room full");
    } else if String::from_utf8_lossy(&got).contains(&want) && started.elapsed() >= IDLE {
        shared.event("hostile slowloris: dropped (idle)");
    } else {
        shared.fail(
            "hostile: a slowloris peer was closed without the idle notice",
            String::from_utf8_lossy(&got).into_owned(),
        );
    }
}

/// Half a line, then a reset (SO_LINGER 0).
///
/// Raw socket: tcpchat cannot reset a connection (its close is always
/// graceful).
fn reset(shared: &Shared, rng: &mut Rng) {
    shared
        .counts
        .hostile_connections
        .fetch_add(1, Ordering::Relaxed);
    // Raw: a reset needs SO_LINGER 0; tcpchat always closes gracefully.
    let sock = match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) {
        Ok(s) => s,
        Err(e) => return shared.fail("hostile: no socket", e.to_string()),
    };
    let _ = sock.set_linger(Some(Duration::ZERO));
    if let Err(e) = sock.connect_timeout(&shared.addr.into(), WAIT) {
        return shared.fail("hostile: cannot connect", e.to_string());
    }
    let mut s: TcpStream = sock.into();
    let _ = s.set_read_timeout(Some(WAIT));
    if rng.below(2) == 0 {
        let _ = read_line_raw(&mut s); // the welcome: reset once a member
    }
    let _ = s.write_all(b"a whole line\nhalf a li");
    drop(s);
    shared.event("hostile reset: sent");
}

/// 50 connections at once, then all closed at once (half of them reset).
///
/// Raw sockets: half of them reset (SO_LINGER 0), and all must go at once,
/// not one graceful close after the other.
fn storm(shared: &Shared, _rng: &mut Rng) {
    let mut held = Vec::new();
    for i in 0..50 {
        if Instant::now() > shared.stop_at + WAIT {
            break;
        }
        shared
            .counts
            .hostile_connections
            .fetch_add(1, Ordering::Relaxed);
        // Raw: SO_LINGER 0 for half, and no graceful close for any.
        let Ok(sock) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        else {
            continue;
        };
        if i % 2 == 0 {
            let _ = sock.set_linger(Some(Duration::ZERO));
        }
        match sock.connect_timeout(&shared.addr.into(), WAIT) {
            Ok(()) => held.push(sock),
            Err(e) => shared.fail("hostile: cannot connect", e.to_string()),
        }
    }
    drop(held);
    shared.event("hostile storm: 50 opened and closed");
}

/// A member that reads nothing (with a small receive buffer) and keeps
/// asking for a name far too long, which the room's refusal quotes: the
/// answers pile up (beyond the kernel's buffers, up to 4 MiB on loopback)
/// until its queue is full and it is dropped, within 8 s (or it counts as
/// not dropped).
///
/// Raw socket: tcpchat::connect cannot set the receive buffer (SO_RCVBUF).
fn slow_reader(shared: &Shared, _rng: &mut Rng) {
    shared
        .counts
        .hostile_connections
        .fetch_add(1, Ordering::Relaxed);
    // Raw: SO_RCVBUF, which tcpchat::connect cannot set.
    let Ok(sock) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) else {
        return;
    };
    let _ = sock.set_recv_buffer_size(4096);
    if let Err(e) = sock.connect_timeout(&shared.addr.into(), WAIT) {
        return shared.fail("hostile: cannot connect", e.to_string());
    }
    let mut s: TcpStream = sock.into();
    let _ = s.set_write_timeout(Some(WAIT));
    let started = Instant::now();
    let mut dropped = false;
    let ask = format!("/nick {}\n", "x".repeat(MAX_LINE - 100));
    while started.elapsed() < Duration::from_secs(8) && Instant::now() < shared.stop_at {
        // Once the room has dropped it (and closed it, after its close
        // timeout), a write fails.
        if s.write_all(ask.as_bytes()).is_err() {
            dropped = true;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    shared.event(if dropped {
        "hostile slow reader: dropped (too slow)"
    } else {
        "hostile slow reader: not dropped within 8 s or by the end of the run"
    });
}

/// Lines (one not UTF-8, a /who), half a line, then the write half shut:
/// every answer comes, then the end.
fn half_close(shared: &Shared, _rng: &mut Rng) {
    let Some(mut s) = hostile_connect(shared, Duration::from_millis(200)) else {
        return;
    };
    let _ = s.send(b"hello from a half-closer\n\xff\xfe\n/who\nno newline");
    let _ = s.shutdown_write();
    let got = read_to_close(shared, &mut s, "half-close");
    let text = String::from_utf8_lossy(&got);
    if refused_full(&got) {
        shared.event("hostile: refused, room full");
    } else if text.contains("error: your line is not valid UTF-8") && text.contains(" online: ") {
        shared.event("hostile half-close: every answer, then the end");
    } else {
        shared.fail(
            "hostile: a half-closed peer missed its answers",
            text.into_owned(),
        );
    }
}

// ----- the run -----------------------------------------------------------------------------

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Ask the room who is online, as a fresh member; the number.
fn online(addr: SocketAddr) -> Option<usize> {
    let mut c = connect(addr, Framing::Line, WAIT).ok()?;
    let welcome = c.recv().ok()??;
    if !welcome.starts_with(b"* welcome") {
        return None;
    }
    c.send(b"/who").ok()?;
    for _ in 0..10_000 {
        let line = c.recv().ok()??;
        let line = String::from_utf8_lossy(&line);
        if let Some(rest) = line.strip_prefix("* ") {
            if let Some((n, _)) = rest.split_once(" online: ") {
                let _ = c.send(b"/quit");
                return n.parse::<usize>().ok().map(|n| n - 1);
            }
        }
    }
    None
}

fn run(duration: Duration, bound: u64) -> bool {
    let started = Instant::now();
    let room = RoomProcess::start();
    println!(
        "soak: {} s against a room (pid {}) on {}: {WELL_BEHAVED} well-behaved clients, {HOSTILE} hostile threads",
        duration.as_secs(),
        room.child.id(),
        room.addr
    );
    let shared = Arc::new(Shared {
        addr: room.addr,
        stop_at: Instant::now() + duration,
        registry: Mutex::new(HashMap::new()),
        current: Mutex::new(HashMap::new()),
        joined: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        quit: AtomicBool::new(false),
        counts: Counts::default(),
        events: Mutex::new(BTreeMap::new()),
        failures: Mutex::new(BTreeMap::new()),
        details: Mutex::new(Vec::new()),
    });

    let good: Vec<JoinHandle<()>> = (0..WELL_BEHAVED)
        .map(|i| {
            let s = shared.clone();
            thread::spawn(move || well_behaved(i, s))
        })
        .collect();
    let wait_until = |what: &str, done: &dyn Fn() -> bool, limit: Duration| {
        let t = Instant::now();
        while !done() {
            if t.elapsed() > limit {
                shared.fail("run: timed out", what.to_string());
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    };
    wait_until(
        "the well-behaved clients joining",
        &|| shared.joined.load(Ordering::SeqCst) == WELL_BEHAVED,
        WAIT,
    );
    let (start_rss, _) = room.memory();

    let bad: Vec<JoinHandle<()>> = (0..HOSTILE)
        .map(|h| {
            let s = shared.clone();
            thread::spawn(move || hostile(h, s))
        })
        .collect();

    // Sample the room's memory every second while the traffic runs.
    let mut samples = Vec::new();
    while Instant::now() < shared.stop_at {
        thread::sleep(
            Duration::from_secs(1).min(shared.stop_at.saturating_duration_since(Instant::now())),
        );
        samples.push(room.memory().0);
    }
    for h in bad {
        let _ = h.join();
    }
    wait_until(
        "every well-behaved client holding every line",
        &|| shared.complete.load(Ordering::SeqCst) == WELL_BEHAVED,
        3 * WAIT,
    );
    // The hostile clients are gone; wait for the room to have dropped the
    // last of them (a slowloris peer goes at the idle timeout).
    let hostile_gone = wait_until(
        "the room dropping the last hostile client",
        &|| online(shared.addr) == Some(WELL_BEHAVED),
        IDLE + WAIT,
    );
    let (end_rss, peak) = room.memory();
    shared.quit.store(true, Ordering::SeqCst);
    for g in good {
        let _ = g.join();
    }
    let stats = room.stop();

    // ----- the report -----
    let c = &shared.counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (sent, received, expected) = (get(&c.sent), get(&c.received), get(&c.expected));
    let (lost, doubled, disorder) = (get(&c.lost), get(&c.doubled), get(&c.out_of_order));
    println!("time: {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "well-behaved: {sent} lines sent; deliveries to well-behaved clients: {expected} expected, {received} received, {lost} lost, {doubled} doubled, {disorder} out of order; {} reconnects",
        get(&c.reconnects)
    );
    println!("hostile: {} connections", get(&c.hostile_connections));
    println!("events by kind:");
    for (k, v) in shared.events.lock().unwrap().iter() {
        println!("  {v:>8}  {k}");
    }
    let failures = shared.failures.lock().unwrap().clone();
    println!(
        "errors by kind (each fails the run): {}",
        if failures.is_empty() { "none" } else { "" }
    );
    for (k, v) in &failures {
        println!("  {v:>8}  {k}");
    }
    for d in shared.details.lock().unwrap().iter() {
        println!("    {d}");
    }
    let series: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 10).max(1))
        .map(|&b| format!("{:.1}", b as f64 / (1u64 << 20) as f64))
        .collect();
    println!(
        "room memory (resident): start {}, end {} (bound: start + {}), peak {}; MiB every {} s: {}",
        mib(start_rss),
        mib(end_rss),
        mib(bound),
        mib(peak),
        (samples.len() / 10).max(1),
        series.join(" ")
    );
    println!(
        "room: {}",
        stats
            .as_deref()
            .unwrap_or("no statistics (did not stop cleanly)")
    );

    let mut ok = true;
    let mut check = |cond: bool, what: &str| {
        println!("check: {what}: {}", if cond { "ok" } else { "FAILED" });
        ok &= cond;
    };
    check(sent > 0 && received > 0, "traffic flowed");
    check(
        expected == received && lost == 0 && doubled == 0 && disorder == 0,
        "deliveries match (none lost, doubled or out of order)",
    );
    check(failures.is_empty(), "no unexpected outcome");
    check(hostile_gone, "every hostile client gone at the end");
    check(
        end_rss <= start_rss + bound,
        "room memory flat (end <= start + bound)",
    );
    check(stats.is_some(), "the room shut down cleanly");
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    ok
}
