//! A chat room: every line a client sends reaches every other client, as
//! `NAME: TEXT`. Clients speak plain lines, so `nc` and `telnet` can join;
//! `/nick NAME`, `/who` and `/quit` are the commands. The transcript of
//! messages goes to stdout, logs (joins, leaves, drops) to stderr. Ctrl-C
//! (SIGINT) or SIGTERM closes every client gracefully and stops.
//!
//! The transcript waits for stdout in a bounded queue: at most 1,000 lines
//! and 1 MiB. When stdout cannot keep up (a pipe nobody reads, a paused
//! terminal), the lines that do not fit are dropped and counted, and
//! `* N lines not shown` is printed where they were once stdout takes the
//! lines before them; the room itself never waits for stdout. When the room
//! stops, what is still queued is written if stdout takes it within
//! 2 seconds. The same in the C and Python versions.
//!
//!     cargo run --release --example chat_room -- --port 9000
//!     nc 127.0.0.1 9000        # in as many terminals as you like

mod common;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::eprintln_safe;

use tcpchat::log::{set_logger, stderr_logger};
use tcpchat::{Config, Error, LogLevel, MemberRate, Room, RoomEvent};

const USAGE: &str = "usage: chat_room [--host HOST] [--port PORT] [--max-clients N]
                 [--allow RANGES] [--deny RANGES]
                 [--idle-timeout SECS] [--max-per-address N] [--max-message-size BYTES]
                 [--line-rate N]
  --host HOST               address to listen on (default 127.0.0.1)
  --port PORT               port to listen on; 0 picks a free one (default 8080)
  --max-clients N           clients in the room at once; one more is told the room is full (default 1024)
  --allow RANGES            accept only these addresses/CIDR ranges (comma-separated; repeatable)
  --deny RANGES             refuse these addresses/CIDR ranges (deny wins over allow)
  --idle-timeout SECS       close a client silent this long; 0 = never (default 300)
  --max-per-address N       connections one address may have open at once; 0 = no limit (default)
  --max-message-size BYTES  the longest line accepted (default 1048576)
  --line-rate N             lines a second each member may send, in bursts of 10 N; 0 = no rate (default 50)
The transcript (NAME: TEXT) goes to stdout through a queue of at most 1000 lines
and 1 MiB; lines stdout cannot take in time are dropped and counted (`* N lines
not shown`). Logs go to stderr.";

/// The most lines, and bytes of them, waiting for stdout; the same in the C
/// and Python versions.
const TRANSCRIPT_LINES: usize = 1000;
const TRANSCRIPT_BYTES: usize = 1 << 20;
/// How long a stopped room waits for stdout to take the rest of the
/// transcript.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// The transcript's queue to stdout, bounded. The room's event handler adds
/// to it without ever waiting for stdout; the printer thread takes from it.
#[derive(Default)]
struct Transcript {
    state: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Queued>,
    bytes: usize,
    /// The room has stopped: no more lines.
    done: bool,
}

struct Queued {
    /// `NAME: TEXT` as the member typed it.
    line: String,
    /// Lines dropped right after this one because the queue was full.
    dropped_after: u64,
}

impl Transcript {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `NAME: TEXT`, or, when the queue is full, count it as dropped
    /// after the last line queued. Never waits for the printer.
    fn add(&self, name: &str, text: &str) {
        let len = name.len() + 2 + text.len();
        let mut q = self.lock();
        // An empty queue takes any line, so that a long one is shown too.
        if q.lines.len() < TRANSCRIPT_LINES && (q.lines.is_empty() || q.bytes + len <= TRANSCRIPT_BYTES) {
            q.bytes += len;
            q.lines.push_back(Queued { line: format!("{name}: {text}"), dropped_after: 0 });
            drop(q);
            self.ready.notify_one();
        } else if let Some(last) = q.lines.back_mut() {
            last.dropped_after += 1;
        }
    }

