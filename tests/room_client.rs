//! The Rust `room_client` example, run as a user runs it (a child process
//! with piped stdin and stdout) against an in-process room: it sends what is
//! typed at once even while lines keep arriving and when the room is silent
//! (the connection is full-duplex), leaves gracefully at the end of stdin,
//! exits 0 when the room closes, and never prints terminal controls raw.
//!
//! The C and Python room_client programs get the same checks in
//! tests/python/test_room_client.py (it runs once everything is built).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::LIMIT;
use tcpchat::{Config, Conn, Error, Framing, Room, Server};

/// How soon a typed line must reach the other members. Loose (it takes
/// microseconds), but far below "when the room next speaks", which in the
/// silent phase of the test is never.
const PROMPTLY: Duration = Duration::from_secs(2);

fn room_client_binary() -> PathBuf {
    // target/<profile>/deps/room_client-HASH -> target/<profile>/examples/room_client
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/room_client");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

fn start_room() -> Room {
    let room = Room::bind("127.0.0.1", 0, Config::default()).expect("bind the room");
    room.start().expect("start the room");
    room
}

/// Whether `line` holds nothing a terminal would act on: the characters
/// CONTRACT.md says peer text never reaches a terminal with.
fn terminal_safe(line: &str) -> bool {
    !line.chars().any(|c| {
        matches!(c,
            '\0'..='\x08' | '\x0a'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}'
            | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}' | '\u{feff}')
    })
}

// ----- the program under test -----------------------------------------------

/// `room_client --port PORT` with piped stdin, stdout and stderr; stdout is
/// read line by line (as bytes) on a thread, so each wait is bounded.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Vec<u8>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

struct Exited {
    status: ExitStatus,
    /// The stdout lines not read before the exit.
    stdout: Vec<String>,
    stderr: String,
}

