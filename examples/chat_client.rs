//! The tutorial's chat client: connect, print what the server sends as
//! `server: MSG`, answer with the next line typed on stdin, and take turns
//! until one side sends BYE (stdin's end sends BYE too).
//!
//!     cargo run --example chat_client -- --host 127.0.0.1 --port 8080

mod common;

use std::time::Duration;

use tcpchat::log::{set_logger, stderr_logger};
use tcpchat::{run_session, Config, Error, LogLevel, Role};

const USAGE: &str = "usage: chat_client [--host HOST] [--port PORT] [--framing raw|line|frame]
  --host HOST      server to connect to: a name, an IPv4 or an IPv6 address (default 127.0.0.1)
  --port PORT      server port (default 8080)
  --framing F      wire format: raw, line or frame (default line); must match the server's";

fn main() {
    let flags = common::parse_flags(USAGE, &["--host", "--port", "--framing"]);
    set_logger(LogLevel::Info, Some(stderr_logger()));
    let config = Config::default().with_framing(flags.framing);
    let mut conn = tcpchat::connect(&flags.host, flags.port, &config)
        .unwrap_or_else(|e| common::die("chat_client", e));

    let mut terminal = common::Stdio::new("server", "client> ");
    // The server speaks first. Give it a second; if it is still silent, say
    // so and wait as long as it takes. A receive that times out loses
    // nothing, and it only ever happens while we wait for the server's turn,
    // which is where a session starts: so we simply start the session again.
    let mut outcome = conn
        .set_read_timeout(Some(Duration::from_secs(1)))
        .and_then(|()| run_session(&mut conn, Role::Client, &mut terminal));
    if let Err(Error::Timeout { .. }) = outcome {
        if terminal.received == 0 {
            common::eprintln_safe!("connected to {}, waiting for the server to speak first", conn.peer_addr());
        }
        outcome = conn
            .set_read_timeout(None)
            .and_then(|()| run_session(&mut conn, Role::Client, &mut terminal));
    }
    // Close gracefully: everything we sent (BYE included) reaches the server.
    let closed = conn.close();
    if let Err(e) = outcome.and(closed) {
        common::die("chat_client", e);
    }
}
