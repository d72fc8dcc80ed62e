//! The room's own `nc`: join a chat room, print every line the room sends
//! as it arrives, and send every line typed on stdin as it is typed, both
//! at the same time.
//!
//!     cargo run --release --example room_client -- --host 127.0.0.1 --port 8080
//!
//! The connection is split into its two halves, one per thread:
//!
//! * the receiving thread owns the `RecvHalf`: it prints each line (made
//!   safe for the terminal) and, when the room closes the connection, ends
//!   the whole program, even while the main thread still waits for stdin;
//! * the main thread owns the `SendHalf`: it sends each stdin line; at the
//!   end of stdin it shuts down the write half (the room sees us leave and
//!   closes its side) and waits for the receiving thread to see that close.
//!
//! Neither thread ever waits for the other.

mod common;

use std::io::{self, BufRead, Write};
use std::process::exit;
use std::thread;

use tcpchat::{Config, Error, RecvHalf};

const USAGE: &str = "usage: room_client [--host HOST] [--port PORT]
  --host HOST      the room to join: a name, an IPv4 or an IPv6 address (default 127.0.0.1)
  --port PORT      the room's port (default 8080)";

fn main() {
    let flags = common::parse_flags(USAGE, &["--host", "--port"]);
    // The room speaks lines: the default configuration.
    let conn = tcpchat::connect(&flags.host, flags.port, &Config::default())
        .unwrap_or_else(|e| common::die("room_client", e));
    let (rx, mut tx) = conn.split();

    // The receiving thread. It never returns: it ends the whole program
    // when the room closes the connection.
    let receiver = thread::spawn(move || print_lines(rx));

    // The main thread: each stdin line goes out the moment it is typed.
    for line in io::stdin().lock().split(b'\n') {
        let mut line = line.unwrap_or_else(|e| {
            common::eprintln_safe!("room_client: reading stdin: {e}");
            exit(1)
        });
        if line.ends_with(b"\r") {
            line.pop();
        }
        if let Err(e) = tx.send(&line) {
            common::die("room_client", e);
        }
    }
    // The end of stdin: leave gracefully. The room reads the end of our
    // stream, sends what it still has for us, then closes its side, which
    // the receiving thread sees.
    if let Err(e) = tx.shutdown_write() {
        common::die("room_client", e);
    }
    // Wait for the receiving thread to end the program (the join returns
    // only if that thread panicked).
    let _ = receiver.join();
    exit(1);
}

/// The receiving thread: print each line as it arrives; exit 0 when the
/// room closes the connection, 1 on an error.
fn print_lines(mut rx: RecvHalf) -> ! {
    let mut out = io::stdout();
    loop {
        match rx.recv() {
            Ok(Some(line)) => {
                let shown = common::printable(&line);
                if writeln!(out, "{shown}").and_then(|()| out.flush()).is_err() {
                    exit(1); // stdout is gone (a closed pipe)
                }
            }
            Ok(None) => {
                common::eprintln_safe!("* connection closed by the room");
                // Ends the process, main thread included.
                exit(0);
            }
            // A stop-and-continue (Ctrl-Z, fg) can interrupt the wait: go on.
            Err(Error::Interrupted(_)) => continue,
            Err(e) => common::die("room_client", e),
        }
    }
}
