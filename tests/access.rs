//! Access control: allow and deny lists, and the per-address limit.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use tcpchat::{access, Config, Error, Server};

const WAIT: Duration = Duration::from_secs(10);

/// Connect a plain socket while `server` accepts, and report whether the
/// server closed it without sending anything (a refusal) and without
/// returning it from accept.
fn refused(server: &Server) -> bool {
    let port = server.local_addr().port();
    std::thread::scope(|scope| {
        let accepted = scope.spawn(|| server.accept_timeout(Duration::from_millis(1000)));
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 16];
        let closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
        let not_returned = matches!(accepted.join().unwrap(), Err(Error::Timeout { .. }));
        closed && not_returned
    })
}

#[test]
fn a_denied_peer_is_closed_at_once_and_never_accepted() {
    let config = Config::default().with_deny(access::parse_list("127.0.0.0/8").unwrap());
    let server = Server::bind("127.0.0.1", 0, config).unwrap();
    assert!(refused(&server), "the denied client should read end of stream");
}

#[test]
fn allow_lists_admit_only_their_ranges_and_deny_wins() {
    // Allowed: 127.0.0.1 is in 127.0.0.0/8, and not denied.
    let config = Config::default().with_allow(access::parse_list("127.0.0.0/8").unwrap());
    let server = Server::bind("127.0.0.1", 0, config).unwrap();
    let port = server.local_addr().port();
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let conn = server.accept_timeout(WAIT).expect("an allowed peer is accepted");
    assert_eq!(conn.peer_addr(), c.local_addr().unwrap());

    // Not in the allow list.
    let config = Config::default().with_allow(access::parse_list("10.0.0.0/8, ::1").unwrap());
    let server = Server::bind("127.0.0.1", 0, config).unwrap();
    assert!(refused(&server));

    // In the allow list, but denied too: deny wins.
    let config = Config::default()
        .with_allow(access::parse_list("127.0.0.0/8").unwrap())
        .with_deny(access::parse_list("127.0.0.1/32").unwrap());
    let server = Server::bind("127.0.0.1", 0, config).unwrap();
    assert!(refused(&server));
}

#[test]
fn the_per_address_limit_refuses_extra_connections_until_one_closes() {
    let config = Config::default().with_max_per_address(1);
    let server = Server::bind("127.0.0.1", 0, config).unwrap();
    let port = server.local_addr().port();
    let first_client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let first = server.accept_timeout(WAIT).unwrap();

    // The second connection from the same address is closed by accept.
    let mut second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    second.set_read_timeout(Some(WAIT)).unwrap();
    let t = std::thread::scope(|s| {
        let h = s.spawn(|| server.accept_timeout(Duration::from_millis(1500)));
        let mut buf = [0u8; 4];
        let n = second.read(&mut buf);
        assert!(matches!(n, Ok(0) | Err(_)), "second connection should be closed");
        h.join().unwrap()
    });
    assert!(matches!(t, Err(Error::Timeout { .. })));

    // Once the first is closed, the address has room again.
    drop(first_client);
    drop(first);
    let _third_client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    server.accept_timeout(WAIT).expect("room again after the first closed");
}
