//! Benchmark of the chat room: memory per idle client, fan-out latency and
//! throughput, measured against the `chat_room` example running as a child
//! process (so its resident memory is its own). Every client is a tcpchat
//! connection (`tcpchat::connect`, line framing) used without blocking from
//! one event loop: each connection's `Conn::poll_fd` is registered with
//! `mio` (`mio::unix::SourceFd`), and `try_recv_into`, `queue` and
//! `try_flush` do the rest, as a program with its own event loop would.
//!
//!     cargo build --release --examples
//!     target/release/examples/room_bench            # 10,000 idle clients; 1,000 talking
//!     target/release/examples/room_bench --quick    # a few seconds, for CI
//!
//! It measures, and prints as a markdown table:
//! 1. the room's resident memory (`VmRSS` of the child) before and after
//!    `--clients` clients have joined and gone quiet (every join notice
//!    read), hence the memory per idle client; then the time a shutdown takes
//!    to close them all (each gets the closing line, then end of stream).
//!    A tcpchat connection with its poll descriptor costs 4 file descriptors
//!    (the socket, the cancel eventfd, the epoll set and its eventfd), so the
//!    idle clients are spread over as many worker processes (this program
//!    again, `--swarm-worker`) as the open-files limit needs: 3 for 10,000
//!    under a limit of 20,000;
//! 2. with `--talkers` clients in a fresh room, all in this process, the
//!    delivery latency of a line from one client to all the others
//!    (`--lines` lines, one at a time, after `--lines / 2` unmeasured warm-up
//!    lines), p50, p99 and max: from the sender's write to the kernel's
//!    receive timestamp of the line on each receiver's socket
//!    (`SO_TIMESTAMPNS`), and, for comparison, to the moment epoll told this
//!    process the connection was readable;
//! 3. lines delivered per second when every one of those clients sends
//!    `--burst` lines at once.
//!
//! The kernel timestamp is the one raw-socket part: tcpchat reads every
//! byte, but a `Conn` does not expose its socket, so for the latency run the
//! benchmark finds each connection's socket by its address in
//! `/proc/self/fd`, turns `SO_TIMESTAMPNS` on, and, when a connection becomes
//! readable, peeks at one byte (`recvmsg` with `MSG_PEEK`) for the
//! timestamp before the library reads the line. Without it only the second
//! latency (which adds this process's own delay in reading 999 connections
//! on the same two cores as the room) could be measured.
//!
//! Every message is checked: each receiver gets each line exactly once, in
//! order per sender, and nobody is dropped. Any failure exits 1.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::{exit, Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tcpchat::{Config, Conn, Error};

const USAGE: &str =
    "usage: room_bench [--quick] [--clients N] [--talkers N] [--lines N] [--burst N] [--room PATH]
  --quick        small figures that finish in a few seconds (CI): 200 clients, 200 talkers
  --clients N    idle clients for the memory measurement (default 10000)
  --talkers N    clients for the latency and throughput runs (default 1000)
  --lines N      lines sent one at a time for the latency run (default 200)
  --burst N      lines each talker sends at once for the throughput run (default 10)
  --room PATH    the chat_room program (default: chat_room next to this program)";

/// Connections being opened at once (the room's listen backlog is 128).
const CONNECT_WINDOW: usize = 100;
/// The longest any phase may wait for something before failing.
const PATIENCE: Duration = Duration::from_secs(120);
/// File descriptors one client costs: its socket and cancel eventfd, and
/// its poll descriptor (an epoll set and an eventfd).
const FDS_PER_CLIENT: u64 = 4;
/// File descriptors a process needs besides its clients'.
const FDS_SPARE: u64 = 64;

type Result<T> = std::result::Result<T, String>;

