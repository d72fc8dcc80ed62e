//! What the example programs share: a tiny flag parser and a chat handler
//! that talks to the terminal. Each example uses only some of it.
#![allow(dead_code)]

use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::process::exit;
use std::time::Duration;

use tcpchat::{ChatHandler, Config, Framing, IpNet, Result};

/// `eprintln!` that never panics and never waits long: the line goes to
/// stderr in one write when stderr can take it within [`STDERR_WAIT`], and
/// is dropped otherwise, or when the write fails (stderr closed, as in
/// `chat_room 2>&1 | head`, or a supervisor whose log pipe died, or full
/// and nobody reading it). `eprintln!` panics on a failed write, which
/// stopped a server (exit 101, every client dropped) or, on the signal
/// thread, left SIGTERM ignored; and a write that waits for ever on the
/// signal thread would do the same. Every example writes its own lines to
/// stderr through this; the library's records go through
/// [`tcpchat::log::stderr_logger`], which never panics nor waits either.
macro_rules! eprintln_safe {
    ($($arg:tt)*) => {
        $crate::common::write_stderr_line(&::std::format!($($arg)*))
    };
}
pub(crate) use eprintln_safe;

/// How long an example waits for stderr to take one of its own lines
/// before dropping it (the same in C and Python).
pub const STDERR_WAIT: Duration = Duration::from_secs(1);

/// Write `line` and a newline to stderr in one write (so that it is not
/// split by another thread's line), as [`eprintln_safe!`] says.
pub fn write_stderr_line(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    write_stderr(&buf);
}

/// `eprint!` that never panics nor waits long (no newline added), as
/// [`eprintln_safe!`].
pub fn write_stderr(text: &str) {
    if stderr_writable(STDERR_WAIT) {
        let mut err = io::stderr();
        let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
    }
}

/// Whether stderr can take a write within `wait` (a pipe then has a page
/// free: a line shorter than that is written without waiting).
fn stderr_writable(wait: Duration) -> bool {
    let mut p = libc::pollfd { fd: libc::STDERR_FILENO, events: libc::POLLOUT, revents: 0 };
    let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: p is a live local; one descriptor.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue; // a signal with a handler: wait again (a line is not worth more care)
        }
        return r == 1
            && p.revents & libc::POLLOUT != 0
            && p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0;
    }
}

/// The flags of the example programs, with their defaults.
pub struct Flags {
    pub host: String,
    pub port: u16,
    pub framing: Framing,
    pub once: bool,
    pub max_clients: Option<usize>,
    /// `--allow` ranges (repeatable; commas also separate).
    pub allow: Vec<IpNet>,
    /// `--deny` ranges (repeatable; commas also separate).
    pub deny: Vec<IpNet>,
    /// `--idle-timeout SECS` (0 = none; not given: the library's default).
    pub idle_timeout: Option<u64>,
    /// `--max-per-address N` (0 = no limit, the library's default).
    pub max_per_address: Option<usize>,
    /// `--max-message-size BYTES` (not given: the library's default, 1 MiB).
    pub max_message_size: Option<usize>,
    /// `--line-rate N` (chat_room: lines a second per member; 0 = no rate).
    pub line_rate: Option<u32>,
    usage: &'static str,
}

impl Flags {
    /// `config` with the server flags applied: the access lists and the
    /// limits. A value the library refuses is a usage error (exit 2).
    pub fn server_config(&self, mut config: Config) -> Config {
        config = config.with_allow(self.allow.clone()).with_deny(self.deny.clone());
        if let Some(n) = self.max_clients {
            config = config.with_max_clients(n);
        }
        if let Some(secs) = self.idle_timeout {
            config = config.with_idle_timeout((secs > 0).then(|| Duration::from_secs(secs)));
        }
        if let Some(n) = self.max_per_address {
            config = config.with_max_per_address(n);
        }
        if let Some(bytes) = self.max_message_size {
            config = config.with_max_message_size(bytes);
        }
        if let Err(e) = config.validate() {
            bad_usage(self.usage, &e.to_string());
        }
        config
    }

    /// Print a warning on stderr when a server bound to `addr` listens on
    /// every address (`0.0.0.0`, `::`) and no `--allow` list limits who may
    /// connect.
    pub fn warn_if_open(&self, addr: SocketAddr) {
        if addr.ip().is_unspecified() && self.allow.is_empty() {
            eprintln_safe!(
                "warning: listening on every address ({}) with no --allow list: \
                 anyone who can reach this machine can connect",
                addr.ip()
            );
        }
    }
}

