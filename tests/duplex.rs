//! Full-duplex connections: `Conn::split` into a `RecvHalf` and a
//! `SendHalf` that two threads use at once, and back with `reunite`.
//!
//! * A million messages go out on one thread while another receives their
//!   echo (tcpchat's own echo service), in every framing: none lost,
//!   doubled or reordered, no deadlock. Once with the halves used directly,
//!   once shared-nothing (each half owned by its own thread, fed and drained
//!   through channels).
//! * Neither half ever waits for the other: `try_recv` while the sending
//!   half is blocked on a peer that does not read, `try_send`/`try_flush`
//!   while the receiving half is blocked in `recv`; each half has its own
//!   timeout.
//! * The connection's canceller and the server's shutdown wake a blocked
//!   receive and a blocked send at once.
//! * `reunite` (wrong halves refused, right halves lose nothing), and what
//!   dropping the halves does to the peer.
//!
//! Everything runs over 127.0.0.1 on kernel-chosen ports; every wait is
//! bounded; nothing sleeps to synchronise.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{config, pair, raw_socket, server, spawn, Task, FRAMINGS, LIMIT};
use tcpchat::{
    Config, Conn, EchoStats, Error, Framing, RecvHalf, SendHalf, ShutdownHandle, Status,
};

/// Messages per stress run (the issue's "one thread sends 1,000,000 messages
/// while another receives them"). `TCPCHAT_DUPLEX_N` overrides it.
const STRESS_MESSAGES: u64 = 1_000_000;

fn stress_messages() -> u64 {
    std::env::var("TCPCHAT_DUPLEX_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STRESS_MESSAGES)
}

/// How long a call that must not wait may take (loose: a noisy machine; the
/// bug this guards against took seconds).
const AT_ONCE: Duration = Duration::from_millis(500);

/// Message `i`: its sequence number, then 0 to 10 filler bytes, so that
/// messages differ in length and a lost, doubled or swapped one shows.
fn message(i: u64) -> Vec<u8> {
    const PAD: &[u8] = b"abcdefghij";
    let mut m = format!("{i:07}|").into_bytes();
    m.extend_from_slice(&PAD[..(i % 11) as usize]);
    m
}

/// Checks what comes back against what was sent: message by message in
/// `line` and `frame` framing; in `raw` framing, where reads have no
/// boundaries, the concatenated byte stream.
struct Checker {
    raw: bool,
    n: u64,
    next: u64,
    stream: Vec<u8>,
    pos: usize,
}

impl Checker {
    fn new(framing: Framing, n: u64) -> Checker {
        let raw = framing == Framing::Raw;
        let stream = if raw {
            (0..n).flat_map(message).collect()
        } else {
            Vec::new()
        };
        Checker {
            raw,
            n,
            next: 0,
            stream,
            pos: 0,
        }
    }

    fn take(&mut self, got: &[u8]) {
        if self.raw {
            let end = self.pos + got.len();
            assert!(
                end <= self.stream.len(),
                "{} bytes more than were sent came back",
                end - self.stream.len()
            );
            if got != &self.stream[self.pos..end] {
                let off = got
                    .iter()
                    .zip(&self.stream[self.pos..end])
                    .position(|(a, b)| a != b)
                    .unwrap();
                let at = self.pos + off;
                let from = at.saturating_sub(20);
                panic!(
                    "the echoed byte stream differs at byte {at}: got {:?}, expected {:?}",
                    String::from_utf8_lossy(
                        &got[from.max(self.pos) - self.pos..(off + 20).min(got.len())]
                    ),
                    String::from_utf8_lossy(&self.stream[from..(at + 20).min(self.stream.len())])
                );
            }
            self.pos = end;
        } else {
            assert!(
                self.next < self.n,
                "a message after the last one: {:?}",
                String::from_utf8_lossy(got)
            );
            let want = message(self.next);
            if got != want.as_slice() {
                panic!(
                    "message {} is {:?}, expected {:?} (lost, doubled or reordered)",
                    self.next,
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(&want)
                );
            }
            self.next += 1;
        }
    }

    fn finish(&self) {
        if self.raw {
            assert_eq!(
                self.pos,
                self.stream.len(),
                "bytes missing from the echoed stream"
            );
        } else {
            assert_eq!(self.next, self.n, "messages missing");
        }
    }
}

/// tcpchat's echo service on a thread of its own.
struct Echo {
    port: u16,
    stop: ShutdownHandle,
    task: Task<tcpchat::Result<EchoStats>>,
}

impl Echo {
    fn start(cfg: Config) -> Echo {
        let srv = server(cfg);
        let port = srv.local_addr().port();
        let stop = srv.shutdown_handle();
        let task = spawn(move || srv.serve_echo());
        Echo { port, stop, task }
    }

    fn connect(&self, cfg: &Config) -> Conn {
        tcpchat::connect("127.0.0.1", self.port, cfg).expect("connect to the echo service")
    }

    fn stop(self) -> EchoStats {
        self.stop.shutdown();
        self.task
            .join()
            .expect("the echo service panicked")
            .expect("the echo service failed")
    }
}

/// The calling thread's kernel id.
fn thread_id() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// Wait (bounded, spinning on /proc, no sleep) until thread `tid` is
/// blocked in poll(), where every tcpchat call waits: proof that it is
/// inside its blocking call.
fn wait_until_blocked(tid: u32) {
    let waits: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["7", "271"],
        "aarch64" => &["73"],
        _ => return,
    };
    let path = format!("/proc/self/task/{tid}/syscall");
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < LIMIT {
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let nr = s.split(' ').next().unwrap_or("").trim().to_string();
                if waits.contains(&nr.as_str()) {
                    return;
                }
                last = nr;
            }
            Err(_) => return, // /proc says nothing here: the test proceeds on its other evidence
        }
        thread::yield_now();
    }
    panic!("thread {tid} never blocked in poll (last system call {last})");
}

