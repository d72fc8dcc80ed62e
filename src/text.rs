//! Text that reaches a terminal: one visible notation for the characters a
//! stranger could use to repaint, retitle or query someone else's terminal.
//!
//! The room applies it to every line it relays, and every example program
//! applies it to the peer text it prints, so a line typed in `nc` can never
//! clear a screen, set a clipboard (OSC 52), move the cursor, overwrite a
//! line with a bare carriage return, make the terminal answer a query into
//! its user's input, or reorder text with bidirectional controls.
//!
//! The notation (the same in Rust, C and Python):
//!
//! | input | shown as |
//! | --- | --- |
//! | C0 controls U+0000–U+001F except TAB, and DEL (U+007F) | `\x1b`, `\x0d`, `\x7f` (two lower-case hex digits) |
//! | C1 controls U+0080–U+009F | `\u{9b}` |
//! | invisible format characters U+200B–U+200F, U+2028–U+202E, U+2060–U+2069, U+FEFF | `\u{202e}` |
//! | a byte that is not UTF-8 (only in [`escape_bytes`]) | `\xff` |
//!
//! Everything else, TAB and backslash included, is kept as it is: ordinary
//! text in any script reads the same.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` is shown escaped by [`escape_text`]: a C0 control other
/// than TAB, DEL, a C1 control, or an invisible format character that
/// reorders or hides text.
pub fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

fn push_escaped(out: &mut String, c: char) {
    let n = c as u32;
    if n < 0x80 {
        let _ = write!(out, "\\x{n:02x}");
    } else {
        let _ = write!(out, "\\u{{{n:x}}}");
    }
}

/// `text` with every character of [`needs_escape`] replaced by its visible
/// notation (see the [module documentation](self)); borrowed unchanged when
/// there is none, which is the common case and allocates nothing.
///
/// ```
/// assert_eq!(tcpchat::text::escape_text("hi\x1b[2J"), "hi\\x1b[2J");
/// assert_eq!(tcpchat::text::escape_text("a\u{202e}b"), "a\\u{202e}b");
/// assert_eq!(tcpchat::text::escape_text("tab\tok"), "tab\tok");
/// ```
pub fn escape_text(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(needs_escape) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape_text`] for bytes that may not be UTF-8: every byte that is not
/// part of a valid UTF-8 sequence is shown as `\xHH`.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return escape_text(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.push_str(&escape_text(text));
                return Cow::Owned(out);
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(&escape_text(std::str::from_utf8(valid).unwrap_or_default()));
                let bad = e.error_len().unwrap_or(after.len());
                for b in &after[..bad] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                rest = &after[bad..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hostile payloads of the adversarial test, each with what a
    /// terminal must show instead.
    const PAYLOADS: [(&str, &str); 16] = [
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]52;c;ZWNobyBwd25lZA==\x07", "\\x1b]52;c;ZWNobyBwd25lZA==\\x07"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("real\rfake", "real\\x0dfake"),
        ("\x1b[1A\x1b[2K", "\\x1b[1A\\x1b[2K"),
        ("a\x08b", "a\\x08b"),
        ("\x07", "\\x07"),
        ("\0", "\\x00"),
        ("\x0b\x0c", "\\x0b\\x0c"),
        ("\x7f", "\\x7f"),
        ("\u{85}\u{9b}", "\\u{85}\\u{9b}"),
        ("\u{2028}", "\\u{2028}"),
        ("\u{202e}evil", "\\u{202e}evil"),
        ("zero\u{200b}width", "zero\\u{200b}width"),
        ("\x1b[6n", "\\x1b[6n"),
        ("\u{feff}\u{2066}", "\\u{feff}\\u{2066}"),
    ];

    #[test]
    fn every_hostile_payload_is_shown_escaped() {
        for (input, shown) in PAYLOADS {
            let out = escape_text(input);
            assert_eq!(out, shown, "{input:?}");
            assert!(!out.chars().any(needs_escape), "{out:?}");
        }
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for s in ["hello", "tab\there", "back\\slash", "héllo wörld", "日本語", "emoji 🎉", ""] {
            assert!(matches!(escape_text(s), Cow::Borrowed(_)), "{s:?}");
        }
    }

    #[test]
    fn invalid_utf8_bytes_are_shown_as_hex() {
        assert_eq!(escape_bytes(b"ok\xff\xfe\x1b"), "ok\\xff\\xfe\\x1b");
        assert_eq!(escape_bytes("é".as_bytes()), "é");
    }
}