/// Parse the command line, accepting only the flags named in `allowed` (as
/// `--flag value` or `--flag=value`). `--help` prints `usage` and exits 0; a
/// bad flag prints the problem and `usage` to stderr and exits 2.
pub fn parse_flags(usage: &'static str, allowed: &[&str]) -> Flags {
    let mut flags = Flags {
        host: "127.0.0.1".to_string(),
        port: 8080,
        framing: Framing::Line,
        once: false,
        max_clients: None,
        allow: Vec::new(),
        deny: Vec::new(),
        idle_timeout: None,
        max_per_address: None,
        max_message_size: None,
        line_rate: None,
        usage,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            println!("{usage}");
            exit(0);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if !allowed.contains(&name.as_str()) {
            bad_usage(usage, &format!("unknown flag {arg:?}"));
        }
        if name == "--once" {
            if inline.is_some() {
                bad_usage(usage, "--once takes no value");
            }
            flags.once = true;
            continue;
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            bad_usage(usage, &format!("{name} needs a value"));
        };
        let bad = |what: &str| -> ! { bad_usage(usage, &format!("{name}: {what} {value:?}")) };
        // A whole number from 0 to 4294967295, digits only (the same in C and Python).
        let number = || -> u64 {
            match value.parse::<u32>() {
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => n.into(),
                _ => bad("expected a whole number from 0 to 4294967295, got"),
            }
        };
        match name.as_str() {
            "--host" => flags.host = value.clone(),
            "--port" => flags.port = value.parse().unwrap_or_else(|_| bad("bad port")),
            "--framing" => {
                flags.framing = value
                    .parse()
                    .unwrap_or_else(|_| bad("expected raw, line or frame, got"))
            }
            "--max-clients" => match value.parse::<usize>() {
                Ok(n) if n > 0 => flags.max_clients = Some(n),
                _ => bad("expected a positive number, got"),
            },
            "--idle-timeout" => flags.idle_timeout = Some(number()),
            "--max-per-address" => flags.max_per_address = Some(number() as usize),
            "--max-message-size" => flags.max_message_size = Some(number() as usize),
            "--line-rate" => flags.line_rate = Some(number() as u32),
            "--allow" | "--deny" => {
                let ranges = tcpchat::access::parse_list(&value).unwrap_or_else(|e| bad_usage(usage, &e.to_string()));
                if name == "--allow" { &mut flags.allow } else { &mut flags.deny }.extend(ranges);
            }
            _ => unreachable!("flag {name} is allowed but not handled"),
        }
    }
    flags
}

fn bad_usage(usage: &str, problem: &str) -> ! {
    eprintln_safe!("error: {problem}\n{usage}");
    exit(2);
}

/// A chat handler for a terminal (or a pipe): each message to send is the next
/// line of stdin (stdin's end says BYE); each received one is printed on
/// stdout as `PEER: MSG`, made safe for the terminal. The prompt goes to
/// stderr, and only when stdin is a terminal.
///
/// While the operator types, the peer is watched too
/// ([`tcpchat::session::wait_for_input`]): when it leaves, `PEER left` is
/// printed on stderr and the session ends at once (a server goes on to its
/// next client). So stdin is read unbuffered, into a buffer of our own that
/// is looked at before waiting: `io::stdin()`'s buffer could hold the next
/// line while the descriptor has nothing more to say.
pub struct Stdio {
    peer: &'static str,
    prompt: Option<&'static str>,
    /// How many messages have been printed.
    pub received: u64,
    /// stdin (a duplicate of descriptor 0), read without a buffer of std's.
    input: Option<std::fs::File>,
    /// What was read from stdin past the last line returned.
    pending: Vec<u8>,
    eof: bool,
}

impl Stdio {
    pub fn new(peer: &'static str, prompt: &'static str) -> Stdio {
        let prompt = io::stdin().is_terminal().then_some(prompt);
        let input = io::stdin().as_fd().try_clone_to_owned().ok().map(std::fs::File::from);
        Stdio { peer, prompt, received: 0, input, pending: Vec::new(), eof: false }
    }

    /// The next line of stdin without its line ending, `None` at its end.
    fn read_line(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(input) = self.input.as_mut() else {
            return Ok(None); // stdin is not open: as std reads it, empty
        };
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.eof {
                // A last line without its newline is still a line.
                return Ok((!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending)));
            }
            // Nothing buffered: wait for stdin, or for the peer to leave.
            match tcpchat::session::wait_for_input(input.as_raw_fd()) {
                Ok(()) => {}
                Err(e @ tcpchat::Error::Closed(_)) => {
                    eprintln_safe!("{} left", self.peer);
                    return Err(e); // the session ends as the peer's close
                }
                // Not inside a session: just read.
                Err(tcpchat::Error::InvalidArgument(_)) => {}
                Err(e) => return Err(e),
            }
            let mut chunk = [0u8; 4096];
            match input.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(tcpchat::Error::Callback(format!("reading stdin: {e}"))),
            }
        }
    }
}

impl ChatHandler for Stdio {
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(prompt) = self.prompt {
            write_stderr(prompt);
        }
        self.read_line()
    }

    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        // A raw peer such as nc sends its newline too: do not print it twice.
        let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
        let msg = msg.strip_suffix(b"\r").unwrap_or(msg);
        self.received += 1;
        let mut out = io::stdout().lock();
        writeln!(out, "{}: {}", self.peer, printable(msg))
            .and_then(|()| out.flush())
            .map_err(|e| tcpchat::Error::Callback(format!("writing stdout: {e}")))
    }
}

/// Print a fatal error to stderr and exit 1.
pub fn die(program: &str, e: tcpchat::Error) -> ! {
    eprintln_safe!("{program}: {e}");
    exit(1);
}

/// Block SIGINT and SIGTERM in this thread, before any other thread starts,
/// so that every thread inherits the mask and the signals wait for
/// [`wait_for`] instead of killing the process. Returns the set.
pub fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset; the calls
    // only read and write this local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Wait for one of the blocked `signals` and return its number.
pub fn wait_for(signals: &libc::sigset_t) -> libc::c_int {
    let mut signal: libc::c_int = 0;
    // SAFETY: both pointers are to live values; sigwait only writes `signal`.
    unsafe { libc::sigwait(signals, &mut signal) };
    signal
}

/// Peer text made safe for a terminal (CONTRACT.md, "Text that reaches a
/// terminal"): what could move the cursor, clear the screen, reorder or
/// hide text is written in a visible notation (`\x1b`, `\u{202e}`, `\xff`
/// for a byte that is not UTF-8), the rest as it is. The library's rule,
/// [`tcpchat::text::escape_bytes`], which the room applies to what it
/// relays and the C and Python examples call too.
pub fn printable(msg: &[u8]) -> String {
    tcpchat::text::escape_bytes(msg).into_owned()
}