/// A thread that reports its kernel id before running `f`.
fn spawn_reporting<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> (Task<T>, u32) {
    let (tid_tx, tid_rx) = mpsc::channel();
    let task = spawn(move || {
        tid_tx.send(thread_id()).unwrap();
        f()
    });
    (
        task,
        tid_rx.recv_timeout(LIMIT).expect("the thread started"),
    )
}

/// Receive until `want.len()` bytes came (in `raw` framing a message may
/// come in pieces; in the other framings this is one or more whole
/// messages) and check they are `want`.
fn expect_bytes(
    label: &str,
    mut recv: impl FnMut() -> tcpchat::Result<Option<Vec<u8>>>,
    want: &[u8],
) {
    let mut got = Vec::new();
    while got.len() < want.len() {
        match recv() {
            Ok(Some(m)) => got.extend(m),
            Ok(None) => panic!(
                "{label}: end of stream after {:?}",
                String::from_utf8_lossy(&got)
            ),
            Err(e) => panic!("{label}: {e}"),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "{label}"
    );
}

// ----- 1. a million messages each way at once --------------------------------

/// The stress configuration: every wait bounded by LIMIT.
fn stress_config(framing: Framing) -> Config {
    config(framing).with_close_timeout(LIMIT)
}

/// One thread sends N messages on the `SendHalf` while another receives
/// their echo on the `RecvHalf` of the same connection.
fn stress_split_halves(framing: Framing) {
    let n = stress_messages();
    let cfg = stress_config(framing);
    let echo = Echo::start(cfg.clone());
    let conn = echo.connect(&cfg);
    let (mut rx, mut tx) = conn.split();
    let receiver = spawn(move || {
        let mut check = Checker::new(framing, n);
        while let Some(m) = rx.recv().unwrap_or_else(|e| panic!("{framing}: recv: {e}")) {
            check.take(&m);
        }
        check.finish();
        rx
    });
    let started = Instant::now();
    for i in 0..n {
        tx.send(&message(i))
            .unwrap_or_else(|e| panic!("{framing}: send {i}: {e}"));
    }
    // The echo service sees our end, echoes the rest, and closes: the
    // receiver then sees the end of the stream.
    tx.shutdown_write().unwrap();
    let rx = receiver
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    eprintln!(
        "{framing}: {n} messages sent and echoed back, split halves, in {:?}",
        started.elapsed()
    );
    let conn = rx.reunite(tx).expect("reunite the halves");
    conn.close().unwrap();
    let stats = echo.stop();
    if framing != Framing::Raw {
        assert_eq!(
            stats.messages, n,
            "{framing}: the echo service echoed each message once"
        );
    }
    assert_eq!(
        (stats.clients, stats.errors),
        (1, 0),
        "{framing}: {stats:?}"
    );
}

#[test]
fn a_million_messages_each_way_split_halves_raw() {
    stress_split_halves(Framing::Raw);
}

#[test]
fn a_million_messages_each_way_split_halves_line() {
    stress_split_halves(Framing::Line);
}

#[test]
fn a_million_messages_each_way_split_halves_frame() {
    stress_split_halves(Framing::Frame);
}

/// Shared-nothing: each half is owned by a thread of its own; the main
/// thread feeds the sending thread and hears from the receiving thread only
/// through channels (no lock, no shared state in the program). The sending
/// thread batches what the channel holds (`queue` + `flush`, `send_many`);
/// the receiving thread forwards with `recv_batch`.
fn stress_shared_nothing(framing: Framing) {
    let n = stress_messages();
    let cfg = stress_config(framing);
    let echo = Echo::start(cfg.clone());
    let (rx, tx) = echo.connect(&cfg).split();

    let (to_sender, outgoing) = mpsc::sync_channel::<Vec<u8>>(4096);
    let (incoming, from_receiver) = mpsc::channel::<Vec<u8>>();
    let sender = spawn(move || -> (SendHalf, u64) {
        let mut tx = tx;
        let mut sent = 0u64;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        while let Ok(first) = outgoing.recv() {
            batch.push(first);
            batch.extend(outgoing.try_iter().take(255));
            if batch.len() % 2 == 0 {
                tx.send_many(&batch)
                    .unwrap_or_else(|e| panic!("{framing}: send_many: {e}"));
            } else {
                for m in &batch {
                    tx.queue(m)
                        .unwrap_or_else(|e| panic!("{framing}: queue: {e}"));
                }
                tx.flush()
                    .unwrap_or_else(|e| panic!("{framing}: flush: {e}"));
            }
            sent += batch.len() as u64;
            batch.clear();
        }
        tx.shutdown_write().unwrap();
        (tx, sent)
    });
    let receiver = spawn(move || -> RecvHalf {
        let mut rx = rx;
        loop {
            let got = rx
                .recv_batch(256, |m| incoming.send(m.to_vec()).is_ok())
                .unwrap_or_else(|e| panic!("{framing}: recv_batch: {e}"));
            if got == 0 {
                return rx; // end of stream; dropping `incoming` tells the main thread
            }
        }
    });

    let started = Instant::now();
    let mut check = Checker::new(framing, n);
    let mut taken = 0u64;
    for i in 0..n {
        to_sender
            .send(message(i))
            .expect("the sending thread is alive");
        // Drain as we go, so that neither channel holds the whole run.
        while let Ok(m) = from_receiver.try_recv() {
            check.take(&m);
            taken += 1;
        }
    }
    drop(to_sender);
    loop {
        match from_receiver.recv_timeout(LIMIT) {
            Ok(m) => {
                check.take(&m);
                taken += 1;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{framing}: nothing came back for {LIMIT:?} after {taken} pieces")
            }
        }
    }
    check.finish();
    let (tx, sent) = sender
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    let rx = receiver
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert_eq!(sent, n);
    eprintln!(
        "{framing}: {n} messages sent and echoed back, shared-nothing, in {:?}",
        started.elapsed()
    );
    rx.reunite(tx).expect("reunite the halves").close().unwrap();
    let stats = echo.stop();
    if framing != Framing::Raw {
        assert_eq!(
            stats.messages, n,
            "{framing}: the echo service echoed each message once"
        );
    }
    assert_eq!(
        (stats.clients, stats.errors),
        (1, 0),
        "{framing}: {stats:?}"
    );
}

#[test]
fn a_million_messages_each_way_shared_nothing_raw() {
    stress_shared_nothing(Framing::Raw);
}

#[test]
fn a_million_messages_each_way_shared_nothing_line() {
    stress_shared_nothing(Framing::Line);
}

#[test]
fn a_million_messages_each_way_shared_nothing_frame() {
    stress_shared_nothing(Framing::Frame);
}

// ----- 2. neither half waits for the other ---------------------------------------

/// A message bigger than any loopback socket buffers hold: a send of it
/// blocks until the peer reads.
const BIG: usize = 64 << 20;

fn big_config() -> Config {
    config(Framing::Frame).with_max_message_size(2 * BIG)
}

/// The sending half blocked on a peer that does not read, on its own thread.
fn blocked_send(mut tx: SendHalf) -> (Task<(SendHalf, tcpchat::Result<()>)>, u32) {
    spawn_reporting(move || {
        let r = tx.send(&vec![0x5a; BIG]);
        (tx, r)
    })
}

#[test]
fn try_recv_returns_at_once_while_the_send_half_is_blocked() {
    let (mut peer, conn) = pair(big_config());
    let (mut rx, tx) = conn.split();
    let (sending, tid) = blocked_send(tx);
    wait_until_blocked(tid);

    let t0 = Instant::now();
    let e = rx.try_recv().unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.status(), Status::WouldBlock, "{e}");
    assert!(
        took < AT_ONCE,
        "try_recv took {took:?} while the send was blocked"
    );

    // The receiving half still receives while the send stays blocked.
    peer.send(b"while your send waits").unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), b"while your send waits");
    peer.send(b"and again").unwrap();
    let t0 = Instant::now();
    let got = loop {
        match rx.try_recv() {
            Ok(m) => break m,
            Err(e) if e.status() == Status::WouldBlock && t0.elapsed() < LIMIT => {
                thread::yield_now()
            }
            Err(e) => panic!("try_recv: {e}"),
        }
    };
    assert_eq!(got.unwrap(), b"and again");
    wait_until_blocked(tid); // still in its send

    // The peer reads: the send completes, whole.
    assert_eq!(peer.recv().unwrap().unwrap().len(), BIG);
    let (tx, r) = sending.join().unwrap();
    r.unwrap();
    let mut conn = rx.reunite(tx).unwrap();
    conn.send(b"after").unwrap();
    assert_eq!(peer.recv().unwrap().unwrap(), b"after");
    peer.shutdown_write().unwrap();
    assert_eq!(conn.recv().unwrap(), None);
    conn.close().unwrap();
}

