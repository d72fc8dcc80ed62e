//! An echo server for many clients at once: every message a client sends
//! comes back to it unchanged. Ctrl-C (SIGINT) or SIGTERM stops it cleanly.
//!
//!     cargo run --example echo_server -- --port 9000 --max-clients 100
//!     nc 127.0.0.1 9000

mod common;

use tcpchat::log::{set_logger, stderr_logger};
use tcpchat::{Config, LogLevel, Server};

const USAGE: &str =
    "usage: echo_server [--host HOST] [--port PORT] [--framing raw|line|frame] [--max-clients N]
                   [--allow RANGES] [--deny RANGES]
                   [--idle-timeout SECS] [--max-per-address N] [--max-message-size BYTES]
  --host HOST               address to listen on (default 127.0.0.1)
  --port PORT               port to listen on; 0 picks a free one (default 8080)
  --framing F               wire format: raw, line or frame (default line)
  --max-clients N           clients served at once; one more is told the server is full (default 1024)
  --allow RANGES            accept only these addresses/CIDR ranges (comma-separated; repeatable)
  --deny RANGES             refuse these addresses/CIDR ranges (deny wins over allow)
  --idle-timeout SECS       close a client silent this long; 0 = never (default 300)
  --max-per-address N       connections one address may have open at once; 0 = no limit (default)
  --max-message-size BYTES  the longest message accepted (default 1048576)";

fn main() {
    let flags = common::parse_flags(
        USAGE,
        &[
            "--host", "--port", "--framing", "--max-clients", "--allow", "--deny",
            "--idle-timeout", "--max-per-address", "--max-message-size",
        ],
    );

    // Block SIGINT and SIGTERM in this thread before any other starts, so
    // every thread inherits the mask and the signals wait for sigwait below
    // instead of killing the process.
    let signals = common::block_stop_signals();

    let config = flags.server_config(Config::default().with_framing(flags.framing));
    let server = Server::bind(&flags.host, flags.port, config)
        .unwrap_or_else(|e| common::die("echo_server", e));
    common::eprintln_safe!("listening on {}", server.local_addr());
    flags.warn_if_open(server.local_addr());
    set_logger(LogLevel::Info, Some(stderr_logger()));

    let stop = server.shutdown_handle();
    std::thread::spawn(move || {
        let signal = common::wait_for(&signals);
        common::eprintln_safe!("echo_server: got signal {signal}, stopping");
        stop.shutdown();
    });

    match server.serve_echo() {
        Ok(stats) => common::eprintln_safe!(
            "echo_server: stopped; served {} clients, refused {}, echoed {} messages, {} client errors",
            stats.clients, stats.refused, stats.messages, stats.errors
        ),
        Err(e) => common::die("echo_server", e),
    }
}

