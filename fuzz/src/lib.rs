//! What the fuzz targets check, as plain functions over one input each.
//!
//! The fuzz targets (`fuzz_targets/*.rs`) call these, and so does
//! `tests/fuzz_corpus.rs` in the normal test suite (it includes this file),
//! which replays every input of `fuzz/corpus/` without the fuzzer. Each
//! function panics on a bug and only then.
//!
//! Input layout of the decoder targets: byte 0 picks the mode and the
//! maximum message size, byte 1 seeds the split of the stream into reads,
//! the rest is the stream (or, in round-trip mode, the messages).
//!
//! * Stream mode: the decoder, fed the stream in pieces, must return exactly
//!   what a simple reference parser of the wire format returns for the whole
//!   stream (messages, then at most one error of the right kind), whatever
//!   the split; it never holds more than the limit plus one piece.
//! * Round-trip mode: the rest is cut into messages, which are encoded and
//!   decoded again (in pieces): the same messages must come out.

use tcpchat::framing::{encode, Decoder};
use tcpchat::{Framing, Status};

/// What a decoder returns for a whole stream: messages, then how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<Vec<u8>>,
    /// `None`: the stream ended cleanly; else the error's status.
    error: Option<Status>,
}

/// The maximum message sizes tried; small ones make the limits reachable.
const MAXES: [usize; 8] = [1, 2, 3, 7, 16, 100, 1000, 1 << 20];

/// The pieces a stream is fed in: lengths from a small PRNG seeded by `seed`.
fn pieces(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = match x % 4 {
            0 => 1,
            1 => 1 + (x >> 8) as usize % 8,
            2 => 1 + (x >> 8) as usize % 300,
            _ => left,
        }
        .min(left);
        out.push(n);
        left -= n;
    }
    out
}

/// Feed `stream` to a new decoder in the pieces `seed` picks, taking every
/// message after each piece, then end the stream.
fn decode(framing: Framing, max: usize, seed: u8, stream: &[u8]) -> Outcome {
    let mut d = Decoder::new(framing, max, 1024);
    let mut messages = Vec::new();
    let mut pos = 0;
    let mut sizes = pieces(seed, stream.len());
    sizes.push(0); // then end of stream
    for n in sizes {
        if n == 0 {
            d.set_eof();
        } else {
            d.feed(&stream[pos..pos + n]);
            pos += n;
        }
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    assert!(
                        m.len() <= max,
                        "a message of {} bytes passed the limit of {max}",
                        m.len()
                    );
                    messages.push(m.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        messages,
                        error: Some(e.status()),
                    }
                }
            }
        }
        // Once drained, never more than one unfinished message and its framing.
        assert!(
            d.buffered() <= max + 4,
            "{framing}: {} bytes buffered with a limit of {max} after a piece of {n}",
            d.buffered()
        );
    }
    assert_eq!(
        d.buffered(),
        0,
        "{framing}: bytes left over at the end of the stream"
    );
    Outcome {
        messages,
        error: None,
    }
}

/// The line format, read the simple way: split at `\n`, drop one `\r`
/// before it; a line over `max` is an error; the last line may lack its
/// `\n` (and then keeps a final `\r`).
fn reference_lines(max: usize, stream: &[u8]) -> Outcome {
    let mut messages = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(p) => {
                let l = &rest[..p];
                (l.strip_suffix(b"\r").unwrap_or(l), &rest[p + 1..])
            }
            None => (rest, &rest[rest.len()..]),
        };
        if line.len() > max {
            return Outcome {
                messages,
                error: Some(Status::MessageTooLarge),
            };
        }
        messages.push(line.to_vec());
        rest = next;
    }
    Outcome {
        messages,
        error: None,
    }
}

/// The frame format, read the simple way: a 4-byte big-endian length, then
/// that many bytes; a length over `max` is an error, and so is a stream
/// ending inside a header or a payload.
fn reference_frames(max: usize, stream: &[u8]) -> Outcome {
    let mut messages = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Outcome {
                messages,
                error: Some(Status::Protocol),
            };
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > max {
            return Outcome {
                messages,
                error: Some(Status::MessageTooLarge),
            };
        }
        if rest.len() - 4 < len {
            return Outcome {
                messages,
                error: Some(Status::Protocol),
            };
        }
        messages.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    Outcome {
        messages,
        error: None,
    }
}

/// Cut `data` into messages at each byte 0xFF (dropped), and keep those
/// `framing` can carry: no `\n` in a line (it would be refused on send);
/// within `max`.
fn messages_of(framing: Framing, max: usize, data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|&b| b == 0xFF)
        .map(|m| {
            let mut m = m.to_vec();
            if framing == Framing::Line {
                m.retain(|&b| b != b'\n');
            }
            m.truncate(max);
            m
        })
        .collect()
}

fn roundtrip(framing: Framing, max: usize, seed: u8, data: &[u8]) {
    let sent = messages_of(framing, max, data);
    let mut wire = Vec::new();
    for m in &sent {
        encode(framing, max, m, &mut wire).expect("a message within the rules is encoded");
    }
    let got = decode(framing, max, seed, &wire);
    // Line framing drops a `\r` that ends a line: a message sent with a
    // final `\r` arrives without it.
    let want: Vec<Vec<u8>> = sent
        .iter()
        .map(|m| match framing {
            Framing::Line => m.strip_suffix(b"\r").unwrap_or(m).to_vec(),
            _ => m.clone(),
        })
        .collect();
    assert_eq!(
        got.error, None,
        "{framing}: decoding what was encoded failed"
    );
    assert_eq!(
        got.messages, want,
        "{framing}: round trip changed the messages"
    );
}

fn decoder_target(framing: Framing, data: &[u8]) {
    let [mode, seed, rest @ ..] = data else {
        return;
    };
    let max = MAXES[(mode & 7) as usize];
    if mode & 0x80 != 0 {
        return roundtrip(framing, max, *seed, rest);
    }
    let want = match framing {
        Framing::Line => reference_lines(max, rest),
        _ => reference_frames(max, rest),
    };
    let got = decode(framing, max, *seed, rest);
    assert_eq!(got, want, "{framing}, max {max}, split seed {seed}");
}

/// The line decoder against the reference, and the line round trip.
pub fn line_decoder(data: &[u8]) {
    decoder_target(Framing::Line, data);
}

/// The frame decoder against the reference, and the frame round trip.
pub fn frame_decoder(data: &[u8]) {
    decoder_target(Framing::Frame, data);
}

/// The room's reading of a member's lines (commands, names, messages, bad
/// UTF-8, lines over the limit): byte 0 picks the limit, the rest is what
/// the member sends.
pub fn room_parser(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let max = MAXES[(first & 7) as usize];
    let said = tcpchat::room::fuzz_lines(max, rest);
    assert!(said <= rest.len() + 1);
}