#[test]
fn try_send_and_try_flush_return_at_once_while_the_recv_half_is_blocked() {
    for framing in FRAMINGS {
        let (mut peer, conn) = pair(config(framing));
        let (mut rx, mut tx) = conn.split();
        let (receiving, tid) = spawn_reporting(move || {
            let r = rx.recv();
            (rx, r)
        });
        wait_until_blocked(tid);

        let t0 = Instant::now();
        tx.try_send(b"ping").unwrap();
        tx.try_flush().unwrap();
        tx.send(b"pong").unwrap();
        tx.flush().unwrap();
        let took = t0.elapsed();
        assert!(
            took < AT_ONCE,
            "{framing}: the sending half took {took:?} while a recv was blocked"
        );
        expect_bytes(&format!("{framing}"), || peer.recv(), b"pingpong");
        wait_until_blocked(tid); // the receive is still waiting

        peer.send(b"wake").unwrap();
        let (mut rx, r) = receiving.join().unwrap();
        let first = r.unwrap().unwrap();
        assert!(
            b"wake".starts_with(&first) && !first.is_empty(),
            "{framing}: {first:?}"
        );
        expect_bytes(&format!("{framing}"), || rx.recv(), &b"wake"[first.len()..]);
        let conn = rx.reunite(tx).unwrap();
        peer.shutdown_write().unwrap();
        let closing = spawn(move || conn.close());
        assert_eq!(peer.recv().unwrap(), None, "{framing}");
        closing.join().unwrap().unwrap();
    }
}

