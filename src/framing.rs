//! The wire formats, as pure code: bytes in, messages out.
//!
//! [`Decoder`] turns a byte stream, fed in arbitrary pieces, into messages;
//! [`encode`] appends one message in wire form to a buffer. Nothing here
//! touches a socket, so every edge of the formats (a message arriving one byte
//! at a time, many messages in one read, a length prefix split across reads,
//! an empty message, a missing final newline at end of stream, hostile sizes)
//! is unit-tested on its own.
//!
//! Limits are enforced before memory is committed: a frame whose length prefix
//! exceeds the maximum is refused as soon as its 4 header bytes are seen, and a
//! line is refused as soon as more bytes than the maximum arrive without a
//! newline, so the buffer never holds more than `max_message_size` plus one
//! read (and the 4 bytes of a frame header): its growth by doubling is
//! capped there.

use std::io::{self, Read};

use crate::config::Framing;
use crate::error::{Error, Result};

/// The size of one read in `line` and `frame` framing: big enough to decode
/// many small messages per system call.
pub const READ_CHUNK: usize = 64 * 1024;

/// Where one decoded message lies inside the decoder's buffer.
///
/// Returned by [`Decoder::peek`]; pass it to [`Decoder::message`] to see the
/// bytes and to [`Decoder::consume`] to drop them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    start: usize,
    end: usize,
    next: usize,
}

impl Located {
    /// The message's length in bytes (payload only).
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Turns a byte stream into messages of one [`Framing`].
///
/// Feed it bytes with [`Decoder::feed`] (or let it read from a reader with
/// [`Decoder::read_from`]), then take messages with [`Decoder::next_message`]
/// until it returns `Ok(None)`; call [`Decoder::set_eof`] when the stream has
/// ended so that a final line without a newline is delivered and a frame cut
/// short is reported.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    max: usize,
    raw_chunk: usize,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Line framing: bytes after `start` already searched for `\n`.
    scanned: usize,
    eof: bool,
    /// The last read returned less than it asked for: the socket was
    /// drained, so the next read would most likely find nothing.
    drained: bool,
}

impl Decoder {
    /// A decoder for `framing` that refuses messages over `max_message_size`
    /// bytes; in `raw` framing one message is at most `raw_buffer_size` bytes.
    pub fn new(framing: Framing, max_message_size: usize, raw_buffer_size: usize) -> Decoder {
        Decoder {
            framing,
            max: max_message_size.max(1),
            raw_chunk: raw_buffer_size.max(1),
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
            drained: false,
        }
    }

    /// The framing this decoder reads.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Bytes received but not yet returned as messages.
    #[inline]
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether [`Decoder::set_eof`] was called.
    #[inline]
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Whether the last [`Decoder::read_from`] returned less than it asked
    /// for (or would have blocked): the source was drained then, so a
    /// non-blocking reader should wait for readiness before reading again
    /// rather than try a read that would most likely fail.
    #[inline]
    pub fn source_drained(&self) -> bool {
        self.drained
    }

    /// Mark the end of the stream: no more bytes will come.
    pub fn set_eof(&mut self) {
        self.eof = true;
    }