struct Opts {
    clients: usize,
    talkers: usize,
    lines: usize,
    burst: usize,
    room: PathBuf,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--swarm-worker") {
        worker_main();
    }
    let opts = parse_opts();
    let limit = raise_fd_limit();
    if opts.talkers as u64 * FDS_PER_CLIENT + FDS_SPARE > limit {
        fail(format!(
            "open files are limited to {limit}: too few for {} talkers ({FDS_PER_CLIENT} each)",
            opts.talkers
        ));
    }
    eprintln!(
        "room_bench: {} idle clients, {} talkers, room {}",
        opts.clients,
        opts.talkers,
        opts.room.display()
    );
    // The latency first, on a machine not yet busy tearing down the
    // thousands of connections of the memory phase.
    let talk = talk_phase(&opts).unwrap_or_else(|e| fail(format!("talkers: {e}")));
    let idle = idle_phase(&opts, limit).unwrap_or_else(|e| fail(format!("idle clients: {e}")));
    let per_client = (idle.rss_after_kib.saturating_sub(idle.rss_before_kib)) as f64 * 1024.0
        / opts.clients as f64;
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| idle clients held by the room | {} |", opts.clients);
    println!(
        "| room resident memory, before / with them | {:.1} MiB / {:.1} MiB (peak {:.1} MiB) |",
        idle.rss_before_kib as f64 / 1024.0,
        idle.rss_after_kib as f64 / 1024.0,
        idle.hwm_kib as f64 / 1024.0
    );
    println!("| resident memory per idle client | {per_client:.0} bytes |");
    println!(
        "| time for all {} to join (every join notice read) | {:.2} s |",
        opts.clients,
        idle.join_time.as_secs_f64()
    );
    println!(
        "| shutdown with {} clients (closing line + close to all) | {:.0} ms |",
        opts.clients,
        idle.shutdown_time.as_secs_f64() * 1e3
    );
    println!(
        "| fan-out latency, 1 sender to {} receivers (arrival in their sockets), p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        opts.talkers - 1,
        talk.arrival.p50 * 1e3,
        talk.arrival.p99 * 1e3,
        talk.arrival.max * 1e3
    );
    println!(
        "| the same, as seen by this one process reading all {} | {:.2} / {:.2} / {:.2} ms |",
        opts.talkers - 1,
        talk.seen.p50 * 1e3,
        talk.seen.p99 * 1e3,
        talk.seen.max * 1e3
    );
    println!(
        "| lines delivered per second, {} clients each sending {} at once | {:.0} ({} lines in {:.2} s) |",
        opts.talkers,
        opts.burst,
        talk.delivered as f64 / talk.burst_time.as_secs_f64(),
        talk.delivered,
        talk.burst_time.as_secs_f64()
    );
}

fn fail(msg: String) -> ! {
    eprintln!("room_bench: FAILED: {msg}");
    exit(1);
}

fn parse_opts() -> Opts {
    let mut opts = Opts {
        clients: 10_000,
        talkers: 1_000,
        lines: 200,
        burst: 10,
        room: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("chat_room")))
            .unwrap_or_else(|| PathBuf::from("chat_room")),
    };
    let bad = |msg: String| -> ! {
        eprintln!("error: {msg}\n{USAGE}");
        exit(2);
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        match name.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                exit(0);
            }
            "--quick" => {
                opts.clients = 200;
                opts.talkers = 200;
                opts.lines = 50;
                opts.burst = 10;
                continue;
            }
            "--clients" | "--talkers" | "--lines" | "--burst" | "--room" => {}
            _ => bad(format!("unknown flag {arg:?}")),
        }
        let value = inline
            .or_else(|| args.next())
            .unwrap_or_else(|| bad(format!("{name} needs a value")));
        if name == "--room" {
            opts.room = PathBuf::from(value);
            continue;
        }
        let n: usize = match value.parse() {
            Ok(n) if n >= 2 => n,
            _ => bad(format!(
                "{name}: expected a number of at least 2, got {value:?}"
            )),
        };
        match name.as_str() {
            "--clients" => opts.clients = n,
            "--talkers" => opts.talkers = n,
            "--lines" => opts.lines = n,
            _ => opts.burst = n,
        }
    }
    opts
}

/// Lift the soft limit on open files to the hard one; returns the limit.
fn raise_fd_limit() -> u64 {
    // SAFETY: rlimit is plain data; getrlimit and setrlimit only read and
    // write this local.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
        lim.rlim_cur as u64
    }
}

// ----- the room, as a child process -----

/// A running `chat_room`; killed if still running when dropped.
struct RoomProc {
    child: Child,
    addr: SocketAddr,
    /// Warnings and errors the room logged (drops, refusals).
    complaints: Arc<AtomicU64>,
}

