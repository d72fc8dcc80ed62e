//! Connections, clients and servers: framing on a real socket, timeouts,
//! cancellation, hostile input, graceful close, addresses and errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{config, garbage, pair, raw_socket, read_to_end, server, spawn, FRAMINGS, LIMIT};
use tcpchat::{Config, Error, Framing, Server, Status};

/// Close two ends living on the same thread without either graceful close
/// waiting for the other.
fn close_both(a: tcpchat::Conn, b: tcpchat::Conn) {
    let t = spawn(move || a.close());
    b.close().unwrap();
    t.join().unwrap().unwrap();
}

#[test]
fn messages_cross_in_every_framing() {
    for framing in FRAMINGS {
        let (mut a, mut b) = pair(config(framing));
        assert_eq!(a.framing(), framing);
        assert_eq!(a.peer_addr(), b.local_addr());
        assert_eq!(b.peer_addr(), a.local_addr());
        for msg in ["hello", "wörld ✓", "x"] {
            b.send(msg.as_bytes()).unwrap();
            assert_eq!(a.recv().unwrap().unwrap(), msg.as_bytes(), "{framing}");
            a.send(msg.as_bytes()).unwrap();
            assert_eq!(b.recv().unwrap().unwrap(), msg.as_bytes(), "{framing}");
        }
        close_both(a, b);
    }
}

#[test]
fn line_framing_strips_crlf_and_keeps_empty_lines() {
    let srv = server(config(Framing::Line));
    let mut sock = raw_socket(&srv);
    let mut conn = srv.accept_timeout(LIMIT).unwrap();
    sock.write_all(b"dos\r\nunix\n\nlast without newline")
        .unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    while let Some(m) = conn.recv().unwrap() {
        got.push(String::from_utf8(m).unwrap());
    }
    assert_eq!(got, ["dos", "unix", "", "last without newline"]);
    assert!(conn.peer_closed());
    // Our messages reach the socket with a newline.
    conn.send(b"").unwrap();
    conn.send(b"ok").unwrap();
    conn.close().unwrap();
    assert_eq!(read_to_end(&mut sock), b"\nok\n");
}

#[test]
fn frame_framing_is_binary_safe_and_big_endian() {
    let srv = server(config(Framing::Frame));
    let mut sock = raw_socket(&srv);
    let mut conn = srv.accept_timeout(LIMIT).unwrap();
    conn.send(b"\0\n\xff").unwrap();
    conn.send(b"").unwrap();
    let mut wire = [0u8; 11];
    sock.read_exact(&mut wire).unwrap();
    assert_eq!(&wire, b"\0\0\0\x03\0\n\xff\0\0\0\0");
    // A frame written one byte at a time still arrives whole.
    for b in b"\0\0\0\x02hi" {
        sock.write_all(&[*b]).unwrap();
    }
    assert_eq!(conn.recv().unwrap().unwrap(), b"hi");
    drop(sock);
    assert_eq!(conn.recv().unwrap(), None);
}

#[test]
fn raw_recv_returns_what_one_read_returns_up_to_the_buffer_size() {
    let cfg = config(Framing::Raw).with_raw_buffer_size(4);
    let srv = server(cfg);
    let mut sock = raw_socket(&srv);
    let mut conn = srv.accept_timeout(LIMIT).unwrap();
    sock.write_all(b"abcdefghij").unwrap();
    drop(sock);
    let mut got = Vec::new();
    while let Some(m) = conn.recv().unwrap() {
        assert!(
            !m.is_empty() && m.len() <= 4,
            "a raw message of {} bytes",
            m.len()
        );
        got.extend(m);
    }
    assert_eq!(got, b"abcdefghij");
}

#[test]
fn line_refuses_to_send_a_newline_and_nothing_is_sent() {
    let (mut a, mut b) = pair(config(Framing::Line));
    let e = b.send(b"two\nlines").unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{e}");
    assert!(e.to_string().contains("newline"), "{e}");
    b.send(b"fine").unwrap();
    assert_eq!(a.recv().unwrap().unwrap(), b"fine");
    close_both(a, b);
}

