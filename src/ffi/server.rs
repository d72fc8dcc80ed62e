//! `tcpchat_server`: listening, accepting, shutdown, and the services.

use std::ffi::c_char;
use std::time::Duration;

use crate::echo::EchoStats;
use crate::error::Status;
use crate::server::Server;

use super::boundary::{arg_nonnull, arg_port, arg_str, guard, guard_value, write_out, write_string};
use super::config::tcpchat_config;
use super::conn::tcpchat_conn;
use super::handles::{arc_free, arc_from_c, arc_into_c};
use super::session::{tcpchat_chat_callbacks, CallbackHandler};

/// A listening TCP server.
///
/// Ownership: the caller owns the handle and frees it with
/// `tcpchat_server_free()`, which stops listening.
///
/// Thread safety: a server may be used from several threads at once.
/// `tcpchat_server_shutdown()` in particular is meant to be called from
/// another thread to stop a blocked `tcpchat_server_accept()`,
/// `tcpchat_server_serve_chat()` or `tcpchat_server_serve_echo()`. Freeing
/// the handle after a shutdown while another thread is still returning from
/// such a call is safe: the server lives until that call returns.
///
/// Methods: `tcpchat_server_bind`, `tcpchat_server_local_addr`,
/// `tcpchat_server_local_port`, `tcpchat_server_accept`,
/// `tcpchat_server_accept_timeout`, `tcpchat_server_shutdown`,
/// `tcpchat_server_serve_chat`, `tcpchat_server_serve_echo`,
/// `tcpchat_server_fd`, `tcpchat_server_try_accept`, `tcpchat_server_free`.
pub struct tcpchat_server {
    server: Server,
}

/// Listen on `host`:`port` and return the new server in `*out_server`.
///
/// `host` is a NUL-terminated UTF-8 IP literal or name (borrowed for the
/// call); `port` is 0 to 65535, where 0 picks a free port (read it back with
/// `tcpchat_server_local_port()`). `config` may be NULL for defaults; it is
/// copied. On success `*out_server` owns a new server; on failure it is left
/// untouched.
///
/// Errors: `TCPCHAT_STATUS_INVALID_ARGUMENT`, `TCPCHAT_STATUS_RESOLVE`,
/// `TCPCHAT_STATUS_ADDRESS_IN_USE`, `TCPCHAT_STATUS_IO`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_bind(
    host: *const c_char,
    port: i32,
    config: *const tcpchat_config,
    out_server: *mut *mut tcpchat_server,
) -> Status {
    guard(|| {
        arg_nonnull(out_server, "out_server")?;
        let host = arg_str(host, "host")?;
        let port = arg_port(port, 0)?;
        let config = tcpchat_config::get_or_default(config);
        let server = Server::bind(host, port, config)?;
        out_server.write(arc_into_c(tcpchat_server { server }));
        Ok(())
    })
}

/// Write the address the server listens on (with the real port), such as
/// `"127.0.0.1:41234"`, as a NUL-terminated string into `buf` (`len` bytes;
/// `TCPCHAT_ADDR_MAX` always suffices), and its length into `*out_len` (if
/// not NULL). Too small a buffer gives `TCPCHAT_STATUS_BUFFER_TOO_SMALL`
/// with the size needed in `*out_len`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_local_addr(
    server: *const tcpchat_server,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Status {
    guard(|| {
        let s = arc_from_c(server, "server")?;
        write_string(&s.server.local_addr().to_string(), buf, len, out_len)
    })
}

/// Write the port the server listens on (the real one when bound to port 0)
/// into `*out_port`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_local_port(server: *const tcpchat_server, out_port: *mut i32) -> Status {
    guard(|| {
        arg_nonnull(out_port, "out_port")?;
        let s = arc_from_c(server, "server")?;
        out_port.write(i32::from(s.server.local_addr().port()));
        Ok(())
    })
}

/// Wait for the next client and return its connection in `*out_conn` (owned
/// by the caller: free it with `tcpchat_conn_free()`).
///
/// Returns `TCPCHAT_STATUS_CANCELLED` once the server is shut down, also
/// when that happens while waiting; `TCPCHAT_STATUS_INTERRUPTED` if a signal
/// handler ran while waiting (call again, or stop); `TCPCHAT_STATUS_IO` on a
/// system error such as running out of file descriptors.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_accept(
    server: *const tcpchat_server,
    out_conn: *mut *mut tcpchat_conn,
) -> Status {
    guard(|| {
        arg_nonnull(out_conn, "out_conn")?;
        let s = arc_from_c(server, "server")?;
        let conn = s.server.accept()?;
        out_conn.write(tcpchat_conn::into_c(conn));
        Ok(())
    })
}

