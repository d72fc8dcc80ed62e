//! The chat room over loopback: broadcast order and completeness, names and
//! commands, limits (full room, slow readers, idle clients, long lines),
//! shutdown and posts from other threads, and the event handler.
//!
//! Every wait is a blocking read with a timeout (so a bug fails a test
//! instead of hanging it); nothing sleeps to synchronise.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tcpchat::{Config, Error, LeaveReason, MemberRate, Room, RoomConfig, RoomEvent, Status};

/// The longest any single wait may take.
mod common;

use common::{RoomPeer as Peer, LIMIT};

fn room(config: impl Into<RoomConfig>) -> Room {
    let room = Room::bind("127.0.0.1", 0, config).expect("bind the room");
    room.start().expect("start the room");
    room
}

/// `n` members, each having seen the joins of those after it, so that every
/// stream is at a known point.
fn members(addr: SocketAddr, n: usize) -> Vec<Peer> {
    let mut peers: Vec<Peer> = Vec::new();
    for _ in 0..n {
        let p = Peer::join(addr);
        for q in peers.iter_mut() {
            q.expect(&format!("* {} joined", p.name));
        }
        peers.push(p);
    }
    peers
}

/// A room whose events arrive on the returned channel.
fn observed_room(config: impl Into<RoomConfig>) -> (Room, mpsc::Receiver<RoomEvent>) {
    let room = Room::bind("127.0.0.1", 0, config).expect("bind the room");
    let (tx, rx) = mpsc::channel();
    room.on_event(move |e| {
        let _ = tx.send(e.clone());
    })
    .unwrap();
    room.start().expect("start the room");
    (room, rx)
}

#[test]
fn every_line_reaches_every_other_client_in_order() {
    const CLIENTS: usize = 20;
    const LINES: usize = 200;
    let room = room(Config::default());
    let peers = members(room.local_addr(), CLIENTS);
    let names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
    let workers: Vec<_> = peers
        .into_iter()
        .map(|mut p| {
            thread::spawn(move || {
                let batch: Vec<String> = (0..LINES).map(|i| format!("line {i} from {}", p.name)).collect();
                p.send_lines(&batch);
                // sender -> next line number expected from it
                let mut next: HashMap<String, usize> = HashMap::new();
                for _ in 0..(CLIENTS - 1) * LINES {
                    let l = p.line();
                    let (from, text) = l.split_once(": ").expect("NAME: TEXT");
                    assert_ne!(from, p.name, "a sender got its own line back");
                    let n = next.entry(from.to_string()).or_default();
                    assert_eq!(
                        text,
                        format!("line {n} from {from}"),
                        "{} got a line out of order",
                        p.name
                    );
                    *n += 1;
                }
                assert_eq!(next.len(), CLIENTS - 1);
                assert!(next.values().all(|&n| n == LINES));
                p
            })
        })
        .collect();
    let mut peers: Vec<Peer> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    // Nothing more (no doubles) was queued before this: each client's next
    // line is the answer to its own /who.
    for p in peers.iter_mut() {
        p.send("/who");
        let who = p.line();
        assert!(
            who.starts_with(&format!("* {CLIENTS} online: {}, ", names[0])),
            "{who}"
        );
    }
    assert_eq!(room.stats().messages, (CLIENTS * LINES) as u64);
    assert_eq!(room.stats().online, CLIENTS as u64);
}

