//! The echo service: many clients at once, each message sent back to its
//! sender unchanged.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Framing;
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::framing::encode;
use crate::log::{log_at, LogLevel};
use crate::server::Server;
use crate::sys;

/// What an echo service did, returned when it stops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Clients served (accepted and not refused).
    pub clients: u64,
    /// Clients refused because the server was full.
    pub refused: u64,
    /// Messages echoed (in `raw` framing: reads echoed).
    pub messages: u64,
    /// Clients whose connection ended with an error (reset, timeout, a
    /// message over the limit, broken framing).
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    clients: AtomicU64,
    refused: AtomicU64,
    messages: AtomicU64,
    errors: AtomicU64,
    active: AtomicUsize,
}

impl Server {
    /// Run the echo service until the server is shut down, then return what it did.
    ///
    /// Serves up to [`crate::Config::max_clients`] clients at once, each on
    /// its own thread; one more is sent a single message saying the server is
    /// full (in the server's framing) and closed, and the others keep being
    /// served. Each message is echoed to its sender unchanged (bytes, not
    /// text). A client that sends nothing for [`crate::Config::idle_timeout`]
    /// is closed. A client that half-closes still gets the echo of everything
    /// it sent, then end of stream. In `raw` framing the echo streams: memory
    /// stays flat whatever the client sends.
    ///
    /// A client that breaks the framing (an oversize message, say) is closed
    /// with the error logged; nobody else notices. Shutting the server down
    /// (from any thread) stops accepting, cancels every client's blocking
    /// call, closes them all and returns.
    ///
    /// Errors: only a failure of the service itself ([`Error::Interrupted`] by
    /// a signal, or an unrecoverable system error); clients' errors are
    /// counted in [`EchoStats::errors`].
    pub fn serve_echo(&self) -> Result<EchoStats> {
        let counters = Arc::new(Counters::default());
        let mut workers: Vec<JoinHandle<()>> = Vec::new();
        let max = self.config().max_clients;
        let result = loop {
            workers.retain(|w| !w.is_finished());
            let conn = match self.accept() {
                Ok(c) => c,
                Err(Error::Cancelled(_)) => break Ok(()),
                Err(Error::Interrupted(s)) => break Err(Error::Interrupted(s)),
                Err(e) => {
                    // Out of descriptors or similar: back off, keep serving.
                    log_at!(LogLevel::Error, "echo service: {e}");
                    self.pause(Duration::from_millis(100));
                    continue;
                }
            };
            if counters.active.load(Ordering::SeqCst) >= max {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                refuse_full(conn, max);
                continue;
            }
            counters.active.fetch_add(1, Ordering::SeqCst);
            counters.clients.fetch_add(1, Ordering::Relaxed);
            let c = counters.clone();
            let idle = self.config().idle_timeout;
            let name = format!("tcpchat-echo-{}", conn.peer_addr());
            match sys::spawn_quiet(name, move || {
                echo_client(conn, idle, &c);
                c.active.fetch_sub(1, Ordering::SeqCst);
            }) {
                Ok(h) => workers.push(h),
                Err(e) => {
                    counters.active.fetch_sub(1, Ordering::SeqCst);
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    log_at!(LogLevel::Error, "echo service: cannot start a client thread: {e}");
                }
            }
        };
        // Make sure every worker sees the stop, then wait for all of them.
        self.shutdown_canceller().cancel();
        for w in workers {
            let _ = w.join();
        }
        log_at!(LogLevel::Info, "echo service on {} stopped", self.local_addr());
        result.map(|()| EchoStats {
            clients: counters.clients.load(Ordering::SeqCst),
            refused: counters.refused.load(Ordering::SeqCst),
            messages: counters.messages.load(Ordering::SeqCst),
            errors: counters.errors.load(Ordering::SeqCst),
        })
    }
}

/// The one message a client over the limit gets before it is closed.
pub fn server_full_message(max: usize) -> String {
    format!("error: server full ({max} clients); try again later")
}

fn refuse_full(mut conn: Conn, max: usize) {
    log_at!(LogLevel::Warn, "refusing {}: server full ({max} clients)", conn.peer_addr());
    let text = server_full_message(max);
    // In raw framing the notice still ends with a newline, so a terminal
    // user sees a whole line.
    let framing = match conn.framing() {
        Framing::Raw => Framing::Line,
        f => f,
    };
    let mut wire = Vec::new();
    if encode(framing, usize::MAX, text.as_bytes(), &mut wire).is_ok() {
        // A short message to a fresh socket fits its send buffer, and the
        // close waits only briefly for the peer: a full server must not stall
        // its accept loop on a client it is turning away.
        let _ = conn.set_write_timeout(Some(Duration::from_millis(200)));
        conn.set_close_timeout(Duration::from_millis(200));
        let _ = conn.send_wire(&wire);
    }
    let _ = conn.close();
}

fn echo_client(mut conn: Conn, idle: Option<Duration>, counters: &Counters) {
    let peer = conn.peer_addr();
    log_at!(LogLevel::Info, "echo: serving {peer}");
    let mut echoed = 0u64;
    let outcome = loop {
        match conn.echo_step(idle) {
            Ok(0) => break Ok(()),
            Ok(n) => echoed += n as u64,
            Err(e) => break Err(e),
        }
    };
    counters.messages.fetch_add(echoed, Ordering::Relaxed);
    match outcome {
        Ok(()) => log_at!(LogLevel::Info, "echo: {peer} closed after {echoed} messages"),
        Err(Error::Cancelled(_)) => {}
        Err(e) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            log_at!(LogLevel::Warn, "echo: dropping {peer}: {e}");
        }
    }
    let _ = conn.close();
}