    /// The next line to print; `None` once the room has stopped and every
    /// line has been taken.
    fn next(&self) -> Option<Queued> {
        let mut q = self.lock();
        loop {
            if let Some(line) = q.lines.pop_front() {
                q.bytes -= line.line.len();
                return Some(line);
            }
            if q.done {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn finish(&self) {
        self.lock().done = true;
        self.ready.notify_one();
    }
}

/// Print the transcript until it ends. Once stdout fails (closed), lines
/// are taken and dropped: the queue never stops draining.
fn print_transcript(transcript: &Transcript) {
    let mut out = std::io::stdout();
    let mut ok = true;
    let mut text = String::new();
    while let Some(Queued { line, dropped_after }) = transcript.next() {
        if !ok {
            continue;
        }
        text.clear();
        // Names and text as members typed them: made safe for the terminal.
        text.push_str(&common::printable(line.as_bytes()));
        text.push('\n');
        if dropped_after > 0 {
            text.push_str(&format!("* {dropped_after} lines not shown\n"));
        }
        ok = out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_ok();
    }
}

fn main() {
    let flags = common::parse_flags(
        USAGE,
        &[
            "--host", "--port", "--max-clients", "--allow", "--deny",
            "--idle-timeout", "--max-per-address", "--max-message-size", "--line-rate",
        ],
    );

    // Block SIGINT and SIGTERM in this thread before any other starts, so
    // every thread inherits the mask and the signals wait for sigwait below
    // instead of killing the process.
    let signals = common::block_stop_signals();
    raise_fd_limit();

    let config = flags.server_config(Config::default());
    let room =
        Room::bind(&flags.host, flags.port, config).unwrap_or_else(|e| common::die("chat_room", e));
    // The first line on stderr, with the real port: scripts and tests read it.
    if let Some(n) = flags.line_rate {
        let rate = match n {
            0 => MemberRate::unlimited(),
            n => MemberRate {
                lines_per_second: n,
                line_burst: n.saturating_mul(10),
                ..MemberRate::default()
            },
        };
        room.set_rate(rate).unwrap_or_else(|e| common::die("chat_room", e));
    }
    eprintln_safe!("listening on {}", room.local_addr());
    flags.warn_if_open(room.local_addr());
    set_logger(LogLevel::Info, Some(stderr_logger()));

    // The handler runs on the room's thread, which must never wait for a
    // slow stdout: it hands the transcript to a printer thread through a
    // bounded queue.
    let transcript = Arc::new(Transcript::default());
    let queue = Arc::clone(&transcript);
    room.on_event(move |event| {
        if let RoomEvent::Message { name, text, .. } = event {
            queue.add(name, text);
        }
    })
    .unwrap_or_else(|e| common::die("chat_room", e));
    let (printed, printer_done) = mpsc::channel::<()>();
    let printer = {
        let transcript = Arc::clone(&transcript);
        std::thread::spawn(move || {
            print_transcript(&transcript);
            let _ = printed.send(());
        })
    };

    let stop = room.handle();
    std::thread::spawn(move || {
        let signal = common::wait_for(&signals);
        eprintln_safe!("chat_room: got signal {signal}, closing the room");
        stop.shutdown();
    });

    let stats = loop {
        match room.run() {
            Ok(stats) => break stats,
            // A stop-and-continue (Ctrl-Z, fg) can interrupt the wait: go on.
            Err(Error::Interrupted(_)) => continue,
            Err(e) => common::die("chat_room", e),
        }
    };
    // The stopped room calls the handler no more: let the printer write what
    // is left, if stdout takes it soon (a stdout nobody reads must not keep
    // the program from exiting).
    transcript.finish();
    if printer_done.recv_timeout(FINISH_WAIT).is_ok() {
        let _ = printer.join();
    }
    eprintln_safe!(
        "chat_room: stopped; {} joined, {} refused, {} messages, {} dropped",
        stats.joined, stats.refused, stats.messages, stats.dropped
    );
}

/// A room holds one descriptor per client: lift the soft limit on open files
/// to the hard limit (often 1024 soft), as servers do.
fn raise_fd_limit() {
    // SAFETY: rlimit is plain data; getrlimit and setrlimit only read and
    // write this local.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
