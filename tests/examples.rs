//! The example programs, run as a user runs them: chat_server and
//! chat_client talking to each other and to the classic tutorial's Python
//! programs, their flags, and echo_server stopping on a signal.
//!
//! `cargo test` builds the examples before it runs integration tests; they
//! are found next to this test's executable, in `target/<profile>/examples`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use common::LIMIT;
use tcpchat::{Config, Framing};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/examples-HASH -> target/<profile>/examples/NAME
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn have_python() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: python3 is not installed");
    }
    ok
}

/// A running program with piped stdin, stdout and stderr, read line by line
/// on background threads so that a test can wait for each line as it comes.
struct Prog {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    stderr_log: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

struct Finished {
    status: ExitStatus,
    /// The stdout lines not yet taken by [`Prog::expect`].
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Prog {
    fn example(name: &str, args: &[&str]) -> Prog {
        let mut cmd = Command::new(example(name));
        cmd.args(args);
        Prog::start(name, cmd)
    }

    fn python(script: &str, args: &[&str]) -> Prog {
        let mut cmd = Command::new("python3");
        cmd.arg(fixture(script)).args(args);
        Prog::start(script, cmd)
    }

    fn start(name: &str, mut cmd: Command) -> Prog {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stderr_log = Arc::new(Mutex::new(Vec::new()));
        let (out_tx, stdout) = mpsc::channel();
        let (err_tx, stderr) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        let err = BufReader::new(child.stderr.take().unwrap());
        let log = stderr_log.clone();
        let readers = vec![
            thread::spawn(move || {
                for line in out.lines().map_while(|l| l.ok()) {
                    let _ = out_tx.send(line);
                }
            }),
            thread::spawn(move || {
                for line in err.lines().map_while(|l| l.ok()) {
                    log.lock().unwrap().push(line.clone());
                    let _ = err_tx.send(line);
                }
            }),
        ];
        Prog {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            stderr_log,
            readers,
        }
    }

    fn stderr_so_far(&self) -> String {
        self.stderr_log.lock().unwrap().join("\n")
    }

    /// The port from the `listening on IP:PORT` line a server writes first on stderr.
    fn listening_port(&mut self) -> u16 {
        let line = self
            .stderr
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("{}: no first line on stderr ({e})", self.name));
        let addr = line
            .strip_prefix("listening on 127.0.0.1:")
            .unwrap_or_else(|| panic!("{}: first stderr line is {line:?}", self.name));
        let port: u16 = addr
            .parse()
            .unwrap_or_else(|_| panic!("{}: bad port in {line:?}", self.name));
        assert_ne!(port, 0, "{}: must print the real port", self.name);
        port
    }