#[test]
fn names_and_commands() {
    let room = room(Config::default());
    let mut p = members(room.local_addr(), 3);
    let (g1, g2, g3) = (p[0].name.clone(), p[1].name.clone(), p[2].name.clone());

    p[0].send("/nick alice");
    p[0].expect("* you are now known as alice");
    p[1].expect(&format!("* {g1} is now known as alice"));
    p[2].expect(&format!("* {g1} is now known as alice"));

    // Refusals go to the asker alone.
    p[1].send("/nick ALICE");
    p[1].expect("error: the name ALICE is taken");
    p[1].send("/nick bad name!");
    p[1].expect("error: invalid name \"bad name!\": use 1 to 32 letters, digits, _ or -");
    p[1].send(&format!("/nick {}", "x".repeat(33)));
    assert!(p[1].line().starts_with("error: invalid name"));
    p[1].send("/nick");
    p[1].expect("error: usage: /nick NAME");
    p[1].send("/frob it");
    p[1].expect("error: unknown command /frob (commands: /nick NAME, /who, /quit)");
    p[1].send("/help");
    assert!(p[1]
        .line()
        .starts_with("* commands: /nick NAME, /who, /quit"));
    p[1].send("/nick Bob_2-x");
    p[1].expect("* you are now known as Bob_2-x");
    p[1].send("/nick Bob_2-x");
    p[1].expect("* you are already known as Bob_2-x");
    // An empty line is ignored; // escapes a leading slash.
    p[1].send("");
    p[1].send("//slash");
    for i in [0, 2] {
        p[i].expect(&format!("* {g2} is now known as Bob_2-x"));
        p[i].expect("Bob_2-x: /slash");
    }

    // Case-only change of one's own name is allowed.
    p[0].send("/nick Alice");
    p[0].expect("* you are now known as Alice");
    p[1].expect("* alice is now known as Alice");
    p[2].expect("* alice is now known as Alice");

    p[2].send("/who");
    p[2].expect(&format!("* 3 online: Alice, Bob_2-x, {g3}"));

    p[2].send("/quit");
    p[2].expect("* bye");
    assert!(p[2].until_eof().is_empty());
    p[0].expect(&format!("* {g3} left"));
    p[1].expect(&format!("* {g3} left"));

    // The old name is free again.
    p[0].send(&format!("/nick {g3}"));
    p[0].expect(&format!("* you are now known as {g3}"));
    p[1].expect(&format!("* Alice is now known as {g3}"));
}

#[test]
fn default_names_are_unique_even_when_taken() {
    let room = room(Config::default());
    let mut a = Peer::join(room.local_addr());
    assert_eq!(a.name, "guest1");
    // Take the name the next client would get.
    a.send("/nick guest2");
    a.expect("* you are now known as guest2");
    let b = Peer::join(room.local_addr());
    assert_eq!(b.name, "guest3");
    a.expect("* guest3 joined");
}

#[test]
fn invalid_utf8_is_refused_to_the_sender_alone() {
    let room = room(Config::default());
    let mut p = members(room.local_addr(), 2);
    p[0].send_line(b"caf\xc3\x28 \xff");
    p[0].expect("error: your line is not valid UTF-8; it was not sent");
    p[0].send("still here");
    p[1].expect("guest1: still here");
    // \r\n endings are fine.
    p[0].send_line("crlf ü\r".as_bytes());
    p[1].expect("guest1: crlf ü");
}

#[test]
fn a_client_over_the_limit_gets_one_line_and_the_room_goes_on() {
    let room = room(Config::default().with_max_clients(2));
    let mut p = members(room.local_addr(), 2);
    let mut extra = Peer::connect(room.local_addr());
    assert_eq!(
        extra.until_eof(),
        vec!["error: server full (2 clients); try again later".to_string()]
    );
    p[0].send("still serving");
    p[1].expect("guest1: still serving");
    p[1].send("/quit");
    p[1].expect("* bye");
    p[0].expect("* guest2 left");
    // A place is free again.
    let c = Peer::join(room.local_addr());
    p[0].expect(&format!("* {} joined", c.name));
    assert_eq!(room.stats().refused, 1);
    assert_eq!(room.stats().online, 2);
}

#[test]
fn the_access_rules_close_refused_peers_without_a_byte() {
    let denied = room(Config::default().with_deny(tcpchat::access::loopback()));
    assert!(Peer::connect(denied.local_addr()).until_eof().is_empty());
    assert_eq!(denied.stats().joined, 0);

    let room = room(Config::default().with_max_per_address(2));
    let mut p = members(room.local_addr(), 2);
    assert!(Peer::connect(room.local_addr()).until_eof().is_empty());
    // Nobody heard of it: the next line the second member gets is this one.
    p[0].send("still two");
    p[1].expect("guest1: still two");
    // A place frees when a member leaves.
    p.pop();
    p[0].expect("* guest2 left");
    let c = Peer::join(room.local_addr());
    p[0].expect(&format!("* {} joined", c.name));
}