#[test]
fn oversize_messages_are_refused_on_send() {
    for framing in [Framing::Line, Framing::Frame] {
        let (mut a, mut b) = pair(config(framing).with_max_message_size(8));
        let e = b.send(b"123456789").unwrap_err();
        assert_eq!(e.status(), Status::MessageTooLarge, "{framing}: {e}");
        b.send(b"12345678").unwrap();
        assert_eq!(a.recv().unwrap().unwrap(), b"12345678");
        close_both(a, b);
    }
}

#[test]
fn oversize_incoming_line_closes_the_connection() {
    let srv = server(config(Framing::Line).with_max_message_size(100));
    let mut sock = raw_socket(&srv);
    let mut conn = srv.accept_timeout(LIMIT).unwrap();
    sock.write_all(b"short\n").unwrap();
    sock.write_all(&[b'a'; 1000]).unwrap();
    assert_eq!(conn.recv().unwrap().unwrap(), b"short");
    let e = conn.recv().unwrap_err();
    assert_eq!(e.status(), Status::MessageTooLarge, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("100") && text.contains(&sock.local_addr().unwrap().to_string()),
        "{text}"
    );
    // The connection is closed by this side: further use fails (saying it
    // was closed here, not by the peer), and the peer sees the end.
    assert_eq!(conn.recv().unwrap_err().status(), Status::LocallyClosed);
    assert_eq!(conn.send(b"x").unwrap_err().status(), Status::LocallyClosed);
    assert!(read_to_end(&mut sock).is_empty());
}

#[test]
fn oversize_incoming_frame_is_refused_from_its_header() {
    let srv = server(config(Framing::Frame).with_max_message_size(1000));
    let mut sock = raw_socket(&srv);
    let mut conn = srv.accept_timeout(LIMIT).unwrap();
    // Only the header of a 1001-byte frame: the refusal cannot wait for the body.
    sock.write_all(&1001u32.to_be_bytes()).unwrap();
    let e = conn.recv().unwrap_err();
    assert_eq!(e.status(), Status::MessageTooLarge, "{e}");
    assert!(e.to_string().contains("1001"), "{e}");
    assert!(read_to_end(&mut sock).is_empty());
}

#[test]
fn a_4_gib_frame_length_is_refused_at_once() {
    let srv = server(config(Framing::Frame));
    let mut sock = raw_socket(&srv);
    let mut conn = srv.accept_timeout(LIMIT).unwrap();
    sock.write_all(&[0xff, 0xff, 0xff, 0xff, b'x']).unwrap();
    let started = Instant::now();
    let e = conn.recv().unwrap_err();
    assert_eq!(e.status(), Status::MessageTooLarge, "{e}");
    assert!(e.to_string().contains("4294967295"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        read_to_end(&mut sock).is_empty(),
        "the connection is closed"
    );
}

#[test]
fn a_frame_cut_short_by_the_end_of_the_stream_is_a_protocol_error() {
    let srv = server(config(Framing::Frame));
    let mut sock = raw_socket(&srv);
    let mut conn = srv.accept_timeout(LIMIT).unwrap();
    sock.write_all(b"\0\0\0\x05abc").unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let e = conn.recv().unwrap_err();
    assert_eq!(e.status(), Status::Protocol, "{e}");
    assert!(e.to_string().contains("3 of 5"), "{e}");
}

#[test]
fn garbage_input_never_panics() {
    for framing in FRAMINGS {
        for seed in 1..=20u64 {
            let cfg = config(framing).with_max_message_size(4096);
            let srv = server(cfg);
            let mut sock = raw_socket(&srv);
            let mut conn = srv.accept_timeout(LIMIT).unwrap();
            let junk = garbage(20_000, seed);
            let writer = spawn(move || {
                // The server may close on us mid-write; that is fine.
                let _ = sock.write_all(&junk);
                let _ = sock.shutdown(std::net::Shutdown::Write);
                read_to_end(&mut sock);
            });
            let mut total = 0usize;
            let outcome = loop {
                match conn.recv() {
                    Ok(Some(m)) => total += m.len(),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e.status()),
                }
            };
            match (framing, outcome) {
                (_, Ok(())) => assert!(total <= 20_000),
                (Framing::Raw, Err(s)) => panic!("raw framing accepts any bytes, got {s:?}"),
                (_, Err(Status::MessageTooLarge | Status::Protocol)) => {}
                (_, Err(s)) => panic!("{framing} seed {seed}: unexpected {s:?}"),
            }
            drop(conn);
            writer.join().unwrap();
        }
    }
}

