//! The room's words, as pure code: how a client's line is read (message or
//! command), the rules for names, and every line the room writes. The exact
//! formats are listed in the documentation of [`crate::room`].

use std::sync::Arc;

use super::LeaveReason;

/// The longest name, in characters (names are ASCII, so also in bytes).
pub(crate) const MAX_NAME_LEN: usize = 32;

/// The commands, as the help and error lines list them.
pub(crate) const COMMANDS: &str = "/nick NAME, /who, /quit";

/// The longest list `/who` writes before it ends with "and N more" (bytes).
const WHO_LIMIT: usize = 8 * 1024;

/// What one line from a client asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input<'a> {
    /// An empty line: ignored.
    Empty,
    /// A chat message for everyone else.
    Say(&'a str),
    /// `/nick NAME` (the argument trimmed; empty when missing).
    Nick(&'a str),
    /// `/who`.
    Who,
    /// `/quit`.
    Quit,
    /// `/help`.
    Help,
    /// Any other `/word`: the word, with its slash.
    Unknown(&'a str),
    /// The line is not UTF-8.
    BadUtf8,
}

/// Read one line (without its newline). A line starting with `/` is a
/// command, except that `//` escapes a message that starts with a slash.
/// Command names are case-insensitive.
pub(crate) fn parse(line: &[u8]) -> Input<'_> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Input::BadUtf8;
    };
    if text.is_empty() {
        return Input::Empty;
    }
    if text.starts_with("//") {
        return Input::Say(&text[1..]);
    }
    let Some(command) = text.strip_prefix('/') else {
        return Input::Say(text);
    };
    let (word, rest) = match command.find(char::is_whitespace) {
        Some(at) => (&command[..at], command[at..].trim()),
        None => (command, ""),
    };
    if word.eq_ignore_ascii_case("nick") {
        Input::Nick(rest)
    } else if word.eq_ignore_ascii_case("who") {
        Input::Who
    } else if word.eq_ignore_ascii_case("quit") {
        Input::Quit
    } else if word.eq_ignore_ascii_case("help") {
        Input::Help
    } else {
        Input::Unknown(&text[..word.len() + 1])
    }
}

/// Whether `name` may be taken: 1 to 32 ASCII letters, digits, `_` or `-`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The key under which a name is unique: names differing only in case are
/// the same name.
pub(crate) fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A line ready to queue: the text and its newline, shared by every receiver.
pub(crate) fn line(text: &str) -> Arc<[u8]> {
    let mut v = Vec::with_capacity(text.len() + 1);
    v.extend_from_slice(text.as_bytes());
    v.push(b'\n');
    v.into()
}

/// `NAME: TEXT`, what the others receive for a message.
pub(crate) fn chat(name: &str, text: &str) -> Arc<[u8]> {
    let mut v = Vec::with_capacity(name.len() + 2 + text.len() + 1);
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b": ");
    v.extend_from_slice(text.as_bytes());
    v.push(b'\n');
    v.into()
}

pub(crate) fn welcome(name: &str) -> Arc<[u8]> {
    line(&format!("* welcome, you are {name} (commands: {COMMANDS})"))
}

pub(crate) fn joined(name: &str) -> Arc<[u8]> {
    line(&format!("* {name} joined"))
}

/// The notice the others get when a member leaves; `None` for a shutdown,
/// where everybody gets the closing line instead.
pub(crate) fn left(name: &str, reason: LeaveReason) -> Option<Arc<[u8]>> {
    let text = match reason {
        LeaveReason::Quit | LeaveReason::Closed => format!("* {name} left"),
        LeaveReason::Lost => format!("* {name} left (connection lost)"),
        LeaveReason::SlowReader => format!("* {name} was dropped (too slow to read)"),
        LeaveReason::IdleTimeout => format!("* {name} was dropped (unfinished line for too long)"),
        LeaveReason::LineTooLong => format!("* {name} was dropped (line too long)"),
        LeaveReason::Flood => format!("* {name} was dropped (excess flood)"),
        LeaveReason::Shutdown => return None,
    };
    Some(line(&text))
}

pub(crate) fn renamed(old: &str, new: &str) -> Arc<[u8]> {
    line(&format!("* {old} is now known as {new}"))
}

pub(crate) fn you_are_now(name: &str) -> Arc<[u8]> {
    line(&format!("* you are now known as {name}"))
}

pub(crate) fn you_already_are(name: &str) -> Arc<[u8]> {
    line(&format!("* you are already known as {name}"))
}

pub(crate) fn name_taken(name: &str) -> Arc<[u8]> {
    line(&format!("error: the name {name} is taken"))
}

/// A name given up moments ago by a member from another address, free
/// again in `left`.
pub(crate) fn name_held(name: &str, left: std::time::Duration) -> Arc<[u8]> {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    line(&format!(
        "error: the name {name} was given up moments ago; it is free again in {secs}s"
    ))
}

pub(crate) fn name_invalid(name: &str) -> Arc<[u8]> {
    if name.is_empty() {
        return line("error: usage: /nick NAME");
    }
    line(&format!(
        "error: invalid name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, _ or -"
    ))
}

pub(crate) fn unknown_command(word: &str) -> Arc<[u8]> {
    line(&format!(
        "error: unknown command {word} (commands: {COMMANDS})"
    ))
}

pub(crate) fn help() -> Arc<[u8]> {
    line(&format!(
        "* commands: {COMMANDS}; a line starting with // sends it with one slash"
    ))
}

pub(crate) fn bad_utf8() -> Arc<[u8]> {
    line("error: your line is not valid UTF-8; it was not sent")
}

