//! The turn-based chat session and the server's chat loop, over loopback.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    client, config, pair, raw_socket, read_to_end, server, spawn, Script, Task, FRAMINGS, LIMIT,
};
use tcpchat::{run_session, ChatHandler, Error, Framing, Result, Role, SessionEnd, Status};

type Side = (Result<SessionEnd>, Script);

/// Run a whole session: the server's script on one thread, the client's on another.
fn chat(framing: Framing, server_says: &[&str], client_says: &[&str]) -> (Side, Side) {
    let (mut accepted, mut conn) = pair(config(framing));
    let mut server_script = Script::new(server_says);
    let server_side = spawn(move || {
        let end = run_session(&mut accepted, Role::Server, &mut server_script);
        accepted.close().unwrap();
        (end, server_script)
    });
    let mut client_script = Script::new(client_says);
    let end = run_session(&mut conn, Role::Client, &mut client_script);
    conn.close().unwrap();
    (server_side.join().unwrap(), (end, client_script))
}

#[test]
fn server_ends_the_session_in_every_framing() {
    for framing in FRAMINGS {
        // The server runs out of lines after two: it sends BYE.
        let ((s_end, s), (c_end, c)) = chat(
            framing,
            &["hello", "how are you?"],
            &["hi", "fine", "unsent"],
        );
        assert_eq!(s_end.unwrap(), SessionEnd::LocalEnd, "{framing}");
        assert_eq!(c_end.unwrap(), SessionEnd::PeerEnd, "{framing}");
        assert_eq!(s.received_text(), ["hi", "fine"], "{framing}");
        assert_eq!(c.received_text(), ["hello", "how are you?"], "{framing}");
        assert_eq!(
            c.outgoing,
            [b"unsent".to_vec()],
            "{framing}: the client spoke out of turn"
        );
    }
}

#[test]
fn client_ends_the_session_with_bye_in_every_framing() {
    for framing in FRAMINGS {
        let ((s_end, s), (c_end, c)) = chat(
            framing,
            &["hello", "still there?", "unsent"],
            &["hi", "BYE"],
        );
        assert_eq!(s_end.unwrap(), SessionEnd::PeerEnd, "{framing}");
        assert_eq!(c_end.unwrap(), SessionEnd::LocalEnd, "{framing}");
        assert_eq!(
            s.received_text(),
            ["hi"],
            "{framing}: BYE itself is not a message"
        );
        assert_eq!(c.received_text(), ["hello", "still there?"], "{framing}");
        assert_eq!(s.outgoing, [b"unsent".to_vec()], "{framing}");
    }
}

#[test]
fn a_handler_with_nothing_more_to_say_sends_bye() {
    // The client's script is empty after one line: its next turn sends BYE.
    let ((s_end, s), (c_end, _)) = chat(Framing::Line, &["a", "b"], &["1"]);
    assert_eq!(c_end.unwrap(), SessionEnd::LocalEnd);
    assert_eq!(s_end.unwrap(), SessionEnd::PeerEnd);
    assert_eq!(s.received_text(), ["1"]);
}

#[test]
fn the_server_may_say_bye_at_once() {
    let ((s_end, _), (c_end, c)) = chat(Framing::Frame, &["BYE"], &["never sent"]);
    assert_eq!(s_end.unwrap(), SessionEnd::LocalEnd);
    assert_eq!(c_end.unwrap(), SessionEnd::PeerEnd);
    assert!(c.received.is_empty());
}

#[test]
fn binary_and_empty_messages_cross_in_frame_framing() {
    let (mut accepted, mut conn) = pair(config(Framing::Frame));
    let t = spawn(move || {
        let mut h = tcpchat::handler(
            {
                let mut out = vec![vec![0u8, 255, b'\n', 0], Vec::new()].into_iter();
                move || Ok(out.next())
            },
            |_m: &[u8]| Ok(()),
        );
        run_session(&mut accepted, Role::Server, &mut h)
    });
    let mut c = Script::new(&["", "x"]);
    assert_eq!(
        run_session(&mut conn, Role::Client, &mut c).unwrap(),
        SessionEnd::PeerEnd
    );
    assert_eq!(c.received, [vec![0u8, 255, b'\n', 0], Vec::new()]);
    // Close before joining: the server's graceful close waits for ours.
    conn.close().unwrap();
    assert_eq!(t.join().unwrap().unwrap(), SessionEnd::LocalEnd);
}