impl RoomProc {
    fn spawn(program: &PathBuf, max_clients: usize) -> Result<RoomProc> {
        let mut child = Command::new(program)
            .args(["--port", "0", "--max-clients", &max_clients.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {}: {e} (build it with `cargo build --release --examples`, or pass --room)",
                    program.display()
                )
            })?;
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut first = String::new();
        stderr
            .read_line(&mut first)
            .map_err(|e| format!("reading the room's stderr: {e}"))?;
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                format!("the room's first line is {first:?}, not `listening on IP:PORT`")
            })?;
        let complaints = Arc::new(AtomicU64::new(0));
        let counter = complaints.clone();
        // Keep draining the room's log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                let complaint = line.contains(": warn: ") || line.contains(": error: ");
                if complaint && counter.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("room_bench: the room logged: {line}");
                }
            }
        });
        Ok(RoomProc {
            child,
            addr,
            complaints,
        })
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("reading the room's /proc status: {e}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .ok_or_else(|| format!("no {name} in /proc status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    fn terminate(&self) {
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    fn wait(&mut self) -> Result<()> {
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for the room: {e}"))?;
        if !status.success() {
            return Err(format!("the room exited with {status}"));
        }
        Ok(())
    }

    fn check_quiet(&self) -> Result<()> {
        match self.complaints.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!(
                "the room logged {n} warnings or errors (see above)"
            )),
        }
    }
}

impl Drop for RoomProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the clients -----

struct Client {
    /// `None` once closed (after the room's end of stream).
    conn: Option<Conn>,
    /// The connection's poll descriptor, registered with the swarm's poll.
    poll_fd: RawFd,
    /// The socket under `conn`, once found, for its kernel receive
    /// timestamps (see [`Swarm::enable_timestamps`]).
    socket: Option<RawFd>,
}

/// What [`Swarm::pump`] calls for each line read (`None`: end of stream).
type LineHandler<'a> = dyn FnMut(usize, Option<&[u8]>, Stamp) -> Result<()> + 'a;

/// Many tcpchat clients driven by one poll.
struct Swarm {
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
    rbuf: Vec<u8>,
    addr: SocketAddr,
    config: Config,
    open: usize,
    /// Read each line's kernel receive timestamp (the fan-out only).
    stamps: bool,
}

impl Swarm {
    fn new(addr: SocketAddr) -> Result<Swarm> {
        Ok(Swarm {
            poll: Poll::new().map_err(|e| format!("creating a poll: {e}"))?,
            events: Events::with_capacity(1024),
            clients: Vec::new(),
            rbuf: vec![0; 64 * 1024],
            addr,
            // Line framing, TCP_NODELAY (the defaults); a close that finds
            // the room still open (only on a failure) waits little.
            config: Config::default().with_close_timeout(Duration::from_millis(200)),
            open: 0,
            stamps: false,
        })
    }

    /// Connect one more client (the handshake only; its welcome comes
    /// through [`Swarm::pump`]) and register its poll descriptor.
    fn connect(&mut self) -> Result<()> {
        let host = self.addr.ip().to_string();
        let mut conn = tcpchat::connect(&host, self.addr.port(), &self.config)
            .map_err(|e| format!("connecting: {e}"))?;
        let poll_fd = conn
            .poll_fd()
            .map_err(|e| format!("the poll descriptor: {e}"))?;
        self.poll
            .registry()
            .register(
                &mut SourceFd(&poll_fd),
                Token(self.clients.len()),
                Interest::READABLE,
            )
            .map_err(|e| format!("registering a client: {e}"))?;
        self.clients.push(Client {
            conn: Some(conn),
            poll_fd,
            socket: None,
        });
        self.open += 1;
        Ok(())
    }

    /// Send `lines` with one write as far as the socket takes them now; the
    /// rest stays queued and goes when the connection is next readable
    /// (its poll descriptor is also readable while queued output can move).
    fn send(&mut self, idx: usize, lines: &[&[u8]]) -> Result<()> {
        let conn = self.clients[idx]
            .conn
            .as_mut()
            .ok_or("sending on a closed client")?;
        for line in lines {
            conn.queue(line)
                .map_err(|e| format!("client {idx}: queueing: {e}"))?;
        }
        match conn.try_flush() {
            Ok(()) | Err(Error::WouldBlock(_)) => Ok(()),
            Err(e) => Err(format!("client {idx}: sending: {e}")),
        }
    }