/// A line whose relay (`NAME: ` and the text, terminal controls escaped)
/// would pass the room's relay limit: refused, the sender stays.
pub(crate) fn too_long_to_relay(len: usize, max: usize) -> Arc<[u8]> {
    line(&format!(
        "error: your line would be {len} bytes relayed (at most {max}); it was not sent"
    ))
}

pub(crate) fn too_long(max: usize) -> Arc<[u8]> {
    line(&format!("error: line longer than {max} bytes; closing"))
}

pub(crate) fn idle(after: std::time::Duration) -> Arc<[u8]> {
    line(&format!("error: no complete line for {after:?}; closing"))
}

pub(crate) fn excess_flood() -> Arc<[u8]> {
    line("error: excess flood")
}

pub(crate) fn bye() -> Arc<[u8]> {
    line("* bye")
}

pub(crate) fn shutting_down() -> Arc<[u8]> {
    line("* server shutting down")
}

pub(crate) fn posted(text: &str) -> Arc<[u8]> {
    line(&format!("* {text}"))
}

/// `* N online: a, b, c` in the order given, cut short with `, and K more`
/// when the list would pass a few kilobytes.
pub(crate) fn who<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Arc<[u8]> {
    let total = names.len();
    let mut text = format!("* {total} online: ");
    let mut shown = 0;
    for name in names {
        if text.len() + name.len() > WHO_LIMIT {
            break;
        }
        if shown > 0 {
            text.push_str(", ");
        }
        text.push_str(name);
        shown += 1;
    }
    if shown < total {
        text.push_str(&format!(", and {} more", total - shown));
    }
    line(&text)
}

/// Not part of the API: the entry point of the fuzz targets (`fuzz/`) and
/// of `tests/fuzz_corpus.rs`. Reads `data` as a member's byte stream does
/// (line framing, lines over `max` bytes refused), parses each line and
/// builds what the room would write for it, checking that every line
/// written is one whole line. Returns how many lines would be broadcast;
/// panics only on a bug.
#[doc(hidden)]
pub fn fuzz_lines(max: usize, data: &[u8]) -> usize {
    let mut decoder = crate::framing::Decoder::new(crate::config::Framing::Line, max, 1);
    decoder.feed(data);
    decoder.set_eof();
    let mut said = 0;
    while let Ok(Some(line)) = decoder.next_message() {
        assert!(line.len() <= max.max(1) && !line.contains(&b'\n'));
        let out = match parse(line) {
            Input::Empty => continue,
            Input::Say(t) => {
                assert!(!t.is_empty() && line.ends_with(t.as_bytes()));
                said += 1;
                chat("guest1", t)
            }
            Input::Nick(n) if valid_name(n) => {
                assert!(n.bytes().all(|b| b.is_ascii_graphic()) && name_key(n).len() == n.len());
                renamed("guest1", n)
            }
            Input::Nick(n) => name_invalid(n),
            Input::Who => who(["guest1", "guest2"].into_iter()),
            Input::Quit => bye(),
            Input::Help => help(),
            Input::Unknown(w) => {
                assert!(w.starts_with('/') && !w.contains(char::is_whitespace));
                unknown_command(w)
            }
            Input::BadUtf8 => {
                assert!(std::str::from_utf8(line).is_err());
                bad_utf8()
            }
        };
        assert_eq!(out.iter().position(|&b| b == b'\n'), Some(out.len() - 1));
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_or_commands() {
        assert_eq!(parse(b"hello"), Input::Say("hello"));
        assert_eq!(parse(b""), Input::Empty);
        assert_eq!(parse(b" "), Input::Say(" "));
        assert_eq!(parse(b"//nick x"), Input::Say("/nick x"));
        assert_eq!(parse(b"/nick  alice "), Input::Nick("alice"));
        assert_eq!(parse(b"/NICK bob"), Input::Nick("bob"));
        assert_eq!(parse(b"/nick"), Input::Nick(""));
        assert_eq!(parse(b"/nick a b"), Input::Nick("a b"));
        assert_eq!(parse(b"/who"), Input::Who);
        assert_eq!(parse(b"/quit now"), Input::Quit);
        assert_eq!(parse(b"/help"), Input::Help);
        assert_eq!(parse(b"/frob x"), Input::Unknown("/frob"));
        assert_eq!(parse(b"/"), Input::Unknown("/"));
        assert_eq!(parse(b"caf\xc3"), Input::BadUtf8);
        assert_eq!(parse("café".as_bytes()), Input::Say("café"));
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(valid_name("alice"));
        assert!(valid_name("Bob_2-x"));
        assert!(valid_name(&"a".repeat(32)));
        assert!(!valid_name(&"a".repeat(33)));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("é"));
        assert!(!valid_name("a:b"));
        assert_eq!(name_key("Alice"), "alice");
    }

    #[test]
    fn formats() {
        assert_eq!(&*chat("alice", "hi"), b"alice: hi\n");
        assert_eq!(&*left("bob", LeaveReason::Quit).unwrap(), b"* bob left\n");
        assert!(left("bob", LeaveReason::Shutdown).is_none());
        assert_eq!(&*renamed("a", "b"), b"* a is now known as b\n");
        assert_eq!(&*name_invalid(""), b"error: usage: /nick NAME\n");
        let names = ["a", "b", "c"];
        assert_eq!(&*who(names.iter().copied()), b"* 3 online: a, b, c\n");
    }

    #[test]
    fn who_is_bounded() {
        let names: Vec<String> = (0..10_000).map(|i| format!("guest{i}")).collect();
        let l = who(names.iter().map(String::as_str));
        assert!(l.len() < WHO_LIMIT + 64, "{}", l.len());
        let s = std::str::from_utf8(&l).unwrap();
        assert!(s.starts_with("* 10000 online: guest0, guest1"));
        assert!(s.trim_end().ends_with("more"), "{s}");
    }
}
