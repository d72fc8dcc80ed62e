//! A peer that leaves while it is our turn (the operator still typing) ends
//! the session at once: `session::wait_for_input` waits for the input *and*
//! the peer's departure, and a `Closed` error from `next_message` ends the
//! session as `PeerClosed`. Over loopback; the "operator" is a pipe the test
//! writes to (or never does).

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::{client, config, pair, server, spawn, LIMIT};
use tcpchat::session::wait_for_input;
use tcpchat::{run_session, ChatHandler, Conn, Error, Framing, Result, Role, SessionEnd, Status};

/// What a wait gave: `Ok`, or the error's status and message.
type Waited = std::result::Result<(), (Status, String)>;

/// A pipe: (read end, write end). `nonblocking`: reads of the read end
/// never wait (they fail with `WouldBlock` when it is empty).
fn pipe(nonblocking: bool) -> (File, File) {
    let mut fds = [-1 as RawFd; 2];
    let flags = libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
    // SAFETY: pipe2 writes two descriptors into the live local array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) }, 0, "pipe2");
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (File::from(OwnedFd::from_raw_fd(fds[0])), File::from(OwnedFd::from_raw_fd(fds[1]))) }
}

/// The handler of the "operator" side: its first message is `first`; every
/// later one is a line read from `input` after waiting for it with
/// `wait_for_input`. Tells `waiting` (with its kernel thread id) each time
/// it starts a wait, and keeps the wait's result.
struct Operator {
    first: Option<&'static str>,
    input: File,
    waiting: Sender<libc::pid_t>,
    waits: Vec<Waited>,
    received: Vec<Vec<u8>>,
}

impl Operator {
    fn new(first: Option<&'static str>, input: File, waiting: Sender<libc::pid_t>) -> Operator {
        Operator {
            first,
            input,
            waiting,
            waits: Vec::new(),
            received: Vec::new(),
        }
    }
}

impl ChatHandler for Operator {
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first.as_bytes().to_vec()));
        }
        // SAFETY: gettid has no arguments and cannot fail.
        let _ = self.waiting.send(unsafe { libc::gettid() });
        if let Err(e) = wait_for_input(self.input.as_raw_fd()) {
            self.waits.push(Err((e.status(), e.to_string())));
            return Err(e);
        }
        self.waits.push(Ok(()));
        let mut buf = [0u8; 256];
        match self.input.read(&mut buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]).to_vec())),
            // The pipe is non-blocking in one test: woken with nothing to read.
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                Err(Error::Callback("wait_for_input returned, but there was no input".into()))
            }
            Err(e) => Err(Error::Callback(format!("reading the pipe: {e}"))),
        }
    }

    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        self.received.push(msg.to_vec());
        Ok(())
    }
}

/// Wait (bounded, no sleep) until kernel thread `tid` of this process is
/// blocked in poll/ppoll, where `wait_for_input` waits.
fn wait_until_blocked(tid: libc::pid_t) {
    let mut polls = vec![libc::SYS_ppoll];
    #[cfg(target_arch = "x86_64")]
    polls.push(libc::SYS_poll);
    let path = format!("/proc/self/task/{tid}/syscall");
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let nr: Option<libc::c_long> = text.split_whitespace().next().and_then(|s| s.parse().ok());
        if nr.is_some_and(|nr| polls.contains(&nr)) {
            return;
        }
        assert!(Instant::now() < deadline, "thread {tid} never blocked in poll ({text:?})");
        std::thread::yield_now();
    }
}

fn next_wait(rx: &Receiver<libc::pid_t>) -> libc::pid_t {
    rx.recv_timeout(LIMIT).expect("the handler never started to wait for input")
}