#[test]
fn each_half_has_its_own_timeout() {
    let (mut peer, conn) = pair(config(Framing::Line));
    let (mut rx, mut tx) = conn.split();
    assert_eq!(rx.read_timeout(), Some(LIMIT));
    assert_eq!(tx.write_timeout(), Some(LIMIT));
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert_eq!(
        tx.write_timeout(),
        Some(LIMIT),
        "the read timeout is the receiving half's"
    );
    let t0 = Instant::now();
    let e = rx.recv().unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e.status(), Status::Timeout, "{e}");
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The timeout left the connection usable both ways.
    tx.send(b"still here").unwrap();
    assert_eq!(peer.recv().unwrap().unwrap(), b"still here");
    peer.send(b"me too").unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), b"me too");
    assert_eq!(
        rx.set_read_timeout(Some(Duration::ZERO))
            .unwrap_err()
            .status(),
        Status::InvalidArgument
    );
    tx.set_write_timeout(None).unwrap();
    assert_eq!(rx.read_timeout(), Some(Duration::from_millis(200)));
    let conn = rx.reunite(tx).unwrap();
    assert_eq!(conn.read_timeout(), Some(Duration::from_millis(200)));
    assert_eq!(conn.write_timeout(), None);
    peer.shutdown_write().unwrap();
    let closing = spawn(move || conn.close());
    assert_eq!(peer.recv().unwrap(), None);
    closing.join().unwrap().unwrap();
}