    /// Wait for events (at most `timeout`) and hand every complete line
    /// received to `on_line(client, line, stamp)`; a client whose stream
    /// ends is closed and reported with `on_line(client, None, ..)`.
    fn pump(&mut self, timeout: Duration, on_line: &mut LineHandler<'_>) -> Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("poll: {e}")),
        }
        let woke = now_ns();
        let Swarm {
            poll,
            events,
            clients,
            rbuf,
            open,
            stamps,
            ..
        } = self;
        for event in events.iter() {
            let idx = event.token().0;
            let client = &mut clients[idx];
            let Some(conn) = client.conn.as_mut() else {
                continue;
            };
            if conn.queued() > 0 {
                match conn.try_flush() {
                    Ok(()) | Err(Error::WouldBlock(_)) => {}
                    Err(e) => return Err(format!("client {idx}: sending: {e}")),
                }
            }
            let arrived = match (*stamps, client.socket) {
                (true, Some(fd)) => peek_stamp(fd),
                _ => None,
            };
            let stamp = Stamp { woke, arrived };
            // The registration is edge-triggered: take everything until
            // the connection would block.
            loop {
                match conn.try_recv_into(rbuf) {
                    Ok(Some(n)) => on_line(idx, Some(&rbuf[..n]), stamp)?,
                    Ok(None) => {
                        poll.registry()
                            .deregister(&mut SourceFd(&client.poll_fd))
                            .map_err(|e| format!("client {idx}: deregistering: {e}"))?;
                        // End of stream seen: dropping it closes at once.
                        client.conn = None;
                        *open -= 1;
                        on_line(idx, None, stamp)?;
                        break;
                    }
                    Err(Error::WouldBlock(_)) => break,
                    Err(e) => return Err(format!("client {idx}: receiving: {e}")),
                }
            }
        }
        Ok(())
    }

    /// Open `n` clients (at most `window` of them not yet welcomed at a
    /// time) and read until each has its welcome line and the join notice
    /// of every client after it among the `total` that join the room (this
    /// swarm's and, for a worker, the other workers'): the room is then
    /// quiet. The room names guests in the order they join, so `guestK`
    /// expects `total - K` join notices. Returns the lines read.
    fn join_all(&mut self, n: usize, total: usize, window: usize) -> Result<u64> {
        let mut expected = n as u64;
        let mut lines = 0u64;
        let mut welcomed = 0usize;
        let mut last_progress = Instant::now();
        while welcomed < n || lines < expected {
            while self.clients.len() < n && self.clients.len() - welcomed < window {
                self.connect()?;
            }
            let before = lines;
            self.pump(Duration::from_millis(200), &mut |idx, line, _| {
                let line = line.ok_or_else(|| format!("client {idx} was closed while joining"))?;
                lines += 1;
                if let Some(rest) = line.strip_prefix(b"* welcome, you are guest") {
                    let k: usize = rest
                        .split(|&b| b == b' ')
                        .next()
                        .and_then(|d| std::str::from_utf8(d).ok())
                        .and_then(|d| d.parse().ok())
                        .filter(|&k| (1..=total).contains(&k))
                        .ok_or_else(|| {
                            format!("client {idx}: welcome {:?}", String::from_utf8_lossy(line))
                        })?;
                    expected += (total - k) as u64;
                    welcomed += 1;
                } else if !line.ends_with(b" joined") {
                    return Err(format!(
                        "client {idx} got {:?} while joining",
                        String::from_utf8_lossy(line)
                    ));
                }
                Ok(())
            })?;
            if lines > before {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > PATIENCE {
                return Err(format!(
                    "stuck: {welcomed} of {n} welcomed, {lines} of {expected} lines read"
                ));
            }
        }
        if lines != expected {
            return Err(format!("{lines} lines while joining, expected {expected}"));
        }
        Ok(lines)
    }

    /// Read until every client's stream has ended; each must have got the
    /// closing line, and nothing else.
    fn until_all_closed(&mut self) -> Result<()> {
        let mut closing_lines = 0usize;
        let n = self.clients.len();
        let started = Instant::now();
        while self.open > 0 {
            if started.elapsed() > PATIENCE {
                return Err(format!(
                    "{} clients still open after the shutdown",
                    self.open
                ));
            }
            self.pump(Duration::from_millis(200), &mut |idx, line, _| {
                match line {
                    None => {}
                    Some(b"* server shutting down") => closing_lines += 1,
                    Some(other) => {
                        return Err(format!(
                            "client {idx} got {:?} at shutdown",
                            String::from_utf8_lossy(other)
                        ))
                    }
                }
                Ok(())
            })?;
        }
        if closing_lines != n {
            return Err(format!(
                "{closing_lines} of {n} clients got the closing line"
            ));
        }
        Ok(())
    }

    /// Find the socket under each client's connection and ask the kernel to
    /// timestamp what it receives (`SO_TIMESTAMPNS`); from now on
    /// [`Swarm::pump`] reads each line's timestamp.
    ///
    /// Raw: a `Conn` does not expose its socket, so each is found among
    /// this process's descriptors by its local address, which is unique to
    /// one client; only the timestamp is ever read from it (a peek), the
    /// library reads every byte.
    fn enable_timestamps(&mut self) -> Result<()> {
        let room_port = self.addr.port();
        let mut by_port: HashMap<u16, usize> = HashMap::new();
        for (idx, c) in self.clients.iter().enumerate() {
            if let Some(conn) = &c.conn {
                by_port.insert(conn.local_addr().port(), idx);
            }
        }
        let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| format!("/proc/self/fd: {e}"))?;
        let fds: Vec<RawFd> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let mut found = 0;
        for fd in fds {
            let (Some(local), Some(peer)) = (sock_port(fd, false), sock_port(fd, true)) else {
                continue;
            };
            if peer != room_port {
                continue;
            }
            if let Some(&idx) = by_port.get(&local) {
                set_timestamps(fd)?;
                self.clients[idx].socket = Some(fd);
                found += 1;
            }
        }
        if found != by_port.len() {
            return Err(format!(
                "found the sockets of {found} of {} clients",
                by_port.len()
            ));
        }
        self.stamps = true;
        Ok(())
    }
}