#[test]
fn a_read_timeout_leaves_the_connection_usable() {
    let cfg = config(Framing::Line).with_read_timeout(Some(Duration::from_millis(50)));
    let (mut a, mut b) = pair(cfg);
    let started = Instant::now();
    let e = a.recv().unwrap_err();
    assert_eq!(e.status(), Status::Timeout, "{e}");
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(e.to_string().contains("timed out"), "{e}");
    // Again, and then a message arrives as if nothing happened.
    assert_eq!(a.recv().unwrap_err().status(), Status::Timeout);
    b.send(b"late").unwrap();
    assert_eq!(a.recv().unwrap().unwrap(), b"late");
    a.send(b"reply").unwrap();
    assert_eq!(b.recv().unwrap().unwrap(), b"reply");
    a.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(a.read_timeout(), Some(LIMIT));
    assert!(a.set_read_timeout(Some(Duration::ZERO)).is_err());
    close_both(a, b);
}

#[test]
fn a_partial_line_survives_a_timeout() {
    let cfg = config(Framing::Line).with_read_timeout(Some(Duration::from_millis(50)));
    let srv = server(cfg);
    let mut sock = raw_socket(&srv);
    let mut conn = srv.accept_timeout(LIMIT).unwrap();
    sock.write_all(b"hal").unwrap();
    assert_eq!(conn.recv().unwrap_err().status(), Status::Timeout);
    sock.write_all(b"f\n").unwrap();
    conn.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(conn.recv().unwrap().unwrap(), b"half");
    drop(sock);
    assert_eq!(conn.recv().unwrap(), None);
}

#[test]
fn a_canceller_stops_a_blocked_recv_from_another_thread() {
    // The read timeout only bounds the test if cancelling fails.
    let (mut a, b) = pair(config(Framing::Line));
    let cancel = a.canceller();
    let (ready, waiting) = mpsc::channel();
    let t = spawn(move || {
        ready.send(()).unwrap();
        let r = a.recv();
        (r, a)
    });
    waiting.recv().unwrap();
    let started = Instant::now();
    cancel.cancel();
    let (r, mut a) = t.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_eq!(r.unwrap_err().status(), Status::Cancelled);
    assert!(cancel.is_cancelled());
    // Sticky: the connection's blocking calls keep failing, and close does not wait.
    assert_eq!(a.recv().unwrap_err().status(), Status::Cancelled);
    let started = Instant::now();
    a.close().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(b);
}

#[test]
fn recv_into_a_small_buffer_reports_the_size_needed_and_keeps_the_message() {
    for framing in [Framing::Line, Framing::Frame] {
        let (mut a, mut b) = pair(config(framing));
        b.send(b"0123456789").unwrap();
        b.send(b"next").unwrap();
        let mut small = [0u8; 4];
        match a.recv_into(&mut small) {
            Err(Error::BufferTooSmall { needed, capacity }) => {
                assert_eq!((needed, capacity), (10, 4));
            }
            other => panic!("{framing}: expected BufferTooSmall, got {other:?}"),
        }
        let mut big = [0u8; 64];
        assert_eq!(a.recv_into(&mut big).unwrap(), Some(10));
        assert_eq!(&big[..10], b"0123456789");
        assert_eq!(a.recv_into(&mut small).unwrap(), Some(4));
        assert_eq!(&small, b"next");
        b.shutdown_write().unwrap();
        assert_eq!(a.recv_into(&mut big).unwrap(), None);
        close_both(a, b);
    }
}

