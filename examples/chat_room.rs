//! A chat room: every line a client sends reaches every other client, as
//! `NAME: TEXT`. Clients speak plain lines, so `nc` and `telnet` can join;
//! `/nick NAME`, `/who` and `/quit` are the commands. The transcript of
//! messages goes to stdout, logs (joins, leaves, drops) to stderr. Ctrl-C
//! (SIGINT) or SIGTERM closes every client gracefully and stops.
//!
//!     cargo run --release --example chat_room -- --port 9000
//!     nc 127.0.0.1 9000        # in as many terminals as you like

mod common;

use std::io::Write;
use std::sync::mpsc;

use tcpchat::log::{set_logger, stderr_logger};
use tcpchat::{Config, Error, LogLevel, Room, RoomEvent};

const USAGE: &str = "usage: chat_room [--host HOST] [--port PORT] [--max-clients N]
                 [--allow RANGES] [--deny RANGES]
                 [--idle-timeout SECS] [--max-per-address N] [--max-message-size BYTES]
  --host HOST               address to listen on (default 127.0.0.1)
  --port PORT               port to listen on; 0 picks a free one (default 8080)
  --max-clients N           clients in the room at once; one more is told the room is full (default 1024)
  --allow RANGES            accept only these addresses/CIDR ranges (comma-separated; repeatable)
  --deny RANGES             refuse these addresses/CIDR ranges (deny wins over allow)
  --idle-timeout SECS       close a client silent this long; 0 = never (default 300)
  --max-per-address N       connections one address may have open at once; 0 = no limit (default)
  --max-message-size BYTES  the longest line accepted (default 1048576)";

fn main() {
    let flags = common::parse_flags(
        USAGE,
        &[
            "--host", "--port", "--max-clients", "--allow", "--deny",
            "--idle-timeout", "--max-per-address", "--max-message-size",
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
    eprintln!("listening on {}", room.local_addr());
    flags.warn_if_open(room.local_addr());
    set_logger(LogLevel::Info, Some(stderr_logger()));

    // The handler runs on the room's thread, which must never wait for a
    // slow stdout: hand the transcript to a printer thread.
    let (transcript, lines) = mpsc::channel::<String>();
    room.on_event(move |event| {
        if let RoomEvent::Message { name, text, .. } = event {
            let _ = transcript.send(format!("{name}: {text}"));
        }
    })
    .unwrap_or_else(|e| common::die("chat_room", e));
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        for line in lines {
            // Names and text as members typed them: made safe for the terminal.
            let shown = common::printable(line.as_bytes());
            if writeln!(out, "{shown}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    });

    let stop = room.handle();
    std::thread::spawn(move || {
        let signal = common::wait_for(&signals);
        eprintln!("chat_room: got signal {signal}, closing the room");
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
    // The stopped room has dropped its handler, which ends the transcript:
    // let the printer write what is left.
    let _ = printer.join();
    eprintln!(
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
