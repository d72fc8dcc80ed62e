//! Text that reaches a terminal: the room relays no terminal control raw.
//! The 16 hostile payloads of the adversarial test go through a real room
//! between two members connected with tcpchat's own client; each must arrive
//! in the visible notation of `tcpchat::text`, and arrive at all. With
//! `raw_text` on, the same bytes arrive as typed.

use std::time::Duration;

use tcpchat::text::{escape_text, needs_escape};
use tcpchat::{Config, Conn, Room, RoomConfig};

const LIMIT: Duration = Duration::from_secs(10);

/// The payloads (every one is valid UTF-8: the room refuses other bytes).
const PAYLOADS: [&str; 16] = [
    "\x1b[2J",
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "\x1b]0;pwned\x07",
    "real line\rfake line",
    "\x1b[1A\x1b[2K* server shutting down",
    "back\x08space",
    "bell\x07",
    "nul\0byte",
    "vt\x0bff\x0c",
    "del\x7f",
    "c1 \u{85} \u{9b}",
    "line\u{2028}separator",
    "\u{202e}txt.exe",
    "zero\u{200b}width",
    "\x1b[6n",
    "bom\u{feff} isolate\u{2066}",
];

fn join(room: &Room) -> Conn {
    let config = Config::default().with_read_timeout(Some(LIMIT)).with_write_timeout(Some(LIMIT));
    tcpchat::connect("127.0.0.1", room.local_addr().port(), &config).expect("join the room")
}

fn line(conn: &mut Conn) -> String {
    let msg = conn.recv().expect("a line from the room").expect("the room closed");
    String::from_utf8(msg).expect("the room writes UTF-8")
}

/// Read lines until one starts with `prefix`; return it.
fn line_starting(conn: &mut Conn, prefix: &str) -> String {
    loop {
        let l = line(conn);
        if l.starts_with(prefix) {
            return l;
        }
    }
}

/// Two members; returns (speaker, listener, the speaker's name).
fn two_members(room: &Room) -> (Conn, Conn, String) {
    let mut a = join(room);
    let welcome = line_starting(&mut a, "* welcome, you are ");
    let name = welcome["* welcome, you are ".len()..].split(' ').next().unwrap().to_string();
    let mut b = join(room);
    line_starting(&mut b, "* welcome");
    line_starting(&mut a, "* ");
    (a, b, name)
}

#[test]
fn no_terminal_control_reaches_a_member_raw() {
    let room = Room::bind("127.0.0.1", 0, Config::default()).unwrap();
    room.start().unwrap();
    let (mut a, mut b, name) = two_members(&room);
    for p in PAYLOADS {
        a.send(p.as_bytes()).unwrap();
        let got = line_starting(&mut b, &format!("{name}: "));
        let text = &got[name.len() + 2..];
        assert!(!text.chars().any(needs_escape), "{p:?} arrived with a raw control: {got:?}");
        assert_eq!(text, escape_text(p), "{p:?}");
        assert_ne!(text, p, "{p:?} arrived unchanged");
    }
    // Announcements from the program are escaped too.
    room.post("announce\x1b[2J").unwrap();
    assert_eq!(line_starting(&mut b, "* announce"), "* announce\\x1b[2J");
    room.shutdown();
}

#[test]
fn raw_text_relays_the_bytes_as_typed() {
    let room = Room::bind("127.0.0.1", 0, RoomConfig::from(Config::default()).with_raw_text(true)).unwrap();
    room.start().unwrap();
    let (mut a, mut b, name) = two_members(&room);
    a.send("\x1b[2J\u{202e}".as_bytes()).unwrap();
    assert_eq!(line_starting(&mut b, &format!("{name}: ")), format!("{name}: \x1b[2J\u{202e}"));
    // Switched off while running: escaped again from the next line on.
    room.set_raw_text(false);
    a.send(b"\x1b[2J").unwrap();
    assert_eq!(line_starting(&mut b, &format!("{name}: ")), format!("{name}: \\x1b[2J"));
    room.shutdown();
}