// ----- 3. cancel and shutdown wake both halves --------------------------------

/// A receive blocked (the peer sends nothing) and a send blocked (the peer
/// reads nothing) on one connection, each on its own thread, both proven
/// inside poll().
struct BothBlocked {
    receiving: Task<(RecvHalf, tcpchat::Result<Option<Vec<u8>>>)>,
    sending: Task<(SendHalf, tcpchat::Result<()>)>,
}

fn block_both(conn: Conn) -> BothBlocked {
    let (mut rx, tx) = conn.split();
    let (receiving, rtid) = spawn_reporting(move || {
        let r = rx.recv();
        (rx, r)
    });
    let (sending, stid) = blocked_send(tx);
    wait_until_blocked(rtid);
    wait_until_blocked(stid);
    BothBlocked { receiving, sending }
}

impl BothBlocked {
    /// Both calls return `want` within a second of `t0`; the halves back.
    fn expect(self, want: Status, t0: Instant) -> (RecvHalf, SendHalf) {
        let (rx, r) = self.receiving.join().unwrap();
        let (tx, s) = self.sending.join().unwrap();
        let took = t0.elapsed();
        let r = r.unwrap_err();
        let s = s.unwrap_err();
        assert_eq!(r.status(), want, "the receive: {r}");
        assert_eq!(s.status(), want, "the send: {s}");
        assert!(
            took < Duration::from_secs(1),
            "both returned only after {took:?}"
        );
        (rx, tx)
    }
}

#[test]
fn the_canceller_wakes_a_blocked_recv_and_a_blocked_send() {
    let (peer, conn) = pair(big_config());
    let cancel = conn.canceller();
    let both = block_both(conn);
    let t0 = Instant::now();
    cancel.cancel();
    let (mut rx, mut tx) = both.expect(Status::Cancelled, t0);
    assert!(
        rx.canceller().is_cancelled() && tx.canceller().is_cancelled(),
        "one canceller for both halves"
    );
    // Sticky: later waits on either half fail at once too.
    assert_eq!(rx.recv().unwrap_err().status(), Status::Cancelled);
    assert_eq!(tx.flush().unwrap_err().status(), Status::Cancelled);
    let t0 = Instant::now();
    drop((rx, tx)); // a cancelled connection closes without waiting for the peer
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "closing took {:?}",
        t0.elapsed()
    );
    drop(peer);
}

