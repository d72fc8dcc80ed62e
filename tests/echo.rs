//! The echo service: many clients at once, limits, half-close, streaming,
//! hostile clients, shutdown.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, config, garbage, raw_socket, read_to_end, server, spawn, Task};
use tcpchat::echo::server_full_message;
use tcpchat::{Config, EchoStats, Framing, Result, Server};

/// Start an echo service on its own thread.
fn start(config: Config) -> (Arc<Server>, Task<Result<EchoStats>>) {
    let srv = Arc::new(server(config));
    let s = srv.clone();
    (srv, spawn(move || s.serve_echo()))
}

fn stop(srv: &Server, service: Task<Result<EchoStats>>) -> EchoStats {
    let started = Instant::now();
    srv.shutdown();
    let stats = service.join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopping took {:?}",
        started.elapsed()
    );
    stats
}

/// Check that the service still echoes for a fresh client.
fn still_serves(srv: &Server, cfg: &Config) {
    let mut c = client(srv, cfg);
    c.send(b"still there?").unwrap();
    assert_eq!(c.recv().unwrap().unwrap(), b"still there?");
    c.close().unwrap();
}

#[test]
fn many_clients_at_once_get_every_message_back_once_and_in_order() {
    const CLIENTS: usize = 50;
    const MESSAGES: usize = 200;
    for framing in [Framing::Line, Framing::Frame] {
        let cfg = config(framing);
        let (srv, service) = start(cfg.clone());
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let mut conn = client(&srv, &cfg);
                spawn(move || {
                    // Batches of 20 in flight, then read them back.
                    for batch in 0..MESSAGES / 20 {
                        let msgs: Vec<String> = (batch * 20..batch * 20 + 20)
                            .map(|m| format!("client {c} message {m}"))
                            .collect();
                        conn.send_many(&msgs).unwrap();
                        for want in &msgs {
                            assert_eq!(conn.recv().unwrap().unwrap(), want.as_bytes());
                        }
                    }
                    conn.shutdown_write().unwrap();
                    assert_eq!(conn.recv().unwrap(), None, "nothing more, nothing twice");
                    conn.close().unwrap();
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let stats = stop(&srv, service);
        assert_eq!(stats.clients, CLIENTS as u64, "{framing}");
        assert_eq!(stats.messages, (CLIENTS * MESSAGES) as u64, "{framing}");
        assert_eq!((stats.refused, stats.errors), (0, 0), "{framing}");
    }
}

#[test]
fn a_client_over_the_limit_is_told_the_server_is_full() {
    for framing in [Framing::Line, Framing::Frame] {
        let cfg = config(framing).with_max_clients(2);
        let (srv, service) = start(cfg.clone());
        let mut a = client(&srv, &cfg);
        let mut b = client(&srv, &cfg);
        // An echo from each proves both are being served.
        for c in [&mut a, &mut b] {
            c.send(b"hi").unwrap();
            assert_eq!(c.recv().unwrap().unwrap(), b"hi");
        }
        let mut extra = client(&srv, &cfg);
        let notice = extra.recv().unwrap().unwrap();
        assert_eq!(notice, server_full_message(2).as_bytes(), "{framing}");
        assert!(String::from_utf8_lossy(&notice).contains("server full"));
        assert_eq!(extra.recv().unwrap(), None, "{framing}: then closed");
        extra.close().unwrap();
        // The others go on as if nothing happened.
        for c in [&mut a, &mut b] {
            c.send(b"still here").unwrap();
            assert_eq!(c.recv().unwrap().unwrap(), b"still here");
        }
        a.close().unwrap();
        b.close().unwrap();
        let stats = stop(&srv, service);
        assert_eq!((stats.clients, stats.refused), (2, 1), "{framing}");
    }
}

#[test]
fn a_half_closed_client_gets_every_echo_then_the_end() {
    let cfg = config(Framing::Line);
    let (srv, service) = start(cfg.clone());
    let mut c = client(&srv, &cfg);
    let msgs: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
    c.send_many(&msgs).unwrap();
    c.shutdown_write().unwrap();
    for want in &msgs {
        assert_eq!(c.recv().unwrap().unwrap(), want.as_bytes());
    }
    assert_eq!(c.recv().unwrap(), None);
    c.close().unwrap();
    assert_eq!(stop(&srv, service).messages, 1000);
}

#[test]
fn raw_echo_streams_8_mib() {
    let cfg = config(Framing::Raw);
    let (srv, service) = start(cfg.clone());
    let mut sock = raw_socket(&srv);
    let payload = garbage(8 << 20, 42);
    let mut writer = sock.try_clone().unwrap();
    let sent = payload.clone();
    // The writer runs on its own thread: the echo comes back while we send.
    let w = spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_end(&mut sock);
    w.join().unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "the echo differs from what was sent");
    drop(sock);
    let stats = stop(&srv, service);
    assert_eq!(stats.errors, 0);
}

#[test]
fn oversize_messages_drop_only_their_sender() {
    for (framing, wire) in [
        (Framing::Line, vec![b'x'; 5000]),
        (Framing::Frame, 5000u32.to_be_bytes().to_vec()),
        (Framing::Frame, vec![0xff; 4]),
    ] {
        let cfg = config(framing).with_max_message_size(1024);
        let (srv, service) = start(cfg.clone());
        let mut bystander = client(&srv, &cfg);
        bystander.send(b"before").unwrap();
        assert_eq!(bystander.recv().unwrap().unwrap(), b"before");

        let mut bad = raw_socket(&srv);
        bad.write_all(&wire).unwrap();
        assert!(
            read_to_end(&mut bad).is_empty(),
            "{framing}: the server closes it, echoing nothing"
        );

        bystander.send(b"after").unwrap();
        assert_eq!(bystander.recv().unwrap().unwrap(), b"after");
        still_serves(&srv, &cfg);
        bystander.close().unwrap();
        let stats = stop(&srv, service);
        assert_eq!(stats.errors, 1, "{framing}");
    }
}

#[test]
fn garbage_from_one_client_harms_nobody_else() {
    for framing in [Framing::Line, Framing::Frame] {
        let cfg = config(framing).with_max_message_size(4096);
        let (srv, service) = start(cfg.clone());
        for seed in 1..=10 {
            let mut bad = raw_socket(&srv);
            let _ = bad.write_all(&garbage(50_000, seed));
            let _ = bad.shutdown(Shutdown::Write);
            // Whatever comes back is an echo of what went in; then the end.
            let _ = read_to_end(&mut bad);
        }
        still_serves(&srv, &cfg);
        stop(&srv, service);
    }
}

#[test]
fn shutdown_stops_the_service_with_idle_clients_connected() {
    let cfg = config(Framing::Line);
    let (srv, service) = start(cfg.clone());
    let mut idle: Vec<_> = (0..5).map(|_| client(&srv, &cfg)).collect();
    for c in &mut idle {
        c.send(b"ping").unwrap();
        assert_eq!(c.recv().unwrap().unwrap(), b"ping");
    }
    let stats = stop(&srv, service);
    assert_eq!(stats.clients, 5);
    // Each client sees the end of the stream.
    for mut c in idle {
        assert_eq!(c.recv().unwrap(), None);
    }
}

#[test]
fn an_idle_client_is_dropped_after_the_idle_timeout() {
    let cfg = config(Framing::Line).with_idle_timeout(Some(Duration::from_millis(100)));
    let (srv, service) = start(cfg.clone());
    let mut sleepy = raw_socket(&srv);
    sleepy.write_all(b"half a li").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        sleepy.read(&mut buf).unwrap_or(0),
        0,
        "closed without an echo"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    still_serves(&srv, &cfg);
    assert_eq!(stop(&srv, service).errors, 1);
}

#[test]
fn good_messages_sent_with_an_oversize_one_are_still_echoed() {
    let cfg = config(Framing::Frame).with_max_message_size(100);
    let (srv, service) = start(cfg.clone());
    let mut s = raw_socket(&srv);
    // Three good frames and a header promising too much, in one write: all
    // arrive in one read, so the echoes are queued when the bad header is
    // seen. They must go out before the connection is closed.
    let mut wire = Vec::new();
    for m in [&b"one"[..], b"two", b"three"] {
        wire.extend_from_slice(&(m.len() as u32).to_be_bytes());
        wire.extend_from_slice(m);
    }
    wire.extend_from_slice(&1000u32.to_be_bytes());
    s.write_all(&wire).unwrap();
    let got = read_to_end(&mut s);
    assert_eq!(got, wire[..wire.len() - 4], "the three echoes, then the close");
    still_serves(&srv, &cfg);
    let stats = stop(&srv, service);
    assert_eq!(stats.errors, 1);
}

#[test]
fn a_connect_storm_over_the_limit_is_served_and_refused_without_waiting() {
    // 1,020 clients connect at once to a service for 1,000: exactly 1,000
    // are served and 20 get the notice and the close; none is left waiting,
    // since refusing never waits on the refused. In every framing.
    const MAX: usize = 1000;
    const STORM: usize = 1020;
    for framing in [Framing::Raw, Framing::Line, Framing::Frame] {
        let cfg = config(framing)
            .with_max_clients(MAX)
            .with_backlog(2048)
            .with_read_timeout(Some(Duration::from_secs(20)));
        let (srv, service) = start(cfg.clone());
        let started = Instant::now();
        let mut conns: Vec<_> = (0..STORM).map(|_| client(&srv, &cfg)).collect();
        let notice = server_full_message(MAX);
        let (mut served, mut refused) = (0, 0);
        for c in conns.iter_mut() {
            // A refused client may see its send fail: the service closed it.
            let _ = c.send(b"ping");
            match c.recv() {
                Ok(Some(m)) if m == b"ping" => served += 1,
                Ok(Some(m)) => {
                    // In raw framing the notice is a line and may come in pieces.
                    let mut m = m;
                    while !m.ends_with(b"\n") && framing == Framing::Raw {
                        match c.recv() {
                            Ok(Some(more)) => m.extend_from_slice(&more),
                            _ => break,
                        }
                    }
                    let text = String::from_utf8_lossy(&m);
                    assert_eq!(text.trim_end(), notice, "{framing}");
                    assert!(matches!(c.recv(), Ok(None) | Err(_)), "{framing}: then closed");
                    refused += 1;
                }
                other => panic!("{framing}: neither served nor refused: {other:?}"),
            }
        }
        assert_eq!((served, refused), (MAX, STORM - MAX), "{framing}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{framing}: the storm took {:?}",
            started.elapsed()
        );
        drop(conns);
        let stats = stop(&srv, service);
        assert_eq!((stats.clients, stats.refused), (MAX as u64, (STORM - MAX) as u64), "{framing}");
    }
}