impl Client {
    fn start(args: &[&str]) -> Client {
        let mut child = Command::new(room_client_binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting room_client");
        let stdin = child.stdin.take();
        let (tx, stdout) = mpsc::channel();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let log = stderr.clone();
        let readers = vec![
            thread::spawn(move || loop {
                let mut line = Vec::new();
                match out.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        assert_eq!(
                            line.pop(),
                            Some(b'\n'),
                            "room_client: a last line without its newline"
                        );
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }),
            thread::spawn(move || {
                let mut all = Vec::new();
                let _ = std::io::Read::read_to_end(&mut err, &mut all);
                *log.lock().unwrap() = all;
            }),
        ];
        Client {
            child,
            stdin,
            stdout,
            stderr,
            readers,
        }
    }

    fn join(addr: SocketAddr) -> (Client, String) {
        let mut c = Client::start(&["--port", &addr.port().to_string()]);
        let welcome = c.line();
        let name = welcome
            .strip_prefix("* welcome, you are ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("room_client printed {welcome:?} first"))
            .to_string();
        (c, name)
    }

    /// Type one line on the client's stdin.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("writing room_client's stdin");
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next line on stdout, which must be UTF-8 and terminal-safe.
    fn line(&mut self) -> String {
        let line = self.stdout.recv_timeout(LIMIT).unwrap_or_else(|e| {
            panic!(
                "room_client: no line on stdout ({e}); stderr: {}",
                self.stderr_text()
            )
        });
        let line = String::from_utf8(line)
            .unwrap_or_else(|e| panic!("room_client printed bytes that are not UTF-8: {e}"));
        assert!(
            terminal_safe(&line),
            "room_client printed raw controls: {line:?}"
        );
        line
    }

    /// Skip lines until `want`.
    fn wait_for(&mut self, want: &str) {
        while self.line() != want {}
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Wait (at most LIMIT, then kill it) for the client to exit, with its
    /// stdin left as it is.
    fn wait_exit(mut self) -> Exited {
        let pid = self.child.id() as libc::pid_t;
        let (done, timer) = mpsc::channel::<()>();
        let watchdog = thread::spawn(move || {
            let late = timer.recv_timeout(LIMIT) == Err(RecvTimeoutError::Timeout);
            if late {
                // SAFETY: kill has no pointer arguments; the pid is our
                // child, not reaped until wait returns, so not reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            late
        });
        let status = self.child.wait().unwrap();
        let _ = done.send(());
        let late = watchdog.join().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let stderr = self.stderr_text();
        assert!(
            !late,
            "room_client did not exit within {LIMIT:?}; stderr:\n{stderr}"
        );
        let stdout = self
            .stdout
            .try_iter()
            .map(|l| String::from_utf8(l).expect("UTF-8 on stdout"))
            .collect();
        Exited {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // A failed test must not leave the program running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ----- the other members: the library's own client in line framing ------------

/// A member of the room: connect and read the welcome line for its name.
fn member(addr: SocketAddr) -> (Conn, String) {
    let config = common::config(Framing::Line).with_close_timeout(Duration::from_millis(100));
    let mut conn =
        tcpchat::connect("127.0.0.1", addr.port(), &config).expect("connect to the room");
    let welcome = text(&mut conn);
    let name = welcome
        .strip_prefix("* welcome, you are ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected greeting {welcome:?}"))
        .to_string();
    (conn, name)
}

/// The next line `conn` receives, as text.
fn text(conn: &mut Conn) -> String {
    match conn.recv() {
        Ok(Some(line)) => String::from_utf8(line).expect("the room writes UTF-8"),
        Ok(None) => panic!("the room closed the connection"),
        Err(e) => panic!("receiving from the room: {e}"),
    }
}

/// Skip lines until `want`; at most `within` from now.
fn wait_for_within(conn: &mut Conn, want: &str, within: Duration) {
    let start = Instant::now();
    conn.set_read_timeout(Some(within)).unwrap();
    loop {
        let got = match conn.recv() {
            Ok(Some(line)) => String::from_utf8(line).expect("the room writes UTF-8"),
            Ok(None) => panic!("the room closed the connection before {want:?}"),
            Err(Error::Timeout { .. }) => panic!("{want:?} did not arrive within {within:?}"),
            Err(e) => panic!("receiving from the room: {e}"),
        };
        if got == want {
            break;
        }
        let left = within.checked_sub(start.elapsed());
        let left = left.unwrap_or_else(|| panic!("{want:?} did not arrive within {within:?}"));
        conn.set_read_timeout(Some(left)).unwrap();
    }
    conn.set_read_timeout(Some(LIMIT)).unwrap();
}

/// A member that says `tick N` about every 10 ms until `stop` is set, then
/// `last tick`.
fn talker(mut conn: Conn, stop: Arc<AtomicBool>) -> common::Task<Conn> {
    common::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            conn.send(format!("tick {n}").as_bytes())
                .expect("talker: send");
            thread::sleep(Duration::from_millis(10)); // the pace of the talk, not a synchronisation
        }
        conn.send(b"last tick").expect("talker: send");
        conn
    })
}

// ----- the tests ----------------------------------------------------------------

#[test]
fn a_typed_line_goes_out_at_once_while_lines_arrive_and_while_the_room_is_silent() {
    let room = start_room();
    let addr = room.local_addr();
    let (mut observer, _) = member(addr);
    let (talking, talker_name) = member(addr);
    observer.recv().unwrap(); // * TALKER joined
    let (mut client, name) = Client::join(addr);
    wait_for_within(&mut observer, &format!("* {name} joined"), LIMIT);

    // Lines keep arriving: the receiving thread is busy printing them.
    let stop = Arc::new(AtomicBool::new(false));
    let talk = talker(talking, stop.clone());
    for _ in 0..5 {
        let line = client.line();
        assert!(
            line.starts_with(&format!("{talker_name}: tick ")),
            "{line:?}"
        );
    }
    client.type_line("typed while the room talks");
    wait_for_within(
        &mut observer,
        &format!("{name}: typed while the room talks"),
        PROMPTLY,
    );

    // The room falls silent: the receiving thread waits in recv, with
    // nothing to come. A typed line must still go out at once (a client
    // whose send waited for its receive would send it never).
    stop.store(true, Ordering::SeqCst);
    let talking = talk.join().expect("the talker");
    client.wait_for(&format!("{talker_name}: last tick"));
    wait_for_within(&mut observer, &format!("{talker_name}: last tick"), LIMIT);
    client.type_line("typed in the silence");
    wait_for_within(
        &mut observer,
        &format!("{name}: typed in the silence"),
        PROMPTLY,
    );

    client.close_stdin();
    let exited = client.wait_exit();
    assert!(
        exited.status.success(),
        "{}; stderr:\n{}",
        exited.status,
        exited.stderr
    );
    drop((observer, talking));
}

#[test]
fn the_end_of_stdin_leaves_gracefully_prints_what_still_comes_and_exits_0() {
    let room = start_room();
    let addr = room.local_addr();
    let (mut observer, observer_name) = member(addr);
    let (mut client, name) = Client::join(addr);
    wait_for_within(&mut observer, &format!("* {name} joined"), LIMIT);

    // The answer to /who comes after our write half is shut down: it is
    // still printed, and the room then closes its side.
    client.type_line("last words");
    client.type_line("/who");
    client.close_stdin();
    wait_for_within(&mut observer, &format!("{name}: last words"), LIMIT);
    wait_for_within(&mut observer, &format!("* {name} left"), LIMIT);

    let exited = client.wait_exit();
    assert!(
        exited.status.success(),
        "{}; stderr:\n{}",
        exited.status,
        exited.stderr
    );
    assert_eq!(
        exited.stdout,
        [format!("* 2 online: {observer_name}, {name}")]
    );
    assert!(
        exited.stderr.contains("connection closed by the room"),
        "{}",
        exited.stderr
    );
    assert_eq!(room.stats().online, 1);
}

#[test]
fn the_room_stopping_ends_the_client_with_stdin_still_open() {
    let room = start_room();
    let (mut client, _name) = Client::join(room.local_addr());
    room.shutdown();
    client.wait_for("* server shutting down");
    // stdin stays open: the receiving thread must end the program itself.
    assert!(client.stdin.is_some());
    let exited = client.wait_exit();
    assert_eq!(exited.status.code(), Some(0), "stderr:\n{}", exited.stderr);
    assert!(exited.stdout.is_empty(), "{:?}", exited.stdout);
    assert_eq!(exited.stderr.trim_end(), "* connection closed by the room");
}

#[test]
fn hostile_text_from_another_member_never_reaches_stdout_raw() {
    let room = start_room();
    let addr = room.local_addr();
    let (mut client, _) = Client::join(addr);
    let (mut evil, evil_name) = member(addr);
    client.wait_for(&format!("* {evil_name} joined"));
    evil.send("clear \x1b[2J bare\rcr \u{202e}txet".as_bytes())
        .unwrap();
    // `line` checks that nothing raw reached stdout. Whether the room
    // escaped the line itself or the client did, it arrives, visibly.
    let line = client.line();
    assert!(
        line.starts_with(&format!("{evil_name}: clear ")),
        "{line:?}"
    );
    assert!(
        line.contains("[2J bare") && line.ends_with("txet"),
        "{line:?}"
    );
    client.close_stdin();
    assert!(client.wait_exit().status.success());
}

/// What a server sends (line framing's `\n` included) and what room_client
/// must print for it, exactly: the notation of CONTRACT.md's "Text that
/// reaches a terminal", the same in the three languages.
const HOSTILE: &[(&[u8], &str)] = &[
    (
        b"clear \x1b[2J bare\rcr \xe2\x80\xaetxet\n",
        r"clear \x1b[2J bare\x0dcr \u{202e}txet",
    ),
    (
        b"nul \0 bell \x07 del \x7f tab\tkept\n",
        "nul \\x00 bell \\x07 del \\x7f tab\tkept",
    ),
    (
        "c1 \u{85}\u{9b}31m zw\u{200b}\u{200d}j lri\u{2066}pdi\u{2069} ls\u{2028} bom\u{feff}\n"
            .as_bytes(),
        r"c1 \u{85}\u{9b}31m zw\u{200b}\u{200d}j lri\u{2066}pdi\u{2069} ls\u{2028} bom\u{feff}",
    ),
    (
        b"not utf-8 \xff\xfe, cut \xe2\x82, overlong \xc0\xaf, surrogate \xed\xa0\x80, lone \x80\n",
        r"not utf-8 \xff\xfe, cut \xe2\x82, overlong \xc0\xaf, surrogate \xed\xa0\x80, lone \x80",
    ),
    (
        "kept: café ✓ 😀 \u{a0}nbsp \u{2010}dash\r\n".as_bytes(),
        "kept: café ✓ 😀 \u{a0}nbsp \u{2010}dash",
    ),
    (
        b"\xf4\x90\x80\x80 past U+10FFFF, \xf0\x9f\x98 cut emoji at the end \xe2\x82\n",
        r"\xf4\x90\x80\x80 past U+10FFFF, \xf0\x9f\x98 cut emoji at the end \xe2\x82",
    ),
];

#[test]
fn every_control_from_a_raw_server_is_printed_escaped() {
    // A plain server that writes bytes as they are, whatever a room would do.
    let server = Server::bind("127.0.0.1", 0, common::config(Framing::Raw)).unwrap();
    let port = server.local_addr().port().to_string();
    let client = Client::start(&["--port", &port]);
    let mut conn = server.accept_timeout(LIMIT).expect("room_client connects");
    for (bytes, _) in HOSTILE {
        conn.send(bytes).unwrap();
    }
    conn.close().unwrap(); // ends when room_client, at our end of stream, exits
    let exited = client.wait_exit();
    assert_eq!(exited.status.code(), Some(0), "stderr:\n{}", exited.stderr);
    let want: Vec<&str> = HOSTILE.iter().map(|(_, shown)| *shown).collect();
    assert_eq!(exited.stdout, want);
    for line in &exited.stdout {
        assert!(terminal_safe(line), "{line:?}");
    }
    assert!(
        exited.stderr.contains("connection closed by the room"),
        "{}",
        exited.stderr
    );
}

#[test]
fn a_refused_connection_exits_1_with_the_reason() {
    let port = {
        let server = Server::bind("127.0.0.1", 0, Config::default()).unwrap();
        server.local_addr().port()
    }; // closed: nothing listens there now
    let exited = Client::start(&["--port", &port.to_string()]).wait_exit();
    assert_eq!(exited.status.code(), Some(1), "stderr:\n{}", exited.stderr);
    assert!(
        exited.stderr.starts_with("room_client: "),
        "{}",
        exited.stderr
    );
    assert!(exited.stderr.contains("refused"), "{}", exited.stderr);
    assert!(exited.stdout.is_empty());
}

#[test]
fn bad_flags_print_the_usage_and_exit_2() {
    for args in [
        &["--bogus"][..],
        &["--port", "http"],
        &["--port"],
        &["--framing", "line"],
        &["stray"],
    ] {
        let exited = Client::start(args).wait_exit();
        assert_eq!(exited.status.code(), Some(2), "{args:?}: {}", exited.stderr);
        assert!(
            exited.stderr.contains("usage: room_client"),
            "{args:?}: {}",
            exited.stderr
        );
        assert!(exited.stdout.is_empty());
    }
    let help = Client::start(&["--help"]).wait_exit();
    assert_eq!(help.status.code(), Some(0));
    assert!(
        help.stdout[0].starts_with("usage: room_client"),
        "{:?}",
        help.stdout
    );
}

#[test]
fn ctrl_c_ends_the_client_at_once() {
    let room = start_room();
    let (client, _) = Client::join(room.local_addr());
    // SAFETY: as in wait_exit; the child has not been waited for.
    assert_eq!(
        unsafe { libc::kill(client.child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let started = Instant::now();
    let exited = client.wait_exit();
    assert!(!exited.status.success());
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
}