/// Like `tcpchat_server_accept()`, waiting at most `ms` milliseconds
/// (`TCPCHAT_STATUS_TIMEOUT` when no client came; 0 = for ever).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_accept_timeout(
    server: *const tcpchat_server,
    ms: u64,
    out_conn: *mut *mut tcpchat_conn,
) -> Status {
    guard(|| {
        arg_nonnull(out_conn, "out_conn")?;
        let s = arc_from_c(server, "server")?;
        let conn = if ms == 0 {
            s.server.accept()?
        } else {
            s.server.accept_timeout(Duration::from_millis(ms))?
        };
        out_conn.write(tcpchat_conn::into_c(conn));
        Ok(())
    })
}

/// Stop the server, from any thread: a blocked or later accept returns
/// `TCPCHAT_STATUS_CANCELLED`, the serve loops return, and the blocking
/// calls of every connection this server accepted are cancelled. Returns at
/// once (it does not wait for the serve loops to finish). Idempotent.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_shutdown(server: *const tcpchat_server) -> Status {
    guard(|| {
        let s = arc_from_c(server, "server")?;
        s.server.shutdown();
        Ok(())
    })
}

/// The tutorial's server loop: accept a client, run a chat session with it
/// (this side sends first) through `callbacks`, close it gracefully, and
/// wait for the next client, until `tcpchat_server_shutdown()` (then
/// `TCPCHAT_STATUS_OK`), or after one session when `once` is true.
///
/// Callbacks run on the calling thread; `callbacks` is read at the start and
/// need not outlive the call. A session that fails because of the peer
/// (reset, timeout, broken format) is reported to `on_end` and the loop goes
/// on. A callback returning non-zero ends the loop with
/// `TCPCHAT_STATUS_CALLBACK`; a signal handler running ends it with
/// `TCPCHAT_STATUS_INTERRUPTED`.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_serve_chat(
    server: *const tcpchat_server,
    callbacks: *const tcpchat_chat_callbacks,
    once: bool,
) -> Status {
    guard(|| {
        let s = arc_from_c(server, "server")?;
        let mut handler = CallbackHandler::new(callbacks)?;
        s.server.serve_chat(&mut handler, once)
    })
}

/// Run the echo service until `tcpchat_server_shutdown()`: every message a
/// client sends comes back to it unchanged, for up to the configured maximum
/// number of clients at once (all from one event loop on the calling thread:
/// one descriptor per client, no thread per client); one more is sent a
/// "server full" message and closed. A client idle for the idle timeout is
/// closed; a client that half-closes still gets all its echoes. In raw
/// framing the echo streams with flat memory.
///
/// On return, what the service did is written to `*out_stats` (if not NULL).
/// Returns `TCPCHAT_STATUS_OK` after a shutdown, `TCPCHAT_STATUS_INTERRUPTED`
/// if a signal handler ran while it waited for clients (the clients it was
/// serving are closed first).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_serve_echo(
    server: *const tcpchat_server,
    out_stats: *mut EchoStats,
) -> Status {
    guard(|| {
        let s = arc_from_c(server, "server")?;
        let stats = s.server.serve_echo()?;
        write_out(out_stats, stats);
        Ok(())
    })
}

/// Free a server: stop listening. NULL is ignored. Connections it accepted
/// stay open and are freed separately. The handle must not be used
/// afterwards (see the thread-safety note on `tcpchat_server`).
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_free(server: *mut tcpchat_server) {
    guard_value((), || arc_free(server))
}

/// Write into `*out_fd` the listening socket's descriptor, for the program's
/// own event loop: level-triggered readable while a client waits to be
/// accepted. A client refused by the access lists makes it readable once;
/// `tcpchat_server_try_accept()` then closes that client and returns
/// `TCPCHAT_STATUS_WOULD_BLOCK`. The descriptor belongs to the server: never
/// close it yourself.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_fd(server: *const tcpchat_server, out_fd: *mut i32) -> Status {
    guard(|| {
        arg_nonnull(out_fd, "out_fd")?;
        let s = arc_from_c(server, "server")?;
        out_fd.write(s.server.poll_fd());
        Ok(())
    })
}

/// Accept a client that is already waiting, without blocking: the new
/// connection in `*out_conn` (yours to free), or `TCPCHAT_STATUS_WOULD_BLOCK`
/// when no client is waiting.
#[no_mangle]
pub unsafe extern "C" fn tcpchat_server_try_accept(
    server: *const tcpchat_server,
    out_conn: *mut *mut tcpchat_conn,
) -> Status {
    guard(|| {
        arg_nonnull(out_conn, "out_conn")?;
        let s = arc_from_c(server, "server")?;
        let conn = s.server.try_accept()?;
        out_conn.write(tcpchat_conn::into_c(conn));
        Ok(())
    })
}