// ----- the idle clients' worker processes -----

/// `room_bench --swarm-worker ADDR COUNT TOTAL WINDOW`: join COUNT clients
/// (at most WINDOW connecting at a time) to the room at ADDR, which TOTAL
/// clients join in all; print `joined LINES` once the room is quiet, then,
/// after the room's shutdown, `closed COUNT` once every client has its
/// closing line and end of stream.
fn worker_main() -> ! {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let bad = || -> ! {
        eprintln!("room_bench --swarm-worker ADDR COUNT TOTAL WINDOW: bad arguments {args:?}");
        exit(2)
    };
    if args.len() != 4 {
        bad();
    }
    let addr: SocketAddr = args[0].parse().unwrap_or_else(|_| bad());
    let nums: Vec<usize> = args[1..]
        .iter()
        .map(|a| a.parse().unwrap_or_else(|_| bad()))
        .collect();
    let (count, total, window) = (nums[0], nums[1], nums[2].max(1));
    raise_fd_limit();
    let run = || -> Result<()> {
        let mut swarm = Swarm::new(addr)?;
        let lines = swarm.join_all(count, total, window)?;
        println!("joined {lines}");
        io::stdout().flush().map_err(|e| e.to_string())?;
        swarm.until_all_closed()?;
        println!("closed {count}");
        io::stdout().flush().map_err(|e| e.to_string())
    };
    match run() {
        Ok(()) => exit(0),
        Err(e) => {
            eprintln!("room_bench worker: FAILED: {e}");
            exit(1)
        }
    }
}

/// The idle clients' worker processes, and what they say.
struct Workers {
    children: Vec<Child>,
    said: mpsc::Receiver<(usize, Option<String>)>,
}