#[test]
fn a_configured_end_word_ends_the_session() {
    let cfg = config(Framing::Line).with_end_word("quit");
    let (mut accepted, mut conn) = pair(cfg);
    let t = spawn(move || {
        let mut s = Script::new(&["BYE is just a word now", "more"]);
        let end = run_session(&mut accepted, Role::Server, &mut s);
        (end, s)
    });
    let mut c = Script::new(&["quit"]);
    assert_eq!(
        run_session(&mut conn, Role::Client, &mut c).unwrap(),
        SessionEnd::LocalEnd
    );
    assert_eq!(c.received_text(), ["BYE is just a word now"]);
    conn.close().unwrap();
    let (end, s) = t.join().unwrap();
    assert_eq!(end.unwrap(), SessionEnd::PeerEnd);
    assert!(s.received.is_empty());
}

#[test]
fn client_closing_mid_session_is_peer_closed_in_every_framing() {
    for framing in FRAMINGS {
        let (mut accepted, mut conn) = pair(config(framing));
        let t = spawn(move || {
            let mut s = Script::new(&["one", "two", "three"]);
            let end = run_session(&mut accepted, Role::Server, &mut s);
            (end, s)
        });
        // A client that reads the greeting, answers once, reads again and leaves.
        assert_eq!(conn.recv().unwrap().unwrap(), b"one");
        conn.send(b"reply").unwrap();
        assert_eq!(conn.recv().unwrap().unwrap(), b"two");
        conn.close().unwrap();
        let (end, s) = t.join().unwrap();
        assert_eq!(end.unwrap(), SessionEnd::PeerClosed, "{framing}");
        assert_eq!(s.received_text(), ["reply"], "{framing}");
    }
}

#[test]
fn server_closing_mid_session_is_peer_closed_for_the_client() {
    for framing in FRAMINGS {
        let (mut accepted, mut conn) = pair(config(framing));
        let t = spawn(move || {
            accepted.send(b"hello").unwrap();
            let reply = accepted.recv().unwrap().unwrap();
            accepted.close().unwrap();
            reply
        });
        let mut c = Script::new(&["hi", "anyone?"]);
        assert_eq!(
            run_session(&mut conn, Role::Client, &mut c).unwrap(),
            SessionEnd::PeerClosed,
            "{framing}"
        );
        assert_eq!(c.received_text(), ["hello"]);
        conn.close().unwrap();
        assert_eq!(t.join().unwrap(), b"hi");
    }
}

#[test]
fn a_client_that_connects_and_leaves_at_once_is_peer_closed() {
    let srv = server(config(Framing::Line));
    let conn = client(&srv, &config(Framing::Line));
    let mut accepted = srv.accept_timeout(LIMIT).unwrap();
    let closer = spawn(move || conn.close());
    let mut s = Script::new(&["hello?", "hello??"]);
    assert_eq!(
        run_session(&mut accepted, Role::Server, &mut s).unwrap(),
        SessionEnd::PeerClosed
    );
    drop(accepted);
    closer.join().unwrap().unwrap();
}

#[test]
fn raw_bye_with_a_newline_ends_the_session() {
    // What nc or the tutorial sends when the user types BYE and presses Enter.
    let srv = server(config(Framing::Raw));
    let mut sock = raw_socket(&srv);
    let mut accepted = srv.accept_timeout(LIMIT).unwrap();
    let t = spawn(move || {
        let mut s = Script::new(&["hello"]);
        run_session(&mut accepted, Role::Server, &mut s)
    });
    let mut buf = [0u8; 16];
    let n = sock.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    sock.write_all(b"BYE\r\n").unwrap();
    drop(sock);
    assert_eq!(t.join().unwrap().unwrap(), SessionEnd::PeerEnd);
}