#[test]
fn the_canceller_of_either_half_wakes_the_other() {
    // The receiving half's canceller stops a send; the sending half's a receive.
    let (_peer, conn) = pair(big_config());
    let (mut rx, tx) = conn.split();
    let (sending, tid) = blocked_send(tx);
    wait_until_blocked(tid);
    rx.canceller().cancel();
    let (tx, r) = sending.join().unwrap();
    assert_eq!(r.unwrap_err().status(), Status::Cancelled);
    assert_eq!(rx.recv().unwrap_err().status(), Status::Cancelled);

    let (_peer2, conn) = pair(big_config());
    let (mut rx2, tx2) = conn.split();
    let cancel = tx2.canceller();
    let (receiving, tid) = spawn_reporting(move || rx2.recv().map(|_| ()));
    wait_until_blocked(tid);
    cancel.cancel();
    assert_eq!(
        receiving.join().unwrap().unwrap_err().status(),
        Status::Cancelled
    );
    drop((tx, tx2));
}

#[test]
fn the_server_shutdown_wakes_both_halves_of_an_accepted_connection() {
    let srv = server(big_config());
    let client = common::client(&srv, &big_config());
    let accepted = srv.accept_timeout(LIMIT).unwrap();
    let both = block_both(accepted);
    let t0 = Instant::now();
    srv.shutdown_handle().shutdown();
    let (rx, tx) = both.expect(Status::Cancelled, t0);
    let t0 = Instant::now();
    drop((rx, tx)); // a shut-down server's connection closes without waiting for the peer
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "closing took {:?}",
        t0.elapsed()
    );
    drop(client);
}

// ----- 7. the halves themselves ----------------------------------------------

#[test]
fn the_halves_are_send() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<RecvHalf>();
    assert_send::<SendHalf>();
    assert_send::<Conn>();
}

#[test]
fn reunite_refuses_halves_of_different_connections() {
    let (mut peer1, one) = pair(config(Framing::Line));
    let (mut peer2, two) = pair(config(Framing::Line));
    let (rx1, tx1) = one.split();
    let (rx2, tx2) = two.split();
    let e = rx1.reunite(tx2).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert_eq!(e.status(), Status::InvalidArgument);
    // What is left of each still works: the second's receiving half and the
    // first's sending half (the refused pair was dropped, which shut down
    // the second connection's write half).
    let mut rx2 = rx2;
    let mut tx1 = tx1;
    tx1.send(b"one still sends").unwrap();
    assert_eq!(peer1.recv().unwrap().unwrap(), b"one still sends");
    peer2.send(b"two still receives").unwrap();
    assert_eq!(rx2.recv().unwrap().unwrap(), b"two still receives");
    assert_eq!(
        peer2.recv().unwrap(),
        None,
        "the dropped sending half shut the write half"
    );
    peer1.shutdown_write().unwrap();
    peer2.shutdown_write().unwrap();
    drop(tx1);
    assert_eq!(peer1.recv().unwrap(), None);
    assert_eq!(rx2.recv().unwrap(), None);
    drop(rx2);
}

#[test]
fn reunite_gives_back_a_working_conn_that_lost_nothing() {
    for framing in [Framing::Line, Framing::Frame] {
        let (mut peer, mut conn) = pair(config(framing));
        // Three messages in one write: after the first recv, two wait in
        // the receiving buffer.
        peer.send_many(["first", "second", "third", "fourth"])
            .unwrap();
        assert_eq!(conn.recv().unwrap().unwrap(), b"first", "{framing}");
        assert!(conn.buffered() > 0, "{framing}: the rest is buffered");
        conn.queue(b"queued before the split").unwrap();
        let queued = conn.queued();
        assert!(queued > 0);

        let (mut rx, mut tx) = conn.split();
        assert_eq!(
            tx.queued(),
            queued,
            "{framing}: the queue went with the sending half"
        );
        assert_eq!(rx.recv().unwrap().unwrap(), b"second", "{framing}");
        tx.queue(b"queued by the half").unwrap();

        let mut conn = rx.reunite(tx).unwrap();
        assert_eq!(conn.recv().unwrap().unwrap(), b"third", "{framing}");
        conn.flush().unwrap();
        assert_eq!(
            peer.recv().unwrap().unwrap(),
            b"queued before the split",
            "{framing}"
        );
        assert_eq!(
            peer.recv().unwrap().unwrap(),
            b"queued by the half",
            "{framing}"
        );
        assert_eq!(conn.try_recv().unwrap().unwrap(), b"fourth", "{framing}");

        // Split again and reunite again: still one working connection.
        let (rx, tx) = conn.split();
        let mut conn = rx.reunite(tx).unwrap();
        conn.send(b"round trip").unwrap();
        assert_eq!(peer.recv().unwrap().unwrap(), b"round trip");
        peer.send(b"and back").unwrap();
        assert_eq!(conn.recv().unwrap().unwrap(), b"and back");
        peer.shutdown_write().unwrap();
        assert_eq!(conn.recv().unwrap(), None);
        assert!(conn.peer_closed());
        conn.close().unwrap();
        assert_eq!(peer.recv().unwrap(), None);
    }
}