#[test]
fn send_many_sends_all_in_order_or_nothing() {
    for framing in [Framing::Line, Framing::Frame] {
        let (mut a, mut b) = pair(config(framing));
        let msgs: Vec<String> = (0..5000).map(|i| format!("message {i}")).collect();
        let reader = spawn(move || {
            let mut got = Vec::new();
            while let Some(m) = a.recv().unwrap() {
                got.push(String::from_utf8(m).unwrap());
            }
            got
        });
        b.send_many(&msgs).unwrap();
        // Refused as a whole: the line with a newline (or the frame over the limit).
        let bad: Vec<Vec<u8>> = match framing {
            Framing::Line => vec![b"ok".to_vec(), b"not\nok".to_vec()],
            _ => vec![b"ok".to_vec(), vec![0; 2 << 20]],
        };
        assert!(b.send_many(&bad).is_err());
        assert_eq!(b.queued(), 0);
        b.send_many(["last"]).unwrap();
        b.close().unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 5001, "{framing}");
        assert_eq!(got[..5000], msgs[..], "{framing}");
        assert_eq!(got[5000], "last");
    }
}

#[test]
fn graceful_close_delivers_everything_sent_before_it() {
    // The closing side has unread data from its peer when it closes. A plain
    // close would then send RST and destroy the 4 MiB still in flight; the
    // graceful close drains the unread bytes first, so all of it arrives.
    // Raw sends obey the message-size limit too: raise it for 4 MiB.
    let srv = server(config(Framing::Raw).with_raw_buffer_size(1).with_max_message_size(8 << 20));
    let mut b =
        tcpchat::connect("127.0.0.1", srv.local_addr().port(), &config(Framing::Raw)).unwrap();
    let mut a = srv.accept_timeout(LIMIT).unwrap();
    b.send(b"xy").unwrap();
    // One-byte reads: "x" is taken, "y" stays unread in the kernel's buffer.
    assert_eq!(a.recv().unwrap().unwrap(), b"x");
    let payload = garbage(4 << 20, 7);
    let expected = payload.clone();
    let closer = spawn(move || {
        a.send(&payload).unwrap();
        a.close().unwrap();
    });
    let mut got = Vec::with_capacity(expected.len());
    loop {
        match b.recv() {
            Ok(Some(m)) => got.extend_from_slice(&m),
            Ok(None) => break,
            Err(e) => panic!("{e} after {} of {} bytes", got.len(), expected.len()),
        }
    }
    assert!(
        got == expected,
        "got {} bytes of {}",
        got.len(),
        expected.len()
    );
    b.close().unwrap();
    closer.join().unwrap();
}

#[test]
fn drop_closes_gracefully_too() {
    let (a, mut b) = pair(config(Framing::Line));
    let t = spawn(move || {
        let mut a = a;
        a.send_many((0..1000).map(|i| format!("{i}"))).unwrap();
        // dropped here
    });
    let mut n = 0;
    while let Some(m) = b.recv().unwrap() {
        assert_eq!(m, format!("{n}").as_bytes());
        n += 1;
    }
    assert_eq!(n, 1000);
    drop(b);
    t.join().unwrap();
}

#[test]
fn a_closed_connection_refuses_further_use() {
    let (mut a, mut b) = pair(config(Framing::Line));
    a.shutdown_write().unwrap();
    assert_eq!(a.send(b"x").unwrap_err().status(), Status::LocallyClosed);
    assert_eq!(b.recv().unwrap(), None);
    b.send(b"still talking").unwrap();
    assert_eq!(a.recv().unwrap().unwrap(), b"still talking");
    close_both(a, b);
}

