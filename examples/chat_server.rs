//! The tutorial's chat server: wait for a client, send it the first line
//! typed on stdin, print its reply as `client: MSG`, and take turns until one
//! side sends BYE (or stdin ends, which sends BYE). Then serve the next
//! client, unless `--once`. A client that leaves while the operator types
//! ends its session at once (`client left` on stderr): the handler waits
//! for stdin and the connection together (`common::Stdio`).
//!
//!     cargo run --example chat_server -- --port 8080
//!     cargo run --example chat_client -- --port 8080     # in another terminal

mod common;

use tcpchat::log::{set_logger, stderr_logger};
use tcpchat::{Config, LogLevel, Server};

const USAGE: &str =
    "usage: chat_server [--host HOST] [--port PORT] [--framing raw|line|frame] [--once]
                   [--allow RANGES] [--deny RANGES]
                   [--idle-timeout SECS] [--max-per-address N] [--max-message-size BYTES]
  --host HOST               address to listen on (default 127.0.0.1)
  --port PORT               port to listen on; 0 picks a free one (default 8080)
  --framing F               wire format: raw, line or frame (default line)
  --once                    exit after the first client instead of waiting for the next
  --allow RANGES            accept only these addresses/CIDR ranges (comma-separated; repeatable)
  --deny RANGES             refuse these addresses/CIDR ranges (deny wins over allow)
  --idle-timeout SECS       end a session whose client is silent this long; 0 = never (default 300)
  --max-per-address N       connections one address may have open at once; 0 = no limit (default)
  --max-message-size BYTES  the longest message accepted (default 1048576)";

fn main() {
    let flags = common::parse_flags(
        USAGE,
        &[
            "--host", "--port", "--framing", "--once", "--allow", "--deny",
            "--idle-timeout", "--max-per-address", "--max-message-size",
        ],
    );
    let config = flags.server_config(Config::default().with_framing(flags.framing));
    let server = Server::bind(&flags.host, flags.port, config)
        .unwrap_or_else(|e| common::die("chat_server", e));
    // The first line on stderr, with the real port: scripts and tests read it.
    common::eprintln_safe!("listening on {}", server.local_addr());
    flags.warn_if_open(server.local_addr());
    set_logger(LogLevel::Info, Some(stderr_logger()));

    let mut terminal = common::Stdio::new("client", "server> ");
    if let Err(e) = server.serve_chat(&mut terminal, flags.once) {
        common::die("chat_server", e);
    }
}