    /// Type one line on the program's stdin.
    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}").unwrap_or_else(|e| panic!("{}: writing stdin: {e}", self.name));
    }

    /// Close the program's stdin (end of input).
    fn hang_up(&mut self) {
        self.stdin = None;
    }

    /// Wait for the next stdout line and check it.
    fn expect(&mut self, want: &str) {
        match self.stdout.recv_timeout(LIMIT) {
            Ok(line) => assert_eq!(
                line,
                want,
                "{}: stdout; stderr:\n{}",
                self.name,
                self.stderr_so_far()
            ),
            Err(e) => panic!(
                "{}: waiting for {want:?} on stdout: {e}; stderr:\n{}",
                self.name,
                self.stderr_so_far()
            ),
        }
    }

    /// Send a signal to the program.
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no pointer arguments; the pid is our own child,
        // which has not been waited for yet, so it cannot have been reused.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }

    /// Close stdin and wait (at most LIMIT, then kill it) for the program to end.
    fn finish(mut self) -> Finished {
        self.hang_up();
        let pid = self.child.id() as libc::pid_t;
        let (done, timer) = mpsc::channel::<()>();
        let watchdog = thread::spawn(move || {
            let late = timer.recv_timeout(LIMIT) == Err(RecvTimeoutError::Timeout);
            if late {
                // SAFETY: as in `signal`; our child is not reaped until wait returns.
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
        let stderr = self.stderr_log.lock().unwrap().clone();
        assert!(
            !late,
            "{} did not exit within {LIMIT:?}; stderr:\n{}",
            self.name,
            stderr.join("\n")
        );
        Finished {
            status,
            stdout: self.stdout.try_iter().collect(),
            stderr,
        }
    }

    /// Finish and check for exit status 0 and no further stdout.
    fn finish_ok(self) -> Finished {
        let name = self.name.clone();
        let f = self.finish();
        assert!(
            f.status.success(),
            "{name} exited with {}; stderr:\n{}",
            f.status,
            f.stderr.join("\n")
        );
        assert!(
            f.stdout.is_empty(),
            "{name}: unexpected stdout {:?}",
            f.stdout
        );
        f
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        // A failed test must not leave its programs running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn chat_server_and_client_with_piped_stdin() {
    let mut server = Prog::example("chat_server", &["--port", "0", "--once"]);
    let port = server.listening_port().to_string();
    // All input at once: line framing keeps the messages apart.
    server.say("hello");
    server.say("how are you?");
    server.hang_up(); // then stdin's end sends BYE
    let mut client = Prog::example("chat_client", &["--port", &port]);
    client.say("hi server");
    client.say("fine");
    client.say("never sent: the server said BYE first");
    let c = client.finish();
    let s = server.finish();
    assert!(
        c.status.success() && s.status.success(),
        "client {}, server {}",
        c.status,
        s.status
    );
    assert_eq!(c.stdout, ["server: hello", "server: how are you?"]);
    assert_eq!(s.stdout, ["client: hi server", "client: fine"]);
    // stdin is a pipe, not a terminal: no prompt anywhere.
    assert!(
        !s.stderr.iter().chain(&c.stderr).any(|l| l.contains("> ")),
        "{:?} {:?}",
        s.stderr,
        c.stderr
    );
}

/// Take turns one line at a time, waiting for each line to be printed by the
/// other side before typing the next (raw framing has no message boundaries).
fn converse(server: &mut Prog, client: &mut Prog) {
    server.say("hello");
    client.expect("server: hello");
    client.say("hi, it's me");
    server.expect("client: hi, it's me");
    server.say("how are you?");
    client.expect("server: how are you?");
    client.say("fine");
    server.expect("client: fine");
}

#[test]
fn chat_server_and_client_in_every_framing_ended_each_way() {
    for framing in ["raw", "line", "frame"] {
        let mut server = Prog::example(
            "chat_server",
            &["--port", "0", "--once", "--framing", framing],
        );
        server.name = format!("chat_server --framing {framing}");
        let port = server.listening_port().to_string();
        let mut client = Prog::example("chat_client", &["--port", &port, "--framing", framing]);
        client.name = format!("chat_client --framing {framing}");
        converse(&mut server, &mut client);
        match framing {
            "raw" => client_says_bye(&mut server, &mut client),
            "line" => {
                server.say("your turn");
                client.expect("server: your turn");
                client.hang_up(); // the client's stdin ends: it sends BYE
            }
            _ => server.say("BYE"),
        }
        client.finish_ok();
        server.finish_ok();
    }
}

fn client_says_bye(server: &mut Prog, client: &mut Prog) {
    server.say("anything else?");
    client.expect("server: anything else?");
    client.say("BYE");
}

#[test]
fn chat_server_serves_the_next_client_unless_once() {
    let mut server = Prog::example("chat_server", &["--port", "0"]);
    let port = server.listening_port().to_string();
    for i in 1..=2 {
        let mut client = Prog::example("chat_client", &["--port", &port]);
        server.say(&format!("hello #{i}"));
        client.expect(&format!("server: hello #{i}"));
        client.say(&format!("I am client {i}"));
        server.expect(&format!("client: I am client {i}"));
        server.say("bye?");
        client.expect("server: bye?");
        client.say("BYE");
        client.finish_ok();
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "chat_server must wait for the next client"
    );
    // And once stdin ends, the next client is told BYE at once.
    server.hang_up();
    let client = Prog::example("chat_client", &["--port", &port]);
    client.finish_ok();
}

#[test]
fn chat_server_talks_to_the_tutorial_client_in_raw_framing() {
    if !have_python() {
        return;
    }
    let mut server = Prog::example(
        "chat_server",
        &["--port", "0", "--once", "--framing", "raw"],
    );
    let port = server.listening_port().to_string();
    let mut client = Prog::python("tutorial_client.py", &[&port]);
    converse(&mut server, &mut client);
    server.hang_up(); // chat_server sends BYE; the tutorial client stops on it
    client.finish_ok();
    server.finish_ok();
}

#[test]
fn chat_client_talks_to_the_tutorial_server_in_raw_framing() {
    if !have_python() {
        return;
    }
    let mut server = Prog::python("tutorial_server.py", &["0"]);
    let port = server.listening_port().to_string();
    let mut client = Prog::example("chat_client", &["--port", &port, "--framing", "raw"]);
    converse(&mut server, &mut client);
    client_says_bye(&mut server, &mut client);
    client.finish_ok();
    server.finish_ok();
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    let cases: &[(&str, &[&str])] = &[
        ("chat_server", &["--bogus"]),
        ("chat_server", &["--port", "65536"]),
        ("chat_server", &["--port", "http"]),
        ("chat_server", &["--port"]),
        ("chat_server", &["--framing", "json"]),
        ("chat_server", &["--once=yes"]),
        ("chat_server", &["stray"]),
        ("chat_client", &["--once"]),
        ("chat_client", &["--max-clients", "3"]),
        ("echo_server", &["--max-clients", "0"]),
        ("echo_server", &["--max-clients", "many"]),
        ("echo_server", &["--host"]),
    ];
    for (name, args) in cases {
        let f = Prog::example(name, args).finish();
        assert_eq!(
            f.status.code(),
            Some(2),
            "{name} {args:?}: stderr:\n{}",
            f.stderr.join("\n")
        );
        assert!(
            f.stderr.iter().any(|l| l.starts_with("usage: ")),
            "{name} {args:?}: {:?}",
            f.stderr
        );
        assert!(f.stdout.is_empty());
    }
}

#[test]
fn help_prints_usage_and_exits_0() {
    for name in ["chat_server", "chat_client", "echo_server"] {
        let f = Prog::example(name, &["--help"]).finish();
        assert_eq!(f.status.code(), Some(0), "{name}");
        assert!(
            f.stdout[0].starts_with(&format!("usage: {name}")),
            "{name}: {:?}",
            f.stdout
        );
        for flag in ["--host", "--port", "--framing"] {
            assert!(
                f.stdout.iter().any(|l| l.contains(flag)),
                "{name} --help does not mention {flag}"
            );
        }
    }
}

#[test]
fn echo_server_stops_cleanly_on_sigterm_and_sigint() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut server = Prog::example(
            "echo_server",
            &["--port", "0", "--framing", "frame", "--max-clients", "4"],
        );
        let port = server.listening_port();
        let cfg = common::config(Framing::Frame);
        let mut conn = tcpchat::connect("127.0.0.1", port, &cfg).unwrap();
        conn.send(b"ping").unwrap();
        assert_eq!(conn.recv().unwrap().unwrap(), b"ping");
        server.signal(signal);
        // The server closes our connection as it stops.
        assert_eq!(conn.recv().unwrap(), None);
        conn.close().unwrap();
        let f = server.finish();
        assert_eq!(
            f.status.code(),
            Some(0),
            "signal {signal}; stderr:\n{}",
            f.stderr.join("\n")
        );
        let stats = f.stderr.last().unwrap();
        assert!(
            stats.contains("served 1 clients") && stats.contains("echoed 1 messages"),
            "{stats}"
        );
        assert!(
            tcpchat::connect("127.0.0.1", port, &Config::default()).is_err(),
            "still listening"
        );
    }
}

#[test]
fn echo_server_deny_flag_refuses_loopback_and_allow_admits_it() {
    // Denied: the client is closed at once, without a byte.
    let mut server = Prog::example("echo_server", &["--port", "0", "--deny", "127.0.0.0/8"]);
    let port = server.listening_port();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(std::io::Read::read(&mut s, &mut buf), Ok(0) | Err(_)));
    server.signal(libc::SIGTERM);
    let f = server.finish();
    assert!(f.stderr.iter().any(|l| l.contains("not allowed")), "{:?}", f.stderr);
    assert!(f.stderr.last().unwrap().contains("served 0 clients"), "{:?}", f.stderr);

    // Allowed (and another range denied): served as usual.
    let mut server = Prog::example(
        "echo_server",
        &["--port", "0", "--allow", "127.0.0.1,::1", "--deny", "10.0.0.0/8"],
    );
    let port = server.listening_port();
    let mut conn = tcpchat::connect("127.0.0.1", port, &Config::default()).unwrap();
    conn.send(b"hi").unwrap();
    assert_eq!(conn.recv().unwrap().unwrap(), b"hi");
    conn.shutdown_write().unwrap();
    assert_eq!(conn.recv().unwrap(), None);
    server.signal(libc::SIGTERM);
    assert_eq!(server.finish().status.code(), Some(0));

    // A range that does not parse is a usage error.
    let f = Prog::example("echo_server", &["--port", "0", "--deny", "10.0.0.0/99"]).finish();
    assert_eq!(f.status.code(), Some(2));
}