#[test]
fn shutdown_wakes_a_blocked_accept_promptly() {
    let srv = std::sync::Arc::new(server(config(Framing::Line)));
    let stop = srv.shutdown_handle();
    let (ready, waiting) = mpsc::channel();
    let s = srv.clone();
    let t = spawn(move || {
        ready.send(()).unwrap();
        s.accept_timeout(LIMIT)
    });
    waiting.recv().unwrap();
    let started = Instant::now();
    stop.shutdown();
    let r = t.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "accept took {:?} to notice",
        started.elapsed()
    );
    assert_eq!(r.unwrap_err().status(), Status::Cancelled);
    assert!(stop.is_shut_down());
    assert_eq!(
        srv.accept_timeout(LIMIT).unwrap_err().status(),
        Status::Cancelled
    );
}

#[test]
fn server_shutdown_cancels_its_connections() {
    let srv = server(config(Framing::Line));
    let b = tcpchat::connect("127.0.0.1", srv.local_addr().port(), &config(Framing::Line)).unwrap();
    let mut a = srv.accept_timeout(LIMIT).unwrap();
    let stop = srv.shutdown_handle();
    let t = spawn(move || a.recv().map(|_| ()));
    stop.shutdown();
    assert_eq!(t.join().unwrap().unwrap_err().status(), Status::Cancelled);
    drop(b);
}

#[test]
fn accept_timeout_times_out() {
    let srv = server(config(Framing::Line));
    let e = srv.accept_timeout(Duration::from_millis(30)).unwrap_err();
    assert_eq!(e.status(), Status::Timeout, "{e}");
}

#[test]
fn binding_a_port_in_use_is_address_in_use() {
    let srv = server(Config::default());
    let e = Server::bind("127.0.0.1", srv.local_addr().port(), Config::default()).unwrap_err();
    assert_eq!(e.status(), Status::AddressInUse, "{e}");
    assert!(e.to_string().contains(&srv.local_addr().to_string()), "{e}");
}

#[test]
fn connecting_where_nothing_listens_is_refused() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = tcpchat::connect("127.0.0.1", port, &Config::default()).unwrap_err();
    assert_eq!(e.status(), Status::ConnectionRefused, "{e}");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
}

#[test]
fn malformed_hosts_are_refused_before_any_lookup() {
    // None of these reaches the resolver (no test may cause a DNS lookup):
    // each is refused by the check that runs first.
    let long = "a".repeat(100_000);
    for host in ["127.0.0.1\n", "127.0.0.1 ", " localhost", "local\thost", "a\0b", &long, ""] {
        let e = tcpchat::connect(host, 80, &Config::default()).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument, "{host:?}: {e}");
        let e2 = tcpchat::Server::bind(host, 0, Config::default()).unwrap_err();
        assert_eq!(e2.status(), Status::InvalidArgument, "{host:?}: {e2}");
    }
    let e = tcpchat::connect(&long, 80, &Config::default()).unwrap_err();
    assert!(e.to_string().len() < 300, "the message quotes all of a 100 KB host: {} bytes", e.to_string().len());
    assert!(e.to_string().contains("100000 bytes"), "{e}");
    let e = tcpchat::connect(&"a".repeat(254), 80, &Config::default()).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "{e}");
}

#[test]
fn bad_arguments_are_invalid() {
    let e = tcpchat::connect("127.0.0.1", 0, &Config::default()).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = tcpchat::connect("", 80, &Config::default()).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = Server::bind("127.0.0.1", 0, Config::default().with_max_message_size(0)).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
}

#[test]
fn ipv6_loopback_works_when_the_machine_has_it() {
    let srv = match Server::bind("::1", 0, config(Framing::Line)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: no IPv6 loopback here ({e})");
            return;
        }
    };
    assert!(srv.local_addr().is_ipv6());
    let port = srv.local_addr().port();
    for host in ["::1", "[::1]"] {
        let mut c = tcpchat::connect(host, port, &config(Framing::Line)).unwrap();
        let mut a = srv.accept_timeout(LIMIT).unwrap();
        assert!(a.peer_addr().is_ipv6());
        c.send(host.as_bytes()).unwrap();
        assert_eq!(a.recv().unwrap().unwrap(), host.as_bytes());
        close_both(a, c);
    }
}
