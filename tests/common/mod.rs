//! Helpers shared by the integration tests. Everything runs over loopback on
//! ports picked by the kernel (port 0), with bounded timeouts so that a bug
//! fails a test instead of hanging it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
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
/// sender would produce (raw on purpose: the tests of the connection, echo
/// and session layers feed the library hostile bytes through it).
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

/// A client of the room through tcpchat's own client API: a [`Conn`] in
/// `line` framing, every wait bounded. A peer from [`RoomPeer::join_raw`] (or
/// [`RoomPeer::connect_with`] and [`Framing::Raw`]) is a `Conn` in `raw`
/// framing instead, for the bytes line framing refuses to send (half a line,
/// a last line without its newline); it cuts what it receives into lines
/// itself, which also lets it see whether the room ever wrote half a line.
pub struct RoomPeer {
    /// Its name in the room (from the welcome line), once joined.
    pub name: String,
    conn: Conn,
    /// Raw framing: bytes received after the last complete line.
    partial: Vec<u8>,
}

impl RoomPeer {
    /// Connect without reading anything; waits give up after [`LIMIT`].
    pub fn connect(addr: SocketAddr) -> RoomPeer {
        RoomPeer::connect_with(addr, Framing::Line, LIMIT)
    }

    /// Connect in `framing` (line or raw) with every wait (the connect, each
    /// receive and each send) giving up after `wait`.
    pub fn connect_with(addr: SocketAddr, framing: Framing, wait: Duration) -> RoomPeer {
        let config = Config::default()
            .with_framing(framing)
            .with_connect_timeout(Some(wait))
            .with_read_timeout(Some(wait))
            .with_write_timeout(Some(wait))
            .with_raw_buffer_size(64 * 1024);
        let conn = tcpchat::connect(&addr.ip().to_string(), addr.port(), &config)
            .unwrap_or_else(|e| panic!("connecting to the room: {e}"));
        RoomPeer {
            name: String::new(),
            conn,
            partial: Vec::new(),
        }
    }

    /// Connect and read the welcome line, which gives the name.
    pub fn join(addr: SocketAddr) -> RoomPeer {
        RoomPeer::join_within(addr, LIMIT)
    }

    /// [`RoomPeer::join`] with waits that give up after `wait`.
    pub fn join_within(addr: SocketAddr, wait: Duration) -> RoomPeer {
        RoomPeer::connect_with(addr, Framing::Line, wait).welcomed()
    }

    /// [`RoomPeer::join`] in raw framing: a member that can send any bytes
    /// ([`RoomPeer::send_bytes`]).
    pub fn join_raw(addr: SocketAddr) -> RoomPeer {
        RoomPeer::connect_with(addr, Framing::Raw, LIMIT).welcomed()
    }

    /// Read the welcome line and take the name from it.
    fn welcomed(mut self) -> RoomPeer {
        let welcome = self.line();
        let rest = welcome
            .strip_prefix("* welcome, you are ")
            .unwrap_or_else(|| panic!("unexpected greeting {welcome:?}"));
        self.name = rest.split(' ').next().unwrap().to_string();
        assert_eq!(
            welcome,
            format!("* welcome, you are {} (commands: /nick NAME, /who, /quit)", self.name)
        );
        self
    }

    /// The connection underneath.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// This end's address (the room reports it in its join event).
    pub fn local_addr(&self) -> SocketAddr {
        self.conn.local_addr()
    }

    /// Change how long a receive waits.
    pub fn set_read_timeout(&mut self, t: Duration) {
        self.conn.set_read_timeout(Some(t)).unwrap();
    }

    fn raw(&self) -> bool {
        self.conn.framing() == Framing::Raw
    }

    /// Send one line (the newline is added).
    pub fn send(&mut self, line: &str) {
        self.send_line(line.as_bytes());
    }

    /// Send one line of any bytes but a newline (invalid UTF-8, a `\r` at
    /// the end), the newline added.
    pub fn send_line(&mut self, line: &[u8]) {
        if self.raw() {
            self.send_bytes(&[line, b"\n"].concat());
        } else {
            let r = self.conn.send(line);
            r.unwrap_or_else(|e| panic!("{}: sending to the room: {e}", self.name));
        }
    }

    /// Send many lines with one write.
    pub fn send_lines<M: AsRef<[u8]>>(&mut self, lines: &[M]) {
        if self.raw() {
            let wire: Vec<u8> = lines.iter().flat_map(|l| [l.as_ref(), b"\n"].concat()).collect();
            self.send_bytes(&wire);
        } else {
            let r = self.conn.send_many(lines);
            r.unwrap_or_else(|e| panic!("{}: sending to the room: {e}", self.name));
        }
    }

    /// Send bytes as they are: a peer in raw framing only.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        assert!(self.raw(), "send_bytes needs a raw-framing peer (RoomPeer::join_raw)");
        let r = self.conn.send(bytes);
        r.unwrap_or_else(|e| panic!("{}: sending to the room: {e}", self.name));
    }

    /// Shut down the sending side: the room reads end of stream after what
    /// was sent, and this peer can still receive.
    pub fn shutdown_write(&mut self) {
        self.conn.shutdown_write().expect("shutting down the write half");
    }

    /// The next line without its newline, `Ok(None)` at end of stream, an
    /// error on a timeout (the peer stays usable) or a failure. In raw
    /// framing a last line without its newline is an error.
    pub fn next_line(&mut self) -> tcpchat::Result<Option<String>> {
        let bytes = if self.raw() {
            loop {
                if let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
                    let mut line: Vec<u8> = self.partial.drain(..=nl).collect();
                    line.pop();
                    break line;
                }
                match self.conn.recv()? {
                    Some(chunk) => self.partial.extend_from_slice(&chunk),
                    None if self.partial.is_empty() => return Ok(None),
                    None => {
                        return Err(tcpchat::Error::Protocol(format!(
                            "end of stream after half a line: {:?}",
                            String::from_utf8_lossy(&self.partial)
                        )))
                    }
                }
            }
        } else {
            match self.conn.recv()? {
                Some(line) => line,
                None => return Ok(None),
            }
        };
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| tcpchat::Error::Protocol(format!("the room wrote a line that is not UTF-8: {e}")))
    }

    /// The next line, without its newline.
    pub fn line(&mut self) -> String {
        match self.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{}: end of stream", self.name),
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
        let mut lines = Vec::new();
        loop {
            match self.next_line() {
                Ok(Some(line)) => lines.push(line),
                Ok(None) | Err(tcpchat::Error::ConnectionReset(_)) => return lines,
                Err(e) => panic!("{}: waiting for end of stream: {e}", self.name),
            }
        }
    }
}