#[test]
fn a_stalled_reader_is_dropped_without_delaying_the_others() {
    const BATCH: usize = 100;
    const MAX_LINES: usize = 50_000;
    // The sender goes as fast as it can: no rate (a test of the queue limit).
    let config = RoomConfig::from(Config::default())
        .with_queue_limit(64 * 1024)
        .with_rate(MemberRate::unlimited());
    let (room, rx) = observed_room(config);
    let mut p = members(room.local_addr(), 2);
    // Joins last, never reads, sends nothing; a small receive buffer keeps
    // what the kernel holds for it small.
    let stalled = "guest3";
    let _stalled = {
        // Raw: tcpchat::connect cannot set SO_RCVBUF (before the connect).
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&room.local_addr().into()).unwrap();
        let s: TcpStream = socket.into();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut s = BufReader::new(s);
        let mut welcome = String::new();
        s.read_line(&mut welcome).unwrap();
        assert!(
            welcome.starts_with("* welcome, you are guest3 "),
            "{welcome}"
        );
        s
    };
    let mut reader = p.pop().unwrap();
    let mut sender = p.pop().unwrap();
    reader.expect("* guest3 joined");
    sender.expect("* guest3 joined");
    let payload = "x".repeat(1000);
    let dropped = format!("* {stalled} was dropped (too slow to read)");
    // The sender sends batches of lines; the reader reads each batch before
    // the next goes (a reader that keeps up), until the room has dropped the
    // stalled client, then one more batch.
    let started = Instant::now();
    let mut sent = 0;
    let mut read = 0;
    let mut seen_drop = false;
    let mut after_drop = 0;
    while after_drop < 2 {
        assert!(sent < MAX_LINES, "the stalled client was never dropped");
        let batch: Vec<String> = (sent..sent + BATCH)
            .map(|i| format!("{i} {payload}"))
            .collect();
        sender.send_lines(&batch);
        sent += BATCH;
        while read < sent {
            let l = reader.line();
            if l == dropped {
                assert!(!seen_drop, "dropped twice");
                seen_drop = true;
                continue;
            }
            assert_eq!(l, format!("guest1: {read} {payload}"));
            read += 1;
        }
        if seen_drop {
            after_drop += 1;
        }
    }
    let elapsed = started.elapsed();
    sender.expect(&dropped);
    // Every batch went through at once: the stalled client never held the
    // room up (it would have for seconds, until dropped).
    assert!(
        elapsed < Duration::from_secs(8),
        "took {elapsed:?} for {sent} lines"
    );
    let leave = rx
        .iter()
        .find(|e| matches!(e, RoomEvent::Leave { .. }))
        .unwrap();
    assert_eq!(
        leave,
        RoomEvent::Leave {
            id: 3,
            name: stalled.to_string(),
            reason: LeaveReason::SlowReader
        }
    );
    assert_eq!(room.stats().dropped, 1);
}