#[test]
fn a_silent_peer_times_out_and_the_connection_stays_usable() {
    let cfg = config(Framing::Line).with_read_timeout(Some(Duration::from_millis(100)));
    let (mut accepted, mut conn) = pair(cfg);
    let mut s = Script::new(&["hello", "you there?"]);
    let e = run_session(&mut accepted, Role::Server, &mut s).unwrap_err();
    assert_eq!(e.status(), Status::Timeout, "{e}");
    // The client was just slow; the conversation can go on.
    assert_eq!(conn.recv().unwrap().unwrap(), b"hello");
    conn.send(b"sorry, I'm here").unwrap();
    assert_eq!(accepted.recv().unwrap().unwrap(), b"sorry, I'm here");
    // Both ends live on this thread: shut one down first so that neither
    // graceful close waits for the other.
    accepted.shutdown_write().unwrap();
}

/// Records what the server's chat loop reports about each client.
#[derive(Default)]
struct Greeter {
    connects: Vec<SocketAddr>,
    ends: Vec<std::result::Result<SessionEnd, Status>>,
    received: Vec<String>,
    fail_after: Option<usize>,
}

impl ChatHandler for Greeter {
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        if self.fail_after == Some(self.connects.len()) {
            return Err(Error::Callback("the terminal went away".into()));
        }
        Ok(Some(
            format!("welcome #{}", self.connects.len()).into_bytes(),
        ))
    }
    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        self.received
            .push(String::from_utf8_lossy(msg).into_owned());
        Ok(())
    }
    fn on_connect(&mut self, peer: SocketAddr) -> Result<()> {
        self.connects.push(peer);
        Ok(())
    }
    fn on_end(&mut self, _peer: SocketAddr, outcome: &Result<SessionEnd>) -> Result<()> {
        self.ends
            .push(outcome.as_ref().map(|e| *e).map_err(|e| e.status()));
        Ok(())
    }
}

fn serve(
    srv: &Arc<tcpchat::Server>,
    mut greeter: Greeter,
    once: bool,
) -> Task<(Result<()>, Greeter)> {
    let srv = srv.clone();
    spawn(move || {
        let r = srv.serve_chat(&mut greeter, once);
        (r, greeter)
    })
}

#[test]
fn serve_chat_serves_clients_one_after_another_until_shut_down() {
    let cfg = config(Framing::Line);
    let srv = Arc::new(server(cfg.clone()));
    let loop_ = serve(&srv, Greeter::default(), false);
    for i in 1..=3 {
        let mut conn = client(&srv, &cfg);
        let mut c = Script::new(&[&format!("hi from {i}"), "BYE"]);
        assert_eq!(
            run_session(&mut conn, Role::Client, &mut c).unwrap(),
            SessionEnd::LocalEnd
        );
        assert_eq!(
            c.received_text(),
            [format!("welcome #{i}"), format!("welcome #{i}")]
        );
        conn.close().unwrap();
    }
    let started = Instant::now();
    srv.shutdown_handle().shutdown();
    let (r, g) = loop_.join().unwrap();
    r.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(g.connects.len(), 3);
    assert_eq!(g.ends, [Ok(SessionEnd::PeerEnd); 3]);
    assert_eq!(g.received, ["hi from 1", "hi from 2", "hi from 3"]);
}

#[test]
fn serve_chat_once_returns_after_one_session() {
    let cfg = config(Framing::Frame);
    let srv = Arc::new(server(cfg.clone()));
    let loop_ = serve(&srv, Greeter::default(), true);
    let mut conn = client(&srv, &cfg);
    let mut c = Script::new(&["BYE"]);
    assert_eq!(
        run_session(&mut conn, Role::Client, &mut c).unwrap(),
        SessionEnd::LocalEnd
    );
    conn.close().unwrap();
    let (r, g) = loop_.join().unwrap();
    r.unwrap();
    assert_eq!(g.ends, [Ok(SessionEnd::PeerEnd)]);
    assert!(!srv.is_shut_down());
}