    /// Release the buffer when it holds nothing, so that an idle connection
    /// costs no buffer memory.
    pub fn shrink_if_empty(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        }
    }

    /// Append bytes received from the peer.
    pub fn feed(&mut self, data: &[u8]) {
        let need = data.len();
        self.make_room(need);
        self.buf[self.end..self.end + need].copy_from_slice(data);
        self.end += need;
    }

    /// Read once from `reader` into the buffer and return what `read` returned.
    /// `Ok(0)` means end of stream (and marks it). Errors, including
    /// `WouldBlock` and `Interrupted`, are returned as they are.
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        let want = match self.framing {
            Framing::Raw => self.raw_chunk,
            _ => READ_CHUNK,
        };
        self.make_room(want);
        let limit = match self.framing {
            // One read is one message: never read more than a buffer's worth.
            Framing::Raw => (self.end + self.raw_chunk).min(self.buf.len()),
            _ => self.buf.len(),
        };
        let n = match reader.read(&mut self.buf[self.end..limit]) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.drained = true;
                }
                return Err(e);
            }
        };
        self.drained = n < limit - self.end;
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(n)
    }

    /// Ensure at least `want` free bytes after `end` (and room for the frame in
    /// progress), moving the live bytes to the front or growing as needed.
    fn make_room(&mut self, want: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        }
        let live = self.end - self.start;
        let mut need = live + want;
        if self.framing == Framing::Frame && live >= 4 {
            let len = self.frame_len() as usize;
            // Only reached for lengths within the limit (peek refuses others).
            // Room for the whole frame, but only as its bytes come: at most
            // twice what has arrived, so that a length prefix alone commits
            // no memory (a peer may promise the limit and send nothing more).
            if len <= self.max {
                need = need.max((4 + len).min(2 * (live + want)));
            }
        }
        if self.buf.len() - self.end >= want && self.buf.len() - self.start >= need {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end = live;
            self.start = 0;
        }
        if self.buf.len() < need {
            // Doubling keeps growth cheap, but never past what one message
            // and one read can need: the limit, its framing (a 4-byte
            // header, or `\r\n`) and a read. Without the cap a buffer
            // could double to twice the limit.
            let cap = self.max.saturating_add(4).saturating_add(want);
            let new_len = need.max((self.buf.len() * 2).min(cap)).max(want);
            self.buf.resize(new_len, 0);
        }
    }

    #[inline]
    fn frame_len(&self) -> u32 {
        let h = &self.buf[self.start..self.start + 4];
        u32::from_be_bytes([h[0], h[1], h[2], h[3]])
    }

    /// Find the next complete message without consuming it.
    ///
    /// `Ok(None)` means more bytes are needed (or, after end of stream, that
    /// nothing is left). An error means the stream broke the format and the
    /// connection should be closed: [`Error::MessageTooLarge`] for an oversize
    /// line or frame, [`Error::Protocol`] for a frame cut short by end of
    /// stream.
    #[inline(always)]
    pub fn peek(&mut self) -> Result<Option<Located>> {
        match self.ready() {
            Some(at) => Ok(Some(at)),
            None => self.peek_slow(),
        }
    }

    /// The fast path of [`Decoder::peek`], inlined into the receive loops: a
    /// complete line or frame within the limit. `None` leaves everything else
    /// (more bytes needed, end of stream, a limit broken, raw framing) to
    /// `peek_slow`.
    #[inline(always)]
    fn ready(&mut self) -> Option<Located> {
        match self.framing {
            Framing::Frame => {
                let avail = self.end - self.start;
                if avail >= 4 {
                    let len = self.frame_len() as usize;
                    if len <= self.max && avail - 4 >= len {
                        let start = self.start + 4;
                        return Some(Located {
                            start,
                            end: start + len,
                            next: start + len,
                        });
                    }
                }
            }
            Framing::Line => {
                let from = self.start + self.scanned;
                match find_newline(&self.buf[from..self.end]) {
                    Some(pos) => {
                        let nl = from + pos;
                        let mut end = nl;
                        if end > self.start && self.buf[end - 1] == b'\r' {
                            end -= 1;
                        }
                        if end - self.start <= self.max {
                            return Some(Located {
                                start: self.start,
                                end,
                                next: nl + 1,
                            });
                        }
                    }
                    // Searched: `peek_slow` need not search these bytes again.
                    None => self.scanned = self.end - self.start,
                }
            }
            Framing::Raw => {}
        }
        None
    }

    #[inline(never)]
    fn peek_slow(&mut self) -> Result<Option<Located>> {
        let avail = self.end - self.start;
        match self.framing {
            Framing::Raw => {
                if avail == 0 {
                    return Ok(None);
                }
                let n = avail.min(self.raw_chunk);
                Ok(Some(Located {
                    start: self.start,
                    end: self.start + n,
                    next: self.start + n,
                }))
            }
            Framing::Line => {
                let from = self.start + self.scanned;
                if let Some(pos) = find_newline(&self.buf[from..self.end]) {
                    let nl = from + pos;
                    let mut end = nl;
                    if end > self.start && self.buf[end - 1] == b'\r' {
                        end -= 1;
                    }
                    if end - self.start > self.max {
                        return Err(self.too_large((end - self.start) as u64));
                    }
                    return Ok(Some(Located {
                        start: self.start,
                        end,
                        next: nl + 1,
                    }));
                }
                self.scanned = avail;
                // Without a newline the payload is at least avail - 1 bytes (a
                // final '\r' might still be stripped).
                if avail > self.max + 1 {
                    return Err(self.too_large(avail as u64));
                }
                if self.eof && avail > 0 {
                    // The final line keeps a last '\r' (there is no '\n' for
                    // it to belong to), so the whole rest counts.
                    if avail > self.max {
                        return Err(self.too_large(avail as u64));
                    }
                    return Ok(Some(Located {
                        start: self.start,
                        end: self.end,
                        next: self.end,
                    }));
                }
                Ok(None)
            }
            Framing::Frame => {
                if avail < 4 {
                    if self.eof && avail > 0 {
                        return Err(Error::Protocol(format!(
                            "stream ended inside a frame header ({avail} of 4 bytes)"
                        )));
                    }
                    return Ok(None);
                }
                let len = self.frame_len() as usize;
                if len > self.max {
                    return Err(self.too_large(len as u64));
                }
                if avail - 4 >= len {
                    let start = self.start + 4;
                    return Ok(Some(Located {
                        start,
                        end: start + len,
                        next: start + len,
                    }));
                }
                if self.eof {
                    return Err(Error::Protocol(format!(
                        "stream ended inside a frame ({} of {len} bytes)",
                        avail - 4
                    )));
                }
                Ok(None)
            }
        }
    }

    fn too_large(&self, size: u64) -> Error {
        Error::MessageTooLarge {
            size,
            max: self.max,
            context: String::new(),
        }
    }

    /// The bytes of a message found by [`Decoder::peek`].
    #[inline]
    pub fn message(&self, at: &Located) -> &[u8] {
        &self.buf[at.start..at.end]
    }

    /// Drop a message found by [`Decoder::peek`] (and the bytes framing it).
    #[inline]
    pub fn consume(&mut self, at: Located) {
        debug_assert!(at.next <= self.end && at.next >= self.start);
        self.start = at.next.min(self.end);
        self.scanned = 0;
    }

    /// Take the next complete message, if there is one: [`Decoder::peek`]
    /// then [`Decoder::consume`]. The slice stays valid until the decoder is
    /// next fed.
    pub fn next_message(&mut self) -> Result<Option<&[u8]>> {
        match self.peek()? {
            None => Ok(None),
            Some(at) => {
                self.consume(at);
                Ok(Some(&self.buf[at.start..at.end]))
            }
        }
    }
}