impl Workers {
    /// Spread `total` clients over as few workers as the open-files limit
    /// allows.
    fn spawn(addr: SocketAddr, total: usize, limit: u64) -> Result<Workers> {
        let per_worker = ((limit.saturating_sub(FDS_SPARE)) / FDS_PER_CLIENT).max(1) as usize;
        let n = total.div_ceil(per_worker);
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let (tx, said) = mpsc::channel();
        let mut children = Vec::new();
        for w in 0..n {
            let count = total / n + usize::from(w < total % n);
            let mut child = Command::new(&exe)
                .args(["--swarm-worker", &addr.to_string()])
                .args([count, total, CONNECT_WINDOW / n].map(|v| v.to_string()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("starting a worker: {e}"))?;
            let out = BufReader::new(child.stdout.take().expect("piped stdout"));
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in out.lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send((w, Some(line)));
                }
                let _ = tx.send((w, None));
            });
            children.push(child);
        }
        eprintln!("room_bench: {total} idle clients in {n} worker process(es)");
        Ok(Workers { children, said })
    }

    /// Wait until every worker has said `word N`; the sum of the Ns.
    fn all_say(&mut self, word: &str) -> Result<u64> {
        let mut sum = 0;
        let mut said = vec![false; self.children.len()];
        while said.contains(&false) {
            match self.said.recv_timeout(PATIENCE) {
                Ok((w, Some(line))) => {
                    let n = line
                        .strip_prefix(word)
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .ok_or_else(|| format!("worker {w} said {line:?}, not {word} N"))?;
                    sum += n;
                    said[w] = true;
                }
                // The end of a worker that has said it all.
                Ok((w, None)) if said[w] => {}
                Ok((w, None)) => {
                    let status = self.children[w].wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "worker {w} ended ({status}) before `{word}` (see above)"
                    ));
                }
                Err(_) => return Err(format!("a worker never said `{word}`")),
            }
        }
        Ok(sum)
    }

    fn wait(mut self) -> Result<()> {
        for (w, c) in self.children.iter_mut().enumerate() {
            let status = c
                .wait()
                .map_err(|e| format!("waiting for worker {w}: {e}"))?;
            if !status.success() {
                return Err(format!("worker {w} exited with {status}"));
            }
        }
        self.children.clear();
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ----- the phases -----

struct IdleFigures {
    rss_before_kib: u64,
    rss_after_kib: u64,
    hwm_kib: u64,
    join_time: Duration,
    shutdown_time: Duration,
}

fn idle_phase(opts: &Opts, limit: u64) -> Result<IdleFigures> {
    let n = opts.clients;
    let mut room = RoomProc::spawn(&opts.room, n + 16)?;
    let (rss_before_kib, _) = room.memory_kib()?;
    let started = Instant::now();
    let mut workers = Workers::spawn(room.addr, n, limit)?;
    let lines = workers.all_say("joined")?;
    let join_time = started.elapsed();
    let expected = (n + n * (n - 1) / 2) as u64;
    if lines != expected {
        return Err(format!("{lines} lines while joining, expected {expected}"));
    }
    let (rss_after_kib, hwm_kib) = room.memory_kib()?;
    eprintln!(
        "room_bench: {} clients joined in {:.2} s; room RSS {} -> {} KiB",
        opts.clients,
        join_time.as_secs_f64(),
        rss_before_kib,
        rss_after_kib
    );
    let started = Instant::now();
    room.terminate();
    let closed = workers.all_say("closed")?;
    room.wait()?;
    let shutdown_time = started.elapsed();
    workers.wait()?;
    if closed != n as u64 {
        return Err(format!("{closed} of {n} clients closed"));
    }
    room.check_quiet()?;
    Ok(IdleFigures {
        rss_before_kib,
        rss_after_kib,
        hwm_kib,
        join_time,
        shutdown_time,
    })
}

struct TalkFigures {
    arrival: Latency,
    seen: Latency,
    delivered: u64,
    burst_time: Duration,
}

/// Quantiles of the delivery latency, in seconds.
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    /// The quantiles of `samples` (which it sorts).
    fn of(samples: &mut [f64]) -> Latency {
        samples.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        Latency {
            p50: pick(0.50),
            p99: pick(0.99),
            max: samples.last().copied().unwrap_or(0.0),
        }
    }
}

