//! Helpers shared by the integration tests. Everything runs over loopback on
//! ports picked by the kernel (port 0), with bounded timeouts so that a bug
//! fails a test instead of hanging it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use tcpchat::{ChatHandler, Config, Conn, Framing, Result, Server};

/// The longest any single wait in a test may take.
pub const LIMIT: Duration = Duration::from_secs(10);

pub const FRAMINGS: [Framing; 3] = [Framing::Raw, Framing::Line, Framing::Frame];

/// A configuration whose reads and writes give up after [`LIMIT`].
pub fn config(framing: Framing) -> Config {
    Config::default()
        .with_framing(framing)
        .with_read_timeout(Some(LIMIT))
        .with_write_timeout(Some(LIMIT))
        .with_idle_timeout(Some(LIMIT))
}

/// A server on 127.0.0.1 and a free port.
pub fn server(config: Config) -> Server {
    Server::bind("127.0.0.1", 0, config).expect("bind 127.0.0.1:0")
}

/// A client connected to `server`.
pub fn client(server: &Server, config: &Config) -> Conn {
    tcpchat::connect("127.0.0.1", server.local_addr().port(), config).expect("connect")
}

/// A connected pair: (the server's end, the client's end).
pub fn pair(config: Config) -> (Conn, Conn) {
    let server = server(config.clone());
    let client = client(&server, &config);
    let accepted = server.accept_timeout(LIMIT).expect("accept");
    (accepted, client)
}

/// A plain std socket connected to `server`, for writing bytes no tcpchat
/// sender would produce.
pub fn raw_socket(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.local_addr()).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    s
}

/// Read until end of stream (a reset also counts as the end), returning what came.
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("reading to the end: {e}"),
        }
    }
}

/// A thread whose [`Task::join`] waits a bounded time, so that a bug that
/// leaves it blocked fails the test instead of hanging it.
pub struct Task<T> {
    done: Receiver<thread::Result<T>>,
}

pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Task<T> {
    let (tx, done) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(panic::catch_unwind(AssertUnwindSafe(f)));
    });
    Task { done }
}

impl<T> Task<T> {
    /// The thread's result (`Err` if it panicked); panics if it has not
    /// finished within twice [`LIMIT`].
    pub fn join(self) -> thread::Result<T> {
        self.done
            .recv_timeout(2 * LIMIT)
            .unwrap_or_else(|_| panic!("a test thread is still blocked after {:?}", 2 * LIMIT))
    }
}

/// A chat handler that sends a fixed list of messages (then `None`, which
/// makes the session send the end word) and records what it receives.
#[derive(Default)]
pub struct Script {
    pub outgoing: VecDeque<Vec<u8>>,
    pub received: Vec<Vec<u8>>,
}

impl Script {
    pub fn new(outgoing: &[&str]) -> Script {
        Script {
            outgoing: outgoing.iter().map(|m| m.as_bytes().to_vec()).collect(),
            received: Vec::new(),
        }
    }

    pub fn received_text(&self) -> Vec<String> {
        self.received
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }
}

impl ChatHandler for Script {
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(self.outgoing.pop_front())
    }
    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        self.received.push(msg.to_vec());
        Ok(())
    }
}

/// Deterministic pseudo-random bytes (xorshift), for garbage input.
pub fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// A client of the room over a plain socket, read line by line, every wait
/// bounded.
pub struct RoomPeer {
    /// Its name in the room (from the welcome line), once joined.
    pub name: String,
    pub reader: BufReader<TcpStream>,
}

impl RoomPeer {
    /// Connect without reading anything; waits give up after [`LIMIT`].
    pub fn connect(addr: SocketAddr) -> RoomPeer {
        RoomPeer::connect_stream(TcpStream::connect(addr).expect("connect to the room"), LIMIT)
    }

    /// Wrap a connected socket whose waits give up after `wait`.
    pub fn connect_stream(s: TcpStream, wait: Duration) -> RoomPeer {
        s.set_read_timeout(Some(wait)).unwrap();
        s.set_write_timeout(Some(wait)).unwrap();
        RoomPeer {
            name: String::new(),
            reader: BufReader::new(s),
        }
    }

    /// Connect and read the welcome line, which gives the name.
    pub fn join(addr: SocketAddr) -> RoomPeer {
        RoomPeer::join_within(addr, LIMIT)
    }

    /// [`RoomPeer::join`] with waits that give up after `wait`.
    pub fn join_within(addr: SocketAddr, wait: Duration) -> RoomPeer {
        let s = TcpStream::connect(addr).expect("connect to the room");
        let mut p = RoomPeer::connect_stream(s, wait);
        let welcome = p.line();
        let rest = welcome
            .strip_prefix("* welcome, you are ")
            .unwrap_or_else(|| panic!("unexpected greeting {welcome:?}"));
        p.name = rest.split(' ').next().unwrap().to_string();
        assert_eq!(
            welcome,
            format!("* welcome, you are {} (commands: /nick NAME, /who, /quit)", p.name)
        );
        p
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send to the room");
    }

    /// The next line, without its newline.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(_) if buf.ends_with(b"\n") => {
                buf.pop();
                String::from_utf8(buf).expect("the room writes UTF-8")
            }
            Ok(_) => panic!("{}: end of stream after {:?}", self.name, String::from_utf8_lossy(&buf)),
            Err(e) => panic!("{}: reading a line: {e}", self.name),
        }
    }

    /// The next line is exactly `want`.
    pub fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "{} got the wrong line", self.name);
    }

    /// Skip lines (others' messages, notices) until `want`; at most 100,000.
    pub fn wait_for(&mut self, want: &str) {
        for _ in 0..100_000 {
            if self.line() == want {
                return;
            }
        }
        panic!("{}: {want:?} never came", self.name);
    }

    /// Read until end of stream (a reset counts too); the lines that came.
    pub fn until_eof(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{}: waiting for end of stream: {e}", self.name),
        }
        String::from_utf8(rest)
            .expect("the room writes UTF-8")
            .lines()
            .map(str::to_string)
            .collect()
    }
}