/// Append `msg` in wire form to `out`.
///
/// Refuses (with [`Error::InvalidArgument`] and `out` unchanged) a message
/// longer than `max_message_size` in `line` and `frame` framing, and a
/// message containing `\n` in `line` framing. `raw` messages go as they are,
/// whatever their size.
#[inline(always)]
pub fn encode(framing: Framing, max_message_size: usize, msg: &[u8], out: &mut Vec<u8>) -> Result<()> {
    // The fast path, inlined into the send loops: a frame or line that is
    // within the limit (and, for a line, has no newline). Everything else
    // (raw framing, refusals and their messages) is in `encode_slow`.
    match framing {
        Framing::Frame if msg.len() <= max_message_size => {
            out.reserve(msg.len() + 4);
            out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            out.extend_from_slice(msg);
            Ok(())
        }
        Framing::Line if msg.len() <= max_message_size && find_newline(msg).is_none() => {
            out.reserve(msg.len() + 1);
            out.extend_from_slice(msg);
            out.push(b'\n');
            Ok(())
        }
        _ => encode_slow(framing, max_message_size, msg, out),
    }
}

#[inline(never)]
fn encode_slow(framing: Framing, max_message_size: usize, msg: &[u8], out: &mut Vec<u8>) -> Result<()> {
    match framing {
        Framing::Raw => {
            // The same limit as the other framings, checked before a byte of
            // the message is read or a byte of memory reserved.
            check_size(msg.len(), max_message_size)?;
            out.extend_from_slice(msg);
        }
        Framing::Line => {
            check_size(msg.len(), max_message_size)?;
            if let Some(pos) = find_newline(msg) {
                return Err(Error::invalid(format!(
                    "a message in line framing cannot contain a newline (found one at byte {pos})"
                )));
            }
            out.reserve(msg.len() + 1);
            out.extend_from_slice(msg);
            out.push(b'\n');
        }
        Framing::Frame => {
            check_size(msg.len(), max_message_size)?;
            out.reserve(msg.len() + 4);
            out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            out.extend_from_slice(msg);
        }
    }
    Ok(())
}

