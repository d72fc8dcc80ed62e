//! What the example programs share: a tiny flag parser and a chat handler
//! that talks to the terminal. Each example uses only some of it.
#![allow(dead_code)]

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::exit;

use tcpchat::{ChatHandler, Config, Framing, IpNet, Result};

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
}

impl Flags {
    /// The access lists of the flags applied to `config`.
    pub fn access(&self, config: Config) -> Config {
        config.with_allow(self.allow.clone()).with_deny(self.deny.clone())
    }
}

/// Parse the command line, accepting only the flags named in `allowed` (as
/// `--flag value` or `--flag=value`). `--help` prints `usage` and exits 0; a
/// bad flag prints the problem and `usage` to stderr and exits 2.
pub fn parse_flags(usage: &str, allowed: &[&str]) -> Flags {
    let mut flags = Flags {
        host: "127.0.0.1".to_string(),
        port: 8080,
        framing: Framing::Line,
        once: false,
        max_clients: None,
        allow: Vec::new(),
        deny: Vec::new(),
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
    eprintln!("error: {problem}\n{usage}");
    exit(2);
}

/// A chat handler for a terminal (or a pipe): each message to send is the next
/// line of stdin (stdin's end says BYE); each received one is printed on
/// stdout as `PEER: MSG`. The prompt goes to stderr, and only when stdin is a
/// terminal.
pub struct Stdio {
    peer: &'static str,
    prompt: Option<&'static str>,
}

impl Stdio {
    pub fn new(peer: &'static str, prompt: &'static str) -> Stdio {
        let prompt = io::stdin().is_terminal().then_some(prompt);
        Stdio { peer, prompt }
    }
}

impl ChatHandler for Stdio {
    fn next_message(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(prompt) = self.prompt {
            eprint!("{prompt}");
        }
        let mut line = String::new();
        match io::stdin().lock().read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => {
                let text = line.strip_suffix('\n').unwrap_or(&line);
                let text = text.strip_suffix('\r').unwrap_or(text);
                Ok(Some(text.as_bytes().to_vec()))
            }
            Err(e) => Err(tcpchat::Error::Callback(format!("reading stdin: {e}"))),
        }
    }

    fn on_message(&mut self, msg: &[u8]) -> Result<()> {
        // A raw peer such as nc sends its newline too: do not print it twice.
        let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
        let msg = msg.strip_suffix(b"\r").unwrap_or(msg);
        let mut out = io::stdout().lock();
        writeln!(out, "{}: {}", self.peer, String::from_utf8_lossy(msg))
            .and_then(|()| out.flush())
            .map_err(|e| tcpchat::Error::Callback(format!("writing stdout: {e}")))
    }
}

/// Print a fatal error to stderr and exit 1.
pub fn die(program: &str, e: tcpchat::Error) -> ! {
    eprintln!("{program}: {e}");
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
/// terminal"): the bytes that could move the cursor, clear the screen,
/// reorder or hide text are written in a visible notation instead, and the
/// rest is kept as it is.
///
/// * C0 controls except TAB, and DEL: `\x1b`, `\x0d`, `\x7f`;
/// * C1 controls (U+0080 to U+009F) and the invisible format characters
///   U+200B-U+200F, U+2028-U+202E, U+2060-U+2069, U+FEFF: `\u{85}`, `\u{202e}`;
/// * bytes that are not UTF-8: `\xff`, one escape per byte.
///
/// The C (`fput_printable`) and Python (`printable`) examples write the same.
pub fn printable(msg: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while !rest.is_empty() {
        // The longest valid UTF-8 start, then the bad bytes after it (if any).
        let (text, bad) = match std::str::from_utf8(rest) {
            Ok(text) => (text, &rest[rest.len()..]),
            Err(e) => {
                let (good, after) = rest.split_at(e.valid_up_to());
                let bad = e.error_len().unwrap_or(after.len());
                (std::str::from_utf8(good).unwrap_or_default(), &after[..bad])
            }
        };
        for c in text.chars() {
            match c {
                '\t' => out.push(c),
                '\0'..='\x1f' | '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                '\u{80}'..='\u{9f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}' => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                _ => out.push(c),
            }
        }
        for b in bad {
            let _ = write!(out, "\\x{b:02x}");
        }
        rest = &rest[text.len() + bad.len()..];
    }
    out
}