#[test]
fn an_unfinished_line_times_out_and_a_member_that_only_reads_stays() {
    let idle = Duration::from_millis(300);
    let (room, rx) = observed_room(Config::default().with_idle_timeout(Some(idle)));
    let started = Instant::now();
    // It only reads, never types.
    let mut reader = Peer::join(room.local_addr());
    let mut talker = Peer::join(room.local_addr());
    reader.expect(&format!("* {} joined", talker.name));
    // Raw framing: it sends half a line.
    let mut slow = Peer::join_raw(room.local_addr());
    reader.expect(&format!("* {} joined", slow.name));
    talker.expect(&format!("* {} joined", slow.name));
    slow.send_bytes(b"half a li"); // and never the end of it
    let slow_name = slow.name.clone();
    let slow_lines = slow.until_eof();
    assert!(
        started.elapsed() >= idle,
        "dropped after {:?}",
        started.elapsed()
    );
    assert_eq!(
        slow_lines,
        vec!["error: no complete line for 300ms; closing".to_string()]
    );
    // The reader saw it go, well past its own idle time, and still hears.
    reader.expect(&format!("* {slow_name} was dropped (unfinished line for too long)"));
    talker.expect(&format!("* {slow_name} was dropped (unfinished line for too long)"));
    assert!(started.elapsed() >= idle);
    talker.send("still there?");
    reader.expect(&format!("{}: still there?", talker.name));
    let leaves: Vec<(String, LeaveReason)> = rx
        .try_iter()
        .filter_map(|e| match e {
            RoomEvent::Leave { name, reason, .. } => Some((name, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(leaves, vec![(slow_name, LeaveReason::IdleTimeout)]);
    assert_eq!(room.stats().online, 2);
}

#[test]
fn a_departed_name_can_be_taken_back_at_once_from_the_same_address() {
    let room = room(Config::default());
    let mut p = members(room.local_addr(), 2);
    p[1].send("/nick alice");
    p[1].expect("* you are now known as alice");
    let old = p[1].name.clone();
    p[0].expect(&format!("* {old} is now known as alice"));
    p[1].send("/quit");
    p[1].expect("* bye");
    p[0].expect("* alice left");
    // Every test client is on 127.0.0.1, the address that gave the name up
    // (another address is refused for 30 s: a unit test of the engine).
    p[0].send("/nick alice");
    p[0].expect("* you are now known as alice");
}

#[test]
fn a_line_too_long_drops_its_sender_only() {
    let room = room(Config::default().with_max_message_size(1024));
    let mut p = members(room.local_addr(), 3);
    let long = "y".repeat(2000);
    p[0].send(&long);
    assert_eq!(
        p[0].until_eof(),
        vec!["error: line longer than 1024 bytes; closing".to_string()]
    );
    let note = format!("* {} was dropped (line too long)", p[0].name);
    p[1].expect(&note);
    p[2].expect(&note);
    // A line of exactly the limit passes.
    let max = "z".repeat(1024);
    p[1].send(&max);
    p[2].expect(&format!("guest2: {max}"));
}

#[test]
fn a_client_that_closes_leaves_and_its_last_line_arrives() {
    let room = room(Config::default());
    // Raw framing: its last line has no newline.
    let mut a = Peer::join_raw(room.local_addr());
    let mut b = Peer::join(room.local_addr());
    a.expect(&format!("* {} joined", b.name));
    // A last line without its newline, then end of stream (`printf hi | nc -N`).
    a.send_bytes(b"last words");
    a.shutdown_write();
    b.expect("guest1: last words");
    b.expect("* guest1 left");
    assert!(a.until_eof().is_empty());
}

#[test]
fn shutdown_from_another_thread_closes_every_client() {
    let room = room(Config::default());
    let addr = room.local_addr();
    let peers = members(addr, 5);
    let readers: Vec<_> = peers
        .into_iter()
        .map(|mut p| thread::spawn(move || p.until_eof()))
        .collect();
    let handle = room.handle();
    thread::spawn(move || handle.shutdown()).join().unwrap();
    // shutdown returned: the room has stopped.
    assert_eq!(room.stats().online, 0);
    for r in readers {
        assert_eq!(
            r.join().unwrap(),
            vec!["* server shutting down".to_string()]
        );
    }
    let refused = tcpchat::connect("127.0.0.1", addr.port(), &Config::default());
    assert_eq!(
        refused.map(|_| ()).unwrap_err().status(),
        Status::ConnectionRefused,
        "the room still accepts"
    );
    assert_eq!(room.post("late").unwrap_err().status(), Status::Cancelled);
    assert_eq!(room.run().unwrap_err().status(), Status::Cancelled);
}

#[test]
fn run_serves_on_the_calling_thread_until_shutdown() {
    let room = std::sync::Arc::new(Room::bind("127.0.0.1", 0, Config::default()).unwrap());
    let runner = {
        let room = room.clone();
        thread::spawn(move || room.run())
    };
    let mut p = members(room.local_addr(), 2);
    p[0].send("hello");
    p[1].expect("guest1: hello");
    assert_eq!(room.start().unwrap_err().status(), Status::InvalidArgument);
    let readers: Vec<_> = p
        .into_iter()
        .map(|mut p| thread::spawn(move || p.until_eof()))
        .collect();
    room.shutdown();
    let stats = runner.join().unwrap().unwrap();
    assert_eq!((stats.joined, stats.messages, stats.online), (2, 1, 0));
    for r in readers {
        assert_eq!(
            r.join().unwrap(),
            vec!["* server shutting down".to_string()]
        );
    }
}

#[test]
fn shutdown_of_a_room_that_never_ran() {
    let room = Room::bind("127.0.0.1", 0, Config::default()).unwrap();
    room.shutdown();
    assert!(room.is_shut_down());
    assert_eq!(room.start().unwrap_err().status(), Status::Cancelled);
}

#[test]
fn post_from_another_thread_reaches_everyone() {
    let room = room(Config::default().with_max_message_size(100));
    let mut p = members(room.local_addr(), 3);
    let handle = room.handle();
    thread::spawn(move || handle.post("maintenance at noon"))
        .join()
        .unwrap()
        .unwrap();
    for q in p.iter_mut() {
        q.expect("* maintenance at noon");
    }
    let e = room.post("two\nlines").unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = room.post(&"x".repeat(101)).unwrap_err();
    assert!(matches!(e, Error::MessageTooLarge { .. }), "{e}");
}

#[test]
fn events_report_joins_messages_renames_and_leaves() {
    let (room, rx) = observed_room(Config::default());
    let mut p = members(room.local_addr(), 2);
    let next = || rx.recv_timeout(LIMIT).expect("an event");
    match next() {
        RoomEvent::Join { id: 1, name, addr } => {
            assert_eq!(name, "guest1");
            assert_eq!(addr, p[0].local_addr());
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(next(), RoomEvent::Join { id: 2, .. }));
    p[0].send("hi there");
    p[1].expect("guest1: hi there");
    assert_eq!(
        next(),
        RoomEvent::Message {
            id: 1,
            name: "guest1".into(),
            text: "hi there".into()
        }
    );
    p[0].send("/nick ann");
    p[1].expect("* guest1 is now known as ann");
    assert_eq!(
        next(),
        RoomEvent::Rename {
            id: 1,
            old: "guest1".into(),
            new: "ann".into()
        }
    );
    p[0].send("/quit");
    p[1].expect("* ann left");
    assert_eq!(
        next(),
        RoomEvent::Leave {
            id: 1,
            name: "ann".into(),
            reason: LeaveReason::Quit
        }
    );
    let b = p.pop().unwrap();
    drop(b);
    assert_eq!(
        next(),
        RoomEvent::Leave {
            id: 2,
            name: "guest2".into(),
            reason: LeaveReason::Closed
        }
    );
    // The handler cannot be swapped while the room runs.
    assert_eq!(
        room.on_event(|_| {}).unwrap_err().status(),
        Status::InvalidArgument
    );
}

#[test]
fn the_event_handler_can_post_and_shut_down() {
    let room = Room::bind("127.0.0.1", 0, Config::default()).unwrap();
    let handle = room.handle();
    room.on_event(move |e| {
        if let RoomEvent::Message { name, text, .. } = e {
            if text == "stop" {
                handle.shutdown();
            } else {
                handle
                    .post(&format!("{name} said {} bytes", text.len()))
                    .unwrap();
            }
        }
    })
    .unwrap();
    room.start().unwrap();
    let mut p = members(room.local_addr(), 2);
    p[0].send("hello");
    p[1].expect("guest1: hello");
    p[0].expect("* guest1 said 5 bytes");
    p[1].expect("* guest1 said 5 bytes");
    p[0].send("stop");
    p[1].expect("guest1: stop");
    assert_eq!(p[1].until_eof(), vec!["* server shutting down".to_string()]);
    assert_eq!(p[0].until_eof(), vec!["* server shutting down".to_string()]);
    // The room finishes closing once the clients have closed their ends.
    drop(p);
    room.shutdown();
    assert_eq!(room.stats().online, 0);
}

#[test]
fn a_panicking_handler_does_not_stop_the_room() {
    let room = Room::bind("127.0.0.1", 0, Config::default()).unwrap();
    room.on_event(|e| {
        if matches!(e, RoomEvent::Message { .. }) {
            panic!("handler bug");
        }
    })
    .unwrap();
    room.start().unwrap();
    let mut p = members(room.local_addr(), 2);
    p[0].send("one");
    p[1].expect("guest1: one");
    p[0].send("two");
    p[1].expect("guest1: two");
}

#[test]
fn huge_timeouts_are_fine() {
    let config = Config::default()
        .with_close_timeout(Duration::MAX)
        .with_idle_timeout(Some(Duration::MAX));
    let room = room(config);
    let mut p = members(room.local_addr(), 2);
    p[0].send("/quit");
    p[0].expect("* bye");
    assert!(p[0].until_eof().is_empty());
    p[1].expect("* guest1 left");
}

#[test]
fn rooms_and_handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Room>();
    send_sync::<tcpchat::RoomHandle>();
    assert_eq!(RoomConfig::default().queue_limit, 256 * 1024);
}

#[test]
fn bad_configurations_are_refused() {
    let e = Room::bind(
        "127.0.0.1",
        0,
        Config::default().with_framing(tcpchat::Framing::Frame),
    )
    .unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = Room::bind("127.0.0.1", 0, RoomConfig::default().with_queue_limit(0)).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let taken = Room::bind("127.0.0.1", 0, Config::default()).unwrap();
    let e = Room::bind("127.0.0.1", taken.local_addr().port(), Config::default()).unwrap_err();
    assert_eq!(e.status(), Status::AddressInUse);
}

/// An `nc` user joins, talks and quits (netcat-openbsd; CI installs it).
#[test]
fn nc_can_join() {
    if std::process::Command::new("nc").arg("-h").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "nc is not installed");
        eprintln!("skipping: nc is not installed (apt-get install netcat-openbsd)");
        return;
    }
    let room = room(Config::default());
    let mut a = Peer::join(room.local_addr());
    let mut nc = std::process::Command::new("nc")
        .args(["-N", "127.0.0.1", &room.local_addr().port().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    a.expect("* guest2 joined");
    let mut stdin = nc.stdin.take().unwrap();
    stdin.write_all(b"hello from nc\n").unwrap();
    a.expect("guest2: hello from nc");
    a.send("hello nc");
    let mut out = BufReader::new(nc.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.ends_with("guest1: hello nc\n") {
        assert!(
            out.read_line(&mut seen).unwrap() > 0,
            "nc output ended: {seen:?}"
        );
    }
    stdin.write_all(b"/quit\n").unwrap();
    drop(stdin);
    a.expect("* guest2 left");
    out.read_to_string(&mut seen).unwrap();
    assert!(nc.wait().unwrap().success());
    assert_eq!(
        seen,
        "* welcome, you are guest2 (commands: /nick NAME, /who, /quit)\n\
         guest1: hello nc\n\
         * bye\n"
    );
}

/// An example program, built by `cargo test` next to this test's executable
/// (`target/<profile>/examples`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --examples`",
        path.display()
    );
    path
}

/// Read all of `r` on a thread; the receiver gets it when `r` ends.
fn read_all_later(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    rx
}

#[test]
fn the_chat_room_example_serves_and_stops_on_sigterm() {
    let mut child = Command::new(example("chat_room"))
        .args(["--port", "0", "--max-clients", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("first stderr line: {first:?}"));
    let log = read_all_later(stderr);
    let transcript = read_all_later(child.stdout.take().unwrap());

    let mut p = members(addr, 2);
    p[0].send("hello room");
    p[1].expect("guest1: hello room");
    // SAFETY: kill with the pid of our own child and a valid signal.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    for q in p.iter_mut() {
        assert_eq!(q.until_eof(), vec!["* server shutting down".to_string()]);
    }
    drop(p);
    let log = log.recv_timeout(LIMIT).expect("chat_room exits");
    assert!(child.wait().unwrap().success(), "{log}");
    assert!(
        log.contains("chat_room: stopped; 2 joined, 0 refused, 1 messages, 0 dropped"),
        "{log}"
    );
    assert_eq!(
        transcript.recv_timeout(LIMIT).unwrap(),
        "guest1: hello room\n"
    );

    let bad = Command::new(example("chat_room"))
        .arg("--frob")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("usage: chat_room"));
}

#[test]
fn relayed_lines_fit_a_client_with_default_settings() {
    // The room's line limit is chat-sized by default; every line it relays,
    // with the longest name and terminal controls escaped, reaches members
    // whose connections have the default settings (a 1 MiB limit).
    let limit = RoomConfig::default().line_limit();
    assert_eq!(limit, 16 * 1024);
    let room = room(Config::default());
    let mut p = members(room.local_addr(), 2);
    let long_name = "n".repeat(32);
    let old = p[0].name.clone();
    p[0].send(&format!("/nick {long_name}"));
    p[0].expect(&format!("* you are now known as {long_name}"));
    p[1].expect(&format!("* {old} is now known as {long_name}"));
    let plain = "x".repeat(limit);
    p[0].send(&plain);
    p[1].expect(&format!("{long_name}: {plain}"));
    p[0].send(&"\u{1b}".repeat(limit));
    p[1].expect(&format!("{long_name}: {}", "\\x1b".repeat(limit)));
    // One byte more closes its sender.
    p[0].send(&"x".repeat(limit + 1));
    assert_eq!(
        p[0].until_eof(),
        vec![format!("error: line longer than {limit} bytes; closing")]
    );
    p[1].expect(&format!("* {long_name} was dropped (line too long)"));
}

#[test]
fn a_line_that_would_be_relayed_over_a_mebibyte_is_refused_and_its_sender_stays() {
    const MIB: usize = 1 << 20;
    // The largest line limit allowed: a line of it from a 32-byte name is
    // relayed at exactly 1 MiB, what a default client takes.
    let max_line = MIB - 34;
    assert!(RoomConfig::default().with_max_line(max_line + 1).validate().is_err());
    let room = room(RoomConfig::default().with_max_line(max_line));
    let mut p = members(room.local_addr(), 2);
    let long_name = "m".repeat(32);
    let old = p[0].name.clone();
    p[0].send(&format!("/nick {long_name}"));
    p[0].expect(&format!("* you are now known as {long_name}"));
    p[1].expect(&format!("* {old} is now known as {long_name}"));
    let plain = "y".repeat(max_line);
    p[0].send(&plain);
    let got = p[1].line();
    assert_eq!(got.len(), MIB);
    assert_eq!(got, format!("{long_name}: {plain}"));
    // Escaping would take it past the limit: refused, to the sender alone.
    p[0].send(&format!("{}\u{1b}", "y".repeat(max_line - 1)));
    p[0].expect(&format!(
        "error: your line would be {} bytes relayed (at most {MIB}); it was not sent",
        MIB + 3
    ));
    p[0].send("still here");
    p[1].expect(&format!("{long_name}: still here"));
    // Posts obey the same bound.
    assert!(room.post(&"\u{1b}".repeat(MIB / 2)).is_err());
}

/// A room of `n` members who have each read their welcome (nothing else).
fn crowd(addr: SocketAddr, n: usize) -> Vec<Peer> {
    (0..n).map(|_| Peer::join(addr)).collect()
}

/// One member writes 256 KiB of two-byte lines in one write into a room of
/// 200: a new client is welcomed, another member's line gets through, and
/// shutdown stops the room, each within a couple of seconds (with the
/// default rate, and with no rate at all, where only the fair rounds stand
/// between the flood and the others).
#[test]
fn a_burst_of_tiny_lines_does_not_freeze_the_room() {
    for rate in [MemberRate::default(), MemberRate::unlimited()] {
        let config = RoomConfig::from(
            Config::default().with_close_timeout(Duration::from_millis(300)),
        )
        .with_rate(rate);
        let room = room(config);
        let addr = room.local_addr();
        let mut peers = crowd(addr, 200);
        let mut flooder = Peer::join_raw(addr);
        let flood = b"a\n".repeat(128 * 1024);
        let flood_name = flooder.name.clone();
        let writer = thread::spawn(move || {
            flooder.send_bytes(&flood);
            flooder
        });
        // The flood is under way once a member sees its first line.
        peers[0].wait_for(&format!("{flood_name}: a"));
        let started = Instant::now();
        let newcomer = Peer::join_within(addr, Duration::from_secs(2));
        let welcomed = started.elapsed();
        let talker_name = peers[1].name.clone();
        peers[1].send("is anyone there?");
        if rate != MemberRate::unlimited() {
            // With no rate the readers here, who do not read the flood, are
            // rightly dropped as too slow: only the welcome is checked.
            let want = format!("{talker_name}: is anyone there?");
            let mut reader = peers.pop().unwrap();
            reader.set_read_timeout(Duration::from_secs(3));
            reader.wait_for(&want);
        }
        let heard = started.elapsed();
        let stopping = Instant::now();
        room.shutdown();
        let stopped = stopping.elapsed();
        drop(writer.join());
        drop(newcomer);
        assert!(welcomed < Duration::from_secs(2), "{rate:?}: welcomed after {welcomed:?}");
        assert!(heard < Duration::from_secs(3), "{rate:?}: a line took {heard:?}");
        assert!(stopped < Duration::from_secs(3), "{rate:?}: shutdown took {stopped:?}");
    }
}

/// One member floods while 20 others read as fast as they can: no reader
/// is dropped, the flooder is throttled (most of its lines never leave the
/// kernel), and, over its rate for the flood timeout, it is dropped with
/// `error: excess flood`.
#[test]
fn a_flooder_is_throttled_then_dropped_and_no_reader_is() {
    let rate = MemberRate {
        flood_timeout: Duration::from_secs(1),
        ..MemberRate::default()
    };
    let (room, rx) = observed_room(RoomConfig::from(Config::default()).with_rate(rate));
    let addr = room.local_addr();
    let mut readers = crowd(addr, 20);
    let mut flooder = Peer::join_raw(addr);
    let flood_name = flooder.name.clone();
    for r in readers.iter_mut() {
        r.wait_for(&format!("* {flood_name} joined"));
    }
    let line = format!("{} flood\n", "x".repeat(90));
    let flood = line.repeat(10_000); // about 1 MB, far over the rate
    flooder.send_bytes(flood.as_bytes());
    let lines = flooder.until_eof();
    assert_eq!(lines.last().map(String::as_str), Some("error: excess flood"), "{lines:?}");
    let dropped = format!("* {flood_name} was dropped (excess flood)");
    let readers: Vec<_> = readers
        .into_iter()
        .map(|mut r| {
            let dropped = dropped.clone();
            thread::spawn(move || {
                let mut flood_lines = 0;
                loop {
                    let l = r.line();
                    if l == dropped {
                        return (flood_lines, r);
                    }
                    assert!(!l.contains("too slow"), "{}: {l}", r.name);
                    flood_lines += 1;
                }
            })
        })
        .collect();
    let mut kept = Vec::new();
    for r in readers {
        let (relayed, r) = r.join().unwrap();
        kept.push(r);
        // The burst and about a second at the rate, never the 10,000.
        assert!((500..=700).contains(&relayed), "{relayed} lines relayed");
    }
    let leaves: Vec<LeaveReason> = rx
        .try_iter()
        .filter_map(|e| match e {
            RoomEvent::Leave { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(leaves, vec![LeaveReason::Flood]);
    assert_eq!(room.stats().dropped, 1);
    assert_eq!(room.stats().online, 20);
}

/// `/who` counts against the same rate: 10,000 of them in one write get a
/// bounded number of answers, and another member's line arrives promptly.
#[test]
fn who_spam_is_throttled() {
    let room = room(Config::default().with_close_timeout(Duration::from_millis(300)));
    let addr = room.local_addr();
    let mut peers = crowd(addr, 50);
    let mut spammer = Peer::join_raw(addr);
    spammer.send_bytes(&b"/who\n".repeat(10_000));
    let started = Instant::now();
    spammer.wait_for("* 51 online: guest1, guest2, guest3, guest4, guest5, guest6, guest7, guest8, guest9, guest10, guest11, guest12, guest13, guest14, guest15, guest16, guest17, guest18, guest19, guest20, guest21, guest22, guest23, guest24, guest25, guest26, guest27, guest28, guest29, guest30, guest31, guest32, guest33, guest34, guest35, guest36, guest37, guest38, guest39, guest40, guest41, guest42, guest43, guest44, guest45, guest46, guest47, guest48, guest49, guest50, guest51");
    let talker = peers[0].name.clone();
    peers[0].send("hello through the spam");
    let mut reader = peers.pop().unwrap();
    reader.wait_for(&format!("* {} joined", spammer.name));
    reader.expect(&format!("{talker}: hello through the spam"));
    let heard = started.elapsed();
    room.shutdown();
    let elapsed = started.elapsed();
    let answers = 1 + spammer
        .until_eof()
        .iter()
        .filter(|l| l.starts_with("* 51 online"))
        .count();
    assert!(heard < Duration::from_secs(2), "the line took {heard:?}");
    let bound = 500.0 + 60.0 * elapsed.as_secs_f64();
    assert!((answers as f64) <= bound, "{answers} answers in {elapsed:?}");
    assert!(answers < 10_000);
}