/// The position of the first `\n` in `hay`.
///
/// Eight bytes at a time with the classic SWAR zero-byte test (64 bytes per
/// step while nothing is found), in safe code: several times faster than a
/// byte-by-byte scan on long lines, and as fast as libc's `memchr` on short
/// ones. The word test only says whether a word holds a newline; the exact
/// position is then found byte by byte within that word.
#[inline]
pub(crate) fn find_newline(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    #[inline(always)]
    fn word(w: &[u8]) -> u64 {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ NL;
        // Non-zero iff some byte of x is zero, i.e. some byte of w is '\n'.
        x.wrapping_sub(LO) & !x & HI
    }
    let mut i = 0;
    let mut blocks = hay.chunks_exact(64);
    for b in &mut blocks {
        let hit = (word(&b[0..8]) | word(&b[8..16]) | word(&b[16..24]) | word(&b[24..32]))
            | (word(&b[32..40]) | word(&b[40..48]) | word(&b[48..56]) | word(&b[56..64]));
        if hit != 0 {
            break;
        }
        i += 64;
    }
    let mut words = hay[i..].chunks_exact(8);
    for w in &mut words {
        if word(w) != 0 {
            return w.iter().position(|&b| b == b'\n').map(|p| i + p);
        }
        i += 8;
    }
    words.remainder().iter().position(|&b| b == b'\n').map(|p| i + p)
}