/// Read a raw socket to its end; a reset fails the test.
fn read_to_end_no_reset(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                panic!("the connection was reset after {} bytes", got.len())
            }
            Err(e) => panic!("reading to the end: {e}"),
        }
    }
}

#[test]
fn dropping_both_halves_closes_gracefully() {
    for recv_half_first in [false, true] {
        let srv = server(config(Framing::Line));
        let mut sock = raw_socket(&srv);
        let conn = srv.accept_timeout(LIMIT).unwrap();
        // The peer sends data we never read: closing with it unread would
        // reset the connection, unless the close drains it.
        sock.write_all(&b"unread line\n".repeat(2_000)).unwrap();
        let (rx, mut tx) = conn.split();
        let n = 50_000;
        let peer = spawn(move || {
            // Read everything, then the end of the stream; then close.
            let got = read_to_end_no_reset(&mut sock);
            drop(sock);
            got
        });
        for i in 0..n {
            tx.send(&message(i)).unwrap();
        }
        if recv_half_first {
            drop(rx);
            drop(tx);
        } else {
            drop(tx);
            drop(rx);
        }
        let got = peer.join().unwrap();
        let want: Vec<u8> = (0..n)
            .flat_map(|i| [message(i), b"\n".to_vec()].concat())
            .collect();
        assert!(
            got == want,
            "recv half first: {recv_half_first}: the peer got {} bytes, not {}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn dropping_only_the_send_half_lets_the_peer_see_the_end_while_the_recv_half_receives() {
    for framing in FRAMINGS {
        let (mut peer, conn) = pair(config(framing));
        let (mut rx, mut tx) = conn.split();
        tx.queue(b"queued, sent by the drop").unwrap();
        drop(tx);
        expect_bytes(
            &format!("{framing}"),
            || peer.recv(),
            b"queued, sent by the drop",
        );
        assert_eq!(
            peer.recv().unwrap(),
            None,
            "{framing}: the peer sees the end of the stream"
        );
        peer.send(b"after your end").unwrap();
        expect_bytes(&format!("{framing}"), || rx.recv(), b"after your end");
        // Sending is over for good: the peer's sends still reach us until it closes.
        peer.send(b"more").unwrap();
        expect_bytes(&format!("{framing}"), || rx.recv(), b"more");
        peer.close().unwrap();
        assert_eq!(rx.recv().unwrap(), None, "{framing}");
        assert!(rx.peer_closed());
        drop(rx);
    }
}

#[test]
fn shutdown_write_on_the_send_half_keeps_the_recv_half_receiving() {
    let srv = server(config(Framing::Line));
    let mut sock = raw_socket(&srv);
    let conn = srv.accept_timeout(LIMIT).unwrap();
    let (mut rx, mut tx) = conn.split();
    tx.send(b"bye for now").unwrap();
    tx.shutdown_write().unwrap();
    tx.shutdown_write().unwrap(); // again: nothing more
    assert_eq!(tx.send(b"too late").unwrap_err().status(), Status::LocallyClosed);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let k = sock.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got, b"bye for now\n");
    sock.write_all(b"the peer still talks\n").unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), b"the peer still talks");
    sock.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rx.recv().unwrap(), None);
    drop((rx, tx));
    assert_eq!(sock.read(&mut buf).unwrap(), 0);
}