/// Client 0 sends `warmup` lines, then `lines` measured ones, one at a
/// time, each carrying its send time; the next goes once every other client
/// has the previous one. The warm-up lines (not measured) let the kernel's
/// TCP state (timers, round-trip estimates) settle after the joins; the
/// warm-up also lasts until a line arrives timestamped at every receiver (the
/// kernel turns its receive timestamps on a little after it is first asked,
/// from a work queue: within milliseconds).
///
/// Each delivery is timed twice: when the line arrived in the receiver's
/// socket (the kernel's receive timestamp), and when epoll told this process
/// it was there. The second adds this process's own delay: one thread
/// reading 999 connections, on the same two cores as the room.
fn fan_out(swarm: &mut Swarm, warmup: usize, lines: usize) -> Result<(Latency, Latency)> {
    let n = swarm.clients.len();
    let mut arrived: Vec<f64> = Vec::with_capacity(lines * (n - 1));
    let mut seen: Vec<f64> = Vec::with_capacity(lines * (n - 1));
    let mut sender_name: Option<Vec<u8>> = None;
    // The first measured line, once known.
    let mut first: Option<usize> = None;
    let mut k = 0usize;
    while first.map_or(true, |f| k < f + lines) {
        if k > warmup + 100_000 {
            return Err("the kernel never timestamped a line at every receiver".into());
        }
        let measured = first.is_some();
        let sent_ns = now_ns();
        swarm.send(0, &[format!("{k} {sent_ns}").as_bytes()])?;
        let mut got = 0usize;
        let mut stamped = 0usize;
        let waited = Instant::now();
        while got < n - 1 {
            if waited.elapsed() > PATIENCE {
                return Err(format!("line {k} reached {got} of {} receivers", n - 1));
            }
            swarm.pump(Duration::from_millis(200), &mut |idx, line, stamp| {
                let line = line.ok_or_else(|| format!("client {idx} was closed"))?;
                let (from, text) = split_chat(line)?;
                if idx == 0 {
                    return Err("the sender got its own line back".into());
                }
                match &sender_name {
                    Some(s) if s.as_slice() != from => return Err("a line from nowhere".into()),
                    Some(_) => {}
                    None => sender_name = Some(from.to_vec()),
                }
                let (seq, sent) = parse_pair(text)?;
                if seq != k as u64 {
                    return Err(format!("client {idx} got line {seq} while waiting for {k}"));
                }
                got += 1;
                stamped += usize::from(stamp.arrived.is_some());
                if measured {
                    let at = stamp.arrived.ok_or_else(|| {
                        format!("client {idx}: no receive timestamp from the kernel for line {k}")
                    })?;
                    arrived.push(at.saturating_sub(sent) as f64 / 1e9);
                    seen.push(stamp.woke.saturating_sub(sent) as f64 / 1e9);
                }
                Ok(())
            })?;
        }
        k += 1;
        if first.is_none() && k >= warmup && stamped == n - 1 {
            first = Some(k);
        }
    }
    if let Some(f) = first.filter(|&f| f > warmup) {
        eprintln!("room_bench: {f} warm-up lines (until the kernel timestamped them)");
    }
    Ok((Latency::of(&mut arrived), Latency::of(&mut seen)))
}