#[test]
fn serve_chat_goes_on_after_a_client_that_breaks_the_format() {
    let cfg = config(Framing::Line).with_max_message_size(16);
    let srv = Arc::new(server(cfg.clone()));
    let loop_ = serve(&srv, Greeter::default(), false);

    // A hostile client: reads the greeting, then sends a line far over the limit.
    let mut bad = raw_socket(&srv);
    let mut greeting = [0u8; 11];
    bad.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"welcome #1\n");
    bad.write_all(&[b'x'; 4096]).unwrap();
    read_to_end(&mut bad); // the server closes it

    // The next client is served as usual.
    let mut conn = client(&srv, &cfg);
    let mut c = Script::new(&["BYE"]);
    assert_eq!(
        run_session(&mut conn, Role::Client, &mut c).unwrap(),
        SessionEnd::LocalEnd
    );
    assert_eq!(c.received_text(), ["welcome #2"]);
    conn.close().unwrap();

    srv.shutdown();
    let (r, g) = loop_.join().unwrap();
    r.unwrap();
    assert_eq!(
        g.ends,
        [Err(Status::MessageTooLarge), Ok(SessionEnd::PeerEnd)]
    );
}

#[test]
fn a_handler_error_ends_serve_chat_with_that_error() {
    let cfg = config(Framing::Line);
    let srv = Arc::new(server(cfg.clone()));
    let loop_ = serve(
        &srv,
        Greeter {
            fail_after: Some(1),
            ..Greeter::default()
        },
        false,
    );
    let mut conn = client(&srv, &cfg);
    assert_eq!(
        conn.recv().unwrap(),
        None,
        "the server closes the connection"
    );
    conn.close().unwrap();
    let (r, g) = loop_.join().unwrap();
    assert_eq!(r.unwrap_err().status(), Status::Callback);
    assert_eq!(g.ends, [Err(Status::Callback)]);
}

#[test]
fn shutdown_stops_a_session_blocked_in_recv() {
    let cfg = config(Framing::Line);
    let srv = Arc::new(server(cfg.clone()));
    let loop_ = serve(&srv, Greeter::default(), false);
    let mut conn = client(&srv, &cfg);
    // Once the greeting arrived, the server waits for our reply that never comes.
    assert_eq!(conn.recv().unwrap().unwrap(), b"welcome #1");
    let started = Instant::now();
    srv.shutdown();
    let (r, g) = loop_.join().unwrap();
    r.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(g.ends, [Err(Status::Cancelled)]);
    assert_eq!(conn.recv().unwrap(), None);
}

#[test]
fn a_silent_client_cannot_hold_serve_chat_past_the_idle_timeout() {
    // No read timeout at all: only the idle timeout bounds the peer's turn.
    let cfg = config(Framing::Line)
        .with_read_timeout(None)
        .with_idle_timeout(Some(Duration::from_millis(300)));
    let srv = Arc::new(server(cfg.clone()));
    let loop_ = serve(&srv, Greeter::default(), false);
    // The first client reads the welcome and then says nothing.
    let mut silent = client(&srv, &cfg);
    assert_eq!(silent.recv().unwrap().as_deref(), Some(&b"welcome #1"[..]));
    // The server gives up on it after the idle timeout and closes it.
    assert_eq!(silent.recv().unwrap(), None);
    drop(silent);
    // The next client is served.
    let mut conn = client(&srv, &config(Framing::Line));
    let mut c = Script::new(&["BYE"]);
    let started = Instant::now();
    assert_eq!(run_session(&mut conn, Role::Client, &mut c).unwrap(), SessionEnd::LocalEnd);
    assert!(started.elapsed() < LIMIT, "the second client waited {:?}", started.elapsed());
    conn.close().unwrap();
    srv.shutdown_handle().shutdown();
    let (r, g) = loop_.join().unwrap();
    r.unwrap();
    assert_eq!(g.ends, [Err(Status::Timeout), Ok(SessionEnd::PeerEnd)]);
}

#[test]
fn the_idle_timeout_bounds_each_turn_and_the_read_timeout_is_restored() {
    let cfg = config(Framing::Frame)
        .with_read_timeout(None)
        .with_idle_timeout(Some(Duration::from_millis(200)))
        .with_close_timeout(Duration::from_millis(100));
    let (mut accepted, _conn) = pair(cfg);
    let mut s = Script::new(&["hello"]);
    let err = run_session(&mut accepted, Role::Client, &mut s).unwrap_err();
    assert_eq!(err.status(), Status::Timeout);
    assert!(err.to_string().contains("idle timeout"), "{err}");
    assert_eq!(accepted.read_timeout(), None);
}