#[test]
fn a_peer_that_leaves_during_the_wait_ends_the_session_as_peer_closed() {
    // Once with a close (FIN), once with a reset (RST).
    for reset in [false, true] {
        let server = server(config(Framing::Line));
        let (input, _typist) = pipe(false); // nobody ever types
        let (tx, rx) = mpsc::channel();
        let mut raw = TcpStream::connect(server.local_addr()).unwrap();
        let mut conn = server.accept_timeout(LIMIT).unwrap();
        raw.set_read_timeout(Some(LIMIT)).unwrap();
        let session = spawn(move || {
            let mut op = Operator::new(Some("hello"), input, tx);
            let end = run_session(&mut conn, Role::Server, &mut op);
            (end, op, Instant::now())
        });
        let mut got = [0u8; 6];
        raw.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello\n");
        raw.write_all(b"hi\n").unwrap();
        next_wait(&rx); // the operator is "typing" its next line
        let left = Instant::now();
        if reset {
            socket2::SockRef::from(&raw).set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(raw);
        let (end, op, ended) = session.join().unwrap();
        assert_eq!(end.unwrap(), SessionEnd::PeerClosed, "reset: {reset}");
        assert!(ended - left < LIMIT, "reset: {reset}: took {:?}", ended - left);
        assert_eq!(op.received, [b"hi".to_vec()]);
        match &op.waits[..] {
            [Err((Status::Closed, m))] => assert!(m.contains("left while it was our turn"), "{m}"),
            other => panic!("reset: {reset}: the wait gave {other:?}"),
        }
    }
}

#[test]
fn input_ends_the_wait_and_data_sent_out_of_turn_does_not() {
    let (mut accepted, mut conn) = pair(config(Framing::Line));
    // The epoll descriptor is readable once the client's early line is in
    // the server's socket: then the wait starts with data waiting.
    let early = accepted.poll_fd().unwrap();
    let (input, mut typist) = pipe(true);
    let (tx, rx) = mpsc::channel();
    let session = spawn(move || {
        let mut op = Operator::new(None, input, tx);
        let end = run_session(&mut accepted, Role::Server, &mut op);
        let _ = accepted.close();
        (end, op)
    });
    conn.send(b"out of turn").unwrap();
    let tid = next_wait(&rx);
    let mut p = libc::pollfd {
        fd: early,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd; the descriptor stays open while the session runs.
    assert_eq!(unsafe { libc::poll(&mut p, 1, LIMIT.as_millis() as i32) }, 1, "the early line never arrived");
    wait_until_blocked(tid); // still waiting, with the early line there
    typist.write_all(b"typed at last\n").unwrap();
    assert_eq!(conn.recv().unwrap().unwrap(), b"typed at last");
    // The early line was the client's turn; then the server's input ends.
    drop(typist);
    assert_eq!(conn.recv().unwrap().unwrap(), b"BYE");
    conn.close().unwrap();
    let (end, op) = session.join().unwrap();
    assert_eq!(end.unwrap(), SessionEnd::LocalEnd);
    assert_eq!(op.received, [b"out of turn".to_vec()]);
    assert!(op.waits.iter().all(|w| w.is_ok()), "{:?}", op.waits);
}

#[test]
fn serve_chat_goes_on_to_the_next_client_after_one_left_during_the_wait() {
    let server = server(config(Framing::Line));
    let port = server.local_addr().port();
    let stop = server.shutdown_handle();
    let (input, mut typist) = pipe(false);
    let (tx, rx) = mpsc::channel();
    let (ends_tx, ends) = mpsc::channel();

    struct Served {
        op: Operator,
        ends: Sender<std::result::Result<SessionEnd, Status>>,
    }
    impl ChatHandler for Served {
        fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
            self.op.next_message()
        }
        fn on_message(&mut self, msg: &[u8]) -> Result<()> {
            self.op.on_message(msg)
        }
        fn on_end(&mut self, _peer: std::net::SocketAddr, outcome: &Result<SessionEnd>) -> Result<()> {
            let _ = self.ends.send(outcome.as_ref().map(|e| *e).map_err(|e| e.status()));
            Ok(())
        }
    }
    let serving = spawn(move || {
        let mut h = Served {
            op: Operator::new(None, input, tx),
            ends: ends_tx,
        };
        server.serve_chat(&mut h, false)
    });
    let cfg = config(Framing::Line);
    let connect = || tcpchat::connect("127.0.0.1", port, &cfg).unwrap();

    // The first client leaves while the operator has not typed a word.
    let first = connect();
    next_wait(&rx);
    drop(first);
    let end = ends.recv_timeout(LIMIT).expect("the first session never ended");
    assert_eq!(end.unwrap(), SessionEnd::PeerClosed);

    // The next one is served: the operator's line reaches it.
    let mut second = connect();
    next_wait(&rx);
    typist.write_all(b"welcome, second\n").unwrap();
    assert_eq!(second.recv().unwrap().unwrap(), b"welcome, second");
    second.send(b"BYE").unwrap();
    second.close().unwrap(); // (before on_end, which comes after the server's close)
    assert_eq!(ends.recv_timeout(LIMIT).unwrap().unwrap(), SessionEnd::PeerEnd);

    // A shutdown while the operator is typing for a third stops the loop.
    let third = connect();
    next_wait(&rx);
    stop.shutdown();
    serving.join().unwrap().expect("serve_chat stops cleanly on shutdown");
    drop(third);
}

#[test]
fn a_shutdown_during_the_wait_cancels_it() {
    let server = server(config(Framing::Line));
    let stop = server.shutdown_handle();
    let (input, _typist) = pipe(false);
    let (tx, rx) = mpsc::channel();
    let c = client(&server, &config(Framing::Line));
    let mut accepted = server.accept_timeout(LIMIT).unwrap();
    let session = spawn(move || {
        let mut op = Operator::new(None, input, tx);
        let end = run_session(&mut accepted, Role::Server, &mut op);
        (end, op)
    });
    let tid = next_wait(&rx);
    wait_until_blocked(tid);
    stop.shutdown();
    let (end, op) = session.join().unwrap();
    assert!(matches!(end, Err(Error::Cancelled(_))), "{end:?}");
    assert!(matches!(op.waits[..], [Err((Status::Cancelled, _))]), "{:?}", op.waits);
    drop(c);
}

#[test]
fn wait_for_input_outside_a_session_is_refused() {
    let (input, _typist) = pipe(false);
    assert!(matches!(wait_for_input(input.as_raw_fd()), Err(Error::InvalidArgument(_))));
    assert!(matches!(wait_for_input(0), Err(Error::InvalidArgument(_))));
}

#[test]
fn a_bad_descriptor_inside_a_session_is_refused_and_the_session_goes_on() {
    let (mut accepted, mut conn) = pair(config(Framing::Line));
    let session = spawn(move || {
        let mut calls = 0;
        let mut waits = Vec::new();
        let mut h = tcpchat::handler(
            || {
                calls += 1;
                if calls > 1 {
                    return Ok(None);
                }
                waits.push(wait_for_input(-1));
                waits.push(wait_for_input(1_000_000)); // not open
                Ok(Some(b"still here".to_vec()))
            },
            |_: &[u8]| Ok(()),
        );
        let end = run_session(&mut accepted, Role::Server, &mut h);
        let _ = accepted.close();
        (end, waits)
    });
    assert_eq!(conn.recv().unwrap().unwrap(), b"still here");
    conn.send(b"ok").unwrap();
    assert_eq!(conn.recv().unwrap().unwrap(), b"BYE");
    conn.close().unwrap();
    let (end, waits) = session.join().unwrap();
    assert_eq!(end.unwrap(), SessionEnd::LocalEnd);
    assert_eq!(waits.len(), 2);
    for w in waits {
        assert!(matches!(w, Err(Error::InvalidArgument(_))), "{w:?}");
    }
}

#[test]
fn a_closed_error_while_the_peer_is_still_there_is_a_failure() {
    let (mut accepted, conn) = pair(config(Framing::Line));
    let session = spawn(move || {
        let mut h = tcpchat::handler(
            || Err(Error::Closed("some other connection closed".into())),
            |_: &[u8]| Ok(()),
        );
        let end = run_session(&mut accepted, Role::Server, &mut h);
        (end, accepted)
    });
    let (end, accepted) = session.join().unwrap();
    assert!(matches!(&end, Err(Error::Closed(m)) if m == "some other connection closed"), "{end:?}");
    close_both(accepted, conn);
}

/// Close both ends of a pair whose ends live in this thread, without
/// waiting out a close timeout.
fn close_both(mut a: Conn, mut b: Conn) {
    a.shutdown_write().unwrap();
    b.shutdown_write().unwrap();
    drop(a);
    drop(b);
}

#[test]
fn the_session_is_forgotten_when_run_session_returns_or_unwinds() {
    let (mut accepted, conn) = pair(config(Framing::Line));
    let (input, _typist) = pipe(false);
    let inside = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut h = tcpchat::handler(
            || -> Result<Option<Vec<u8>>> { panic!("a handler that panics") },
            |_: &[u8]| Ok(()),
        );
        let _ = run_session(&mut accepted, Role::Server, &mut h);
    }));
    assert!(inside.is_err());
    assert!(matches!(wait_for_input(input.as_raw_fd()), Err(Error::InvalidArgument(_))));
    close_both(accepted, conn);
    // And after a normal return.
    let (mut accepted, conn) = pair(config(Framing::Line));
    let mut h = tcpchat::handler(|| Ok(None), |_: &[u8]| Ok(()));
    assert_eq!(run_session(&mut accepted, Role::Server, &mut h).unwrap(), SessionEnd::LocalEnd);
    assert!(matches!(wait_for_input(input.as_raw_fd()), Err(Error::InvalidArgument(_))));
    close_both(accepted, conn);
}