fn talk_phase(opts: &Opts) -> Result<TalkFigures> {
    let n = opts.talkers;
    let mut room = RoomProc::spawn(&opts.room, n + 16)?;
    let mut swarm = Swarm::new(room.addr)?;
    swarm.join_all(n, n, CONNECT_WINDOW)?;
    swarm.enable_timestamps()?;
    let (arrival, seen) = fan_out(&mut swarm, opts.lines / 2, opts.lines)?;
    // No timestamps for the throughput run: its figure is the room's and
    // this process's work, without the peeks.
    swarm.stamps = false;
    eprintln!(
        "room_bench: fan-out to {}: p50 {:.3} ms, p99 {:.3} ms at arrival; p50 {:.3} ms, p99 {:.3} ms as read",
        n - 1,
        arrival.p50 * 1e3,
        arrival.p99 * 1e3,
        seen.p50 * 1e3,
        seen.p99 * 1e3,
    );

    // Throughput: everyone sends `burst` lines at once.
    let expected_each = ((n - 1) * opts.burst) as u64;
    let delivered_target = expected_each * n as u64;
    // receiver -> sender name -> next sequence number expected
    let mut next: Vec<HashMap<Vec<u8>, u64>> = vec![HashMap::new(); n];
    let mut received = vec![0u64; n];
    let mut delivered = 0u64;
    let started = Instant::now();
    let batch: Vec<String> = (0..opts.burst).map(|k| k.to_string()).collect();
    let batch: Vec<&[u8]> = batch.iter().map(|l| l.as_bytes()).collect();
    for i in 0..n {
        swarm.send(i, &batch)?;
    }
    let mut last_progress = Instant::now();
    while delivered < delivered_target {
        let before = delivered;
        swarm.pump(Duration::from_millis(200), &mut |idx, line, _| {
            let line = line.ok_or_else(|| format!("client {idx} was closed"))?;
            let (from, text) = split_chat(line)?;
            let seq: u64 = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("client {idx} got {:?}", String::from_utf8_lossy(line)))?;
            let want = next[idx].entry(from.to_vec()).or_insert(0);
            if seq != *want {
                return Err(format!(
                    "client {idx} got line {seq} of a sender while expecting {want}"
                ));
            }
            *want += 1;
            received[idx] += 1;
            delivered += 1;
            Ok(())
        })?;
        if delivered > before {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > PATIENCE {
            return Err(format!(
                "stuck at {delivered} of {delivered_target} deliveries"
            ));
        }
    }
    let burst_time = started.elapsed();
    for (idx, (r, senders)) in received.iter().zip(&next).enumerate() {
        if *r != expected_each || senders.len() != n - 1 {
            return Err(format!(
                "client {idx} got {r} lines from {} senders, expected {expected_each} from {}",
                senders.len(),
                n - 1
            ));
        }
    }
    eprintln!(
        "room_bench: {delivered} lines delivered in {:.3} s",
        burst_time.as_secs_f64()
    );

    room.terminate();
    swarm.until_all_closed()?;
    room.wait()?;
    room.check_quiet()?;
    Ok(TalkFigures {
        arrival,
        seen,
        delivered,
        burst_time,
    })
}

/// `NAME: TEXT` -> (NAME, TEXT).
fn split_chat(line: &[u8]) -> Result<(&[u8], &[u8])> {
    let at = line
        .windows(2)
        .position(|w| w == b": ")
        .ok_or_else(|| format!("not a chat line: {:?}", String::from_utf8_lossy(line)))?;
    Ok((&line[..at], &line[at + 2..]))
}

/// `A B` -> (A, B) as numbers.
fn parse_pair(text: &[u8]) -> Result<(u64, u64)> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.split_once(' '))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("bad latency line {:?}", String::from_utf8_lossy(text)))
}

/// When a read saw its data.
#[derive(Clone, Copy)]
struct Stamp {
    /// When epoll returned (ns since the Unix epoch).
    woke: u64,
    /// The kernel's receive timestamp of the data (ns since the Unix epoch).
    arrived: Option<u64>,
}

/// Now, in ns since the Unix epoch: the clock of the kernel's receive
/// timestamps.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ----- the kernel receive timestamps (the one raw-socket part) -----

/// The port of a socket's local (or, `peer`, remote) IPv4 address; `None`
/// for anything else.
fn sock_port(fd: RawFd, peer: bool) -> Option<u16> {
    // SAFETY: sockaddr_storage is plain data; get{sock,peer}name write at
    // most `len` bytes into it and set `len`; a descriptor that is not a
    // socket only makes the call fail.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let p = &mut addr as *mut libc::sockaddr_storage as *mut libc::sockaddr;
        let r = if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        };
        if r != 0 || addr.ss_family != libc::AF_INET as libc::sa_family_t {
            return None;
        }
        let v4 = &*(p as *const libc::sockaddr_in);
        Some(u16::from_be(v4.sin_port))
    }
}

/// Ask the kernel to timestamp what this socket receives (`SO_TIMESTAMPNS`).
fn set_timestamps(fd: RawFd) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(format!("SO_TIMESTAMPNS: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// The kernel's receive timestamp of the first byte waiting in the socket,
/// read without taking it (`recvmsg` of one byte with `MSG_PEEK`); `None`
/// when nothing is waiting.
fn peek_stamp(fd: RawFd) -> Option<u64> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer in it points at a live
    // local (iov, byte, control) with its true length, and the control
    // messages are read only within what the kernel wrote.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        if libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) <= 0 {
            return None;
        }
        let mut stamp = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        stamp
    }
}