pub(crate) fn check_size(len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::MessageTooLarge {
            size: len as u64,
            max,
            context: " (refused on send)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    fn enc(framing: Framing, msgs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            encode(framing, 1 << 20, m, &mut out).unwrap();
        }
        out
    }

    fn drain(d: &mut Decoder) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            v.push(m.to_vec());
        }
        v
    }

    #[test]
    fn line_one_byte_at_a_time() {
        let wire = b"hello\r\nworld\n\n";
        let mut d = Decoder::new(Framing::Line, 100, 1024);
        let mut got = Vec::new();
        for b in wire {
            d.feed(&[*b]);
            got.extend(drain(&mut d));
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"world".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn line_many_in_one_read_and_missing_final_newline() {
        let mut d = Decoder::new(Framing::Line, 100, 1024);
        d.feed(b"a\nbb\nccc");
        assert_eq!(drain(&mut d), vec![b"a".to_vec(), b"bb".to_vec()]);
        assert_eq!(d.buffered(), 3);
        d.set_eof();
        assert_eq!(drain(&mut d), vec![b"ccc".to_vec()]);
        assert_eq!(d.next_message().unwrap(), None);
    }

    #[test]
    fn line_too_long_is_refused_before_buffering_more() {
        let mut d = Decoder::new(Framing::Line, 4, 1024);
        d.feed(b"abcd\r\n");
        assert_eq!(drain(&mut d), vec![b"abcd".to_vec()]);
        d.feed(b"abcde");
        assert_eq!(d.peek().unwrap(), None, "4 bytes plus a possible \\r");
        d.feed(b"f");
        let e = d.peek().unwrap_err();
        assert_eq!(e.status(), Status::MessageTooLarge);
        let mut d = Decoder::new(Framing::Line, 4, 1024);
        d.feed(b"abcde\n");
        assert_eq!(d.peek().unwrap_err().status(), Status::MessageTooLarge);
    }

    /// Found by the fuzz target `line_decoder`: a final line without its
    /// newline was delivered at end of stream with one byte over the limit.
    #[test]
    fn final_line_at_end_of_stream_obeys_the_limit() {
        let mut d = Decoder::new(Framing::Line, 4, 1024);
        d.feed(b"abcd");
        d.set_eof();
        assert_eq!(drain(&mut d), vec![b"abcd".to_vec()]);
        for last in [&b"abcde"[..], b"abcd\r"] {
            let mut d = Decoder::new(Framing::Line, 4, 1024);
            d.feed(last);
            assert_eq!(d.peek().unwrap(), None, "a newline may still come");
            d.set_eof();
            assert_eq!(d.peek().unwrap_err().status(), Status::MessageTooLarge, "{last:?}");
        }
    }

    #[test]
    fn frame_split_prefix_and_empty_message() {
        let wire = enc(Framing::Frame, &[b"", b"xyz", b"\n\0binary"]);
        for split in 0..wire.len() {
            let mut d = Decoder::new(Framing::Frame, 100, 1024);
            d.feed(&wire[..split]);
            let mut got = drain(&mut d);
            d.feed(&wire[split..]);
            got.extend(drain(&mut d));
            assert_eq!(got, vec![b"".to_vec(), b"xyz".to_vec(), b"\n\0binary".to_vec()], "split {split}");
        }
    }

    #[test]
    fn frame_one_byte_at_a_time() {
        let wire = enc(Framing::Frame, &[b"hello", b"world"]);
        let mut d = Decoder::new(Framing::Frame, 100, 1024);
        let mut got = Vec::new();
        for b in &wire {
            d.feed(&[*b]);
            got.extend(drain(&mut d));
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"world".to_vec()]);
    }

    #[test]
    fn hostile_frame_length_allocates_nothing() {
        let mut d = Decoder::new(Framing::Frame, 1 << 20, 1024);
        d.feed(&[0xff, 0xff, 0xff, 0xff]);
        let e = d.peek().unwrap_err();
        assert_eq!(e.status(), Status::MessageTooLarge);
        assert!(e.to_string().contains("4294967295"), "{e}");
        assert!(d.buf.len() < 1 << 20, "buffer grew to {}", d.buf.len());
        // Reading the rest through read_from must not grow it either.
        let mut src: &[u8] = &[0u8; 100];
        d.read_from(&mut src).unwrap();
        assert!(d.buf.len() <= 2 * READ_CHUNK);
    }

    /// A frame within a high limit that promises much and sends little:
    /// the buffer grows with the bytes that came, not with the promise.
    #[test]
    fn a_promised_length_alone_commits_no_memory() {
        let mut d = Decoder::new(Framing::Frame, 1 << 30, 1024);
        let mut wire = (1u32 << 30).to_be_bytes().to_vec();
        wire.extend_from_slice(&[1u8; 100_000]);
        let mut src: &[u8] = &wire;
        while d.read_from(&mut src).unwrap() > 0 {
            assert_eq!(d.peek().unwrap(), None);
        }
        // A small multiple of the 100 kB that came (the buffer doubles as it
        // fills), not the 1 GiB promised.
        assert!(d.buf.len() < 1 << 20, "buffer grew to {}", d.buf.len());
    }

    #[test]
    fn frame_cut_short_at_eof_is_a_protocol_error() {
        let mut d = Decoder::new(Framing::Frame, 100, 1024);
        d.feed(&[0, 0, 0, 10, b'a']);
        assert_eq!(d.peek().unwrap(), None);
        d.set_eof();
        assert_eq!(d.peek().unwrap_err().status(), Status::Protocol);
        let mut d = Decoder::new(Framing::Frame, 100, 1024);
        d.feed(&[0, 0]);
        d.set_eof();
        assert_eq!(d.peek().unwrap_err().status(), Status::Protocol);
        let mut d = Decoder::new(Framing::Frame, 100, 1024);
        d.set_eof();
        assert_eq!(d.peek().unwrap(), None);
    }

    #[test]
    fn raw_returns_what_one_read_returns_up_to_the_buffer_size() {
        let data = vec![7u8; 3000];
        let mut src: &[u8] = &data;
        let mut d = Decoder::new(Framing::Raw, 1 << 20, 1024);
        let mut sizes = Vec::new();
        loop {
            if d.read_from(&mut src).unwrap() == 0 {
                break;
            }
            while let Some(m) = d.next_message().unwrap() {
                sizes.push(m.len());
            }
        }
        assert_eq!(sizes, vec![1024, 1024, 952]);
    }

    #[test]
    fn large_frames_grow_the_buffer_through_read_from() {
        let big = vec![42u8; 300_000];
        let wire = enc(Framing::Frame, &[&big, b"tail"]);
        let mut src: &[u8] = &wire;
        let mut d = Decoder::new(Framing::Frame, 1 << 20, 1024);
        let mut got = Vec::new();
        while d.read_from(&mut src).unwrap() > 0 {
            got.extend(drain(&mut d));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], big);
        assert_eq!(got[1], b"tail");
    }

    #[test]
    fn peek_leaves_the_message_queued() {
        let mut d = Decoder::new(Framing::Line, 100, 1024);
        d.feed(b"queued\nnext\n");
        let at = d.peek().unwrap().unwrap();
        assert_eq!(d.message(&at), b"queued");
        assert_eq!(d.peek().unwrap().unwrap(), at);
        d.consume(at);
        assert_eq!(d.next_message().unwrap().unwrap(), b"next");
    }

    #[test]
    fn encode_refuses_newline_and_oversize() {
        let mut out = b"keep".to_vec();
        assert_eq!(
            encode(Framing::Line, 10, b"a\nb", &mut out).unwrap_err().status(),
            Status::InvalidArgument
        );
        assert_eq!(
            encode(Framing::Frame, 2, b"abc", &mut out).unwrap_err().status(),
            Status::MessageTooLarge
        );
        assert_eq!(out, b"keep");
        // Raw framing carries newlines, and obeys the same size limit.
        encode(Framing::Raw, 4, b"a\nbc", &mut out).unwrap();
        assert_eq!(out, b"keepa\nbc");
        assert_eq!(
            encode(Framing::Raw, 2, b"abc", &mut out).unwrap_err().status(),
            Status::MessageTooLarge
        );
        assert_eq!(out, b"keepa\nbc");
    }

    #[test]
    fn find_newline_agrees_with_a_byte_scan() {
        let mut rng = Rng(0x5eed);
        for len in 0..300usize {
            for _ in 0..8 {
                let mut hay: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                // Mostly newline-free haystacks, with one or two planted.
                for b in hay.iter_mut() {
                    if *b == b'\n' {
                        *b = b'x';
                    }
                }
                for _ in 0..rng.below(3) {
                    if len > 0 {
                        let at = rng.below(len as u64) as usize;
                        hay[at] = b'\n';
                    }
                }
                // Bytes next to '\n' (0x09, 0x0b, 0x8a) must not be mistaken for it.
                if len > 2 {
                    hay[0] = 0x0b;
                    hay[len - 1] = 0x8a;
                }
                let want = hay.iter().position(|&b| b == b'\n');
                assert_eq!(find_newline(&hay), want, "len {len}: {hay:?}");
            }
        }
        assert_eq!(find_newline(&[0x8a; 100]), None);
        assert_eq!(find_newline(&[0x0a; 100]), Some(0));
    }

    #[test]
    fn a_buffer_never_holds_more_than_the_limit_and_one_read() {
        // A partial line (or frame) just under the limit, fed a read at a
        // time: the buffer stays within the limit, its framing and one read.
        for framing in [Framing::Line, Framing::Frame] {
            let max = 1024 * 1024;
            let mut d = Decoder::new(framing, max, 1024);
            if framing == Framing::Frame {
                d.feed(&(max as u32).to_be_bytes());
            }
            let mut reader = std::io::Cursor::new(vec![b'x'; max - 1]);
            while d.read_from(&mut reader).unwrap() > 0 {
                assert!(d.peek().unwrap().is_none());
                assert!(d.buf.len() <= max + 4 + READ_CHUNK, "{framing}: {} bytes", d.buf.len());
            }
            assert!(d.buf.len() <= max + 4 + READ_CHUNK, "{framing}: {} bytes", d.buf.len());
        }
    }

    #[test]
    fn shrink_releases_memory_when_idle() {
        let mut d = Decoder::new(Framing::Line, 100, 1024);
        d.feed(b"x\n");
        drain(&mut d);
        d.shrink_if_empty();
        assert_eq!(d.buf.capacity(), 0);
    }

    /// A small deterministic PRNG (xorshift64*), so the property tests need
    /// no extra dependency and every failure is reproducible from its seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Random messages, a random split of the encoded stream into reads:
    /// decoding returns exactly the messages that were encoded, in every
    /// framing that has boundaries.
    #[test]
    fn property_decode_of_encode_is_identity_for_any_split() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for framing in [Framing::Line, Framing::Frame] {
                let count = rng.below(20) as usize;
                let msgs: Vec<Vec<u8>> = (0..count)
                    .map(|_| {
                        let len = match rng.below(4) {
                            0 => 0,
                            1 => rng.below(8),
                            2 => rng.below(300),
                            _ => rng.below(5000),
                        } as usize;
                        (0..len)
                            .map(|_| {
                                let b = rng.below(256) as u8;
                                // line framing cannot carry '\n', and a '\r'
                                // at the very end would be stripped.
                                if framing == Framing::Line && (b == b'\n' || b == b'\r') { b'x' } else { b }
                            })
                            .collect()
                    })
                    .collect();
                let mut wire = Vec::new();
                for m in &msgs {
                    encode(framing, 1 << 20, m, &mut wire).unwrap();
                }
                let mut d = Decoder::new(framing, 1 << 20, 1024);
                let mut got = Vec::new();
                let mut pos = 0;
                while pos < wire.len() {
                    let bound = if rng.below(2) == 0 { 7 } else { 9000 };
                    let step = 1 + rng.below(bound) as usize;
                    let end = (pos + step).min(wire.len());
                    d.feed(&wire[pos..end]);
                    pos = end;
                    got.extend(drain(&mut d));
                }
                d.set_eof();
                got.extend(drain(&mut d));
                assert_eq!(got, msgs, "seed {seed}, framing {framing}");
            }
        }
    }

    /// Arbitrary bytes never panic a decoder, never make it buffer more than
    /// the limit plus one read, and every message it returns is within the
    /// limit.
    #[test]
    fn property_arbitrary_bytes_never_panic() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
            for framing in [Framing::Raw, Framing::Line, Framing::Frame] {
                let max = 1 + rng.below(600) as usize;
                let mut d = Decoder::new(framing, max, 1 + rng.below(100) as usize);
                'feed: for _ in 0..50 {
                    let len = rng.below(200) as usize;
                    let chunk: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                    d.feed(&chunk);
                    loop {
                        match d.next_message() {
                            Ok(Some(m)) => {
                                if framing != Framing::Raw {
                                    assert!(m.len() <= max);
                                }
                            }
                            Ok(None) => break,
                            Err(_) => break 'feed,
                        }
                    }
                    assert!(d.buffered() <= max + 4 + 200, "buffered {}", d.buffered());
                }
                d.set_eof();
                if let Ok(Some(m)) = d.next_message() {
                    assert!(framing == Framing::Raw || m.len() <= max, "{} > {max}", m.len());
                }
            }
        }
    }
}
