//! The pollable descriptor and the non-blocking calls, for programs that run
//! their own event loop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::RawFd;
use std::time::Duration;

use tcpchat::{Config, Error, Framing, Server};

/// Whether `fd` is readable within `ms` milliseconds (0 = right now).
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    assert!(r >= 0, "poll failed");
    r == 1
}

const WAIT_MS: i32 = 10_000;

fn server_and_peer(config: Config) -> (tcpchat::Conn, TcpStream) {
    let server = Server::bind("127.0.0.1", 0, config).unwrap();
    let peer = TcpStream::connect(server.local_addr()).unwrap();
    let conn = server.accept_timeout(Duration::from_secs(10)).unwrap();
    (conn, peer)
}

#[test]
fn the_descriptor_is_readable_exactly_while_a_message_can_be_taken() {
    let (mut conn, mut peer) = server_and_peer(Config::default());
    let fd = conn.poll_fd().unwrap();
    assert!(!readable(fd, 0), "nothing sent yet");
    assert!(matches!(conn.try_recv(), Err(Error::WouldBlock(_))));

    // Two messages in one segment: after the first is taken the socket is
    // empty, but the second is in our buffer, so the fd must stay readable.
    peer.write_all(b"one\ntwo\n").unwrap();
    assert!(readable(fd, WAIT_MS));
    assert_eq!(conn.try_recv().unwrap().unwrap(), b"one");
    assert!(readable(fd, 0), "the second message is buffered");
    assert_eq!(conn.try_recv().unwrap().unwrap(), b"two");
    assert!(!readable(fd, 0), "nothing left");
    assert!(matches!(conn.try_recv(), Err(Error::WouldBlock(_))));

    // Part of a message: readable, then WouldBlock, then not readable until
    // the rest arrives.
    peer.write_all(b"hel").unwrap();
    assert!(readable(fd, WAIT_MS));
    assert!(matches!(conn.try_recv(), Err(Error::WouldBlock(_))));
    assert!(!readable(fd, 0));
    peer.write_all(b"lo\n").unwrap();
    assert!(readable(fd, WAIT_MS));
    let mut small = [0u8; 2];
    assert!(matches!(conn.try_recv_into(&mut small), Err(Error::BufferTooSmall { needed: 5, .. })));
    assert!(readable(fd, 0), "a message refused for a small buffer stays pending");
    let mut buf = [0u8; 16];
    assert_eq!(conn.try_recv_into(&mut buf).unwrap(), Some(5));
    assert_eq!(&buf[..5], b"hello");

    // End of stream: readable, and try_recv says the peer closed.
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(readable(fd, WAIT_MS));
    assert_eq!(conn.try_recv().unwrap(), None);
}

#[test]
fn blocking_receives_keep_the_descriptor_in_step() {
    let (mut conn, mut peer) = server_and_peer(Config::default().with_framing(Framing::Frame));
    let fd = conn.poll_fd().unwrap();
    let mut wire = Vec::new();
    for m in [&b"a"[..], b"bb", b"ccc"] {
        wire.extend_from_slice(&(m.len() as u32).to_be_bytes());
        wire.extend_from_slice(m);
    }
    peer.write_all(&wire).unwrap();
    assert_eq!(conn.recv().unwrap().unwrap(), b"a");
    assert!(readable(fd, 0));
    assert_eq!(conn.recv().unwrap().unwrap(), b"bb");
    assert_eq!(conn.try_recv().unwrap().unwrap(), b"ccc");
    assert!(!readable(fd, 0));
}

#[test]
fn try_send_queues_what_the_socket_cannot_take_and_the_fd_reports_progress() {
    let config = Config::default().with_framing(Framing::Frame);
    let (mut conn, mut peer) = server_and_peer(config);
    let fd = conn.poll_fd().unwrap();
    let msg = vec![7u8; 64 * 1024];
    // Nobody reads: the socket buffers fill, then try_send refuses.
    let mut accepted = 0usize;
    loop {
        match conn.try_send(&msg) {
            Ok(()) => accepted += 1,
            Err(Error::WouldBlock(_)) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted < 10_000, "the socket never filled");
    }
    assert!(conn.queued() > 0);
    // The peer drains everything on another thread; the fd becomes readable
    // (writable socket, output queued) and try_flush finishes the job.
    let total = accepted * (msg.len() + 4);
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while got < total {
            let n = peer.read(&mut buf).unwrap();
            assert!(n > 0, "stream ended after {got} of {total} bytes");
            got += n;
        }
        (got, peer)
    });
    loop {
        assert!(readable(fd, WAIT_MS), "no progress reported");
        match conn.try_flush() {
            Ok(()) => break,
            Err(Error::WouldBlock(_)) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(conn.queued(), 0);
    let (got, peer) = reader.join().unwrap();
    assert_eq!(got, total);
    assert!(!readable(fd, 0), "nothing queued, nothing received: not readable");
    // The peer leaving makes it readable again: end of stream to report.
    drop(peer);
    assert!(readable(fd, WAIT_MS));
    assert_eq!(conn.try_recv().unwrap(), None);
}

#[test]
fn try_accept_and_the_listener_descriptor() {
    let server = Server::bind("127.0.0.1", 0, Config::default()).unwrap();
    assert!(matches!(server.try_accept(), Err(Error::WouldBlock(_))));
    assert!(!readable(server.poll_fd(), 0));
    let client = TcpStream::connect(server.local_addr()).unwrap();
    assert!(readable(server.poll_fd(), WAIT_MS));
    let conn = server.try_accept().unwrap();
    assert_eq!(conn.peer_addr(), client.local_addr().unwrap());
    assert!(matches!(server.try_accept(), Err(Error::WouldBlock(_))));
    drop(client); // first, so that the connection's graceful close need not wait

}
