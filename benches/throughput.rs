//! The Rust side of the tcpchat benchmark (issue 6): workloads A (ping-pong),
//! B (one-way streaming) and E (duplex) through the tcpchat Rust API and
//! through a raw `std::net` baseline (`BufReader`/`BufWriter`, the same wire
//! formats).
//!
//! `benches/run.sh` runs it once per measurement and collects the `RESULT`
//! line it prints (one JSON object). By hand:
//!
//!     cargo bench --bench throughput -- pingpong --impl tcpchat --count 20000
//!     cargo bench --bench throughput -- stream --impl raw --framing line --size 64 --count 1000000
//!     cargo bench --bench throughput -- duplex --impl tcpchat --count 200000
//!
//! Duplex (E): one connection, one thread sending `--count` lines one `send`
//! at a time while another receives them back, one at a time, from an echo
//! peer (a byte echo over `std::net`, the same for both implementations):
//! tcpchat through `Conn::split` (the halves on two threads), raw through a
//! `TcpStream` and its `try_clone`. Built with `--cfg tcpchat_bench_no_split`
//! (what `run.sh --compare` does for a revision before `Conn::split`) it
//! leaves the tcpchat duplex out.
//!
//! Both ends run in this process (a thread each), over 127.0.0.1. Every
//! message is checked: ping-pong compares each echo with what was sent;
//! streaming checks the count, each length and an order-sensitive checksum
//! of every payload byte (see `Fold`). A wrong count or checksum prints
//! `FAILED` and exits 1. A counting global allocator reports the heap
//! allocations made per message in the steady state of each thread.

#![allow(unexpected_cfgs)] // tcpchat_bench_no_split: see above

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::exit;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use tcpchat::{Config, Framing, Server};

// ----- counting allocator ----------------------------------------------------

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // try_with: the thread-local may be gone while a thread exits.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations made by the calling thread so far.
fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

// ----- the messages and the checksum (same definitions in bench_c.c) ----------

/// Distinct messages cycled through: message `i` is `pool[i % POOL]`.
const POOL: usize = 1024;

/// Byte `j` of pool message `k`: printable ASCII, so never a newline.
fn make_pool(size: usize) -> Vec<Vec<u8>> {
    (0..POOL)
        .map(|k| (0..size).map(|j| b' ' + ((k * 31 + j * 7) % 95) as u8).collect())
        .collect()
}

/// Messages per `send_many` call: about 64 KiB of payload, at most 1024.
fn batch_size(size: usize) -> usize {
    (65536 / size.max(1)).clamp(1, 1024)
}

/// Order-sensitive checksum of a message stream: each payload is folded to a
/// 64-bit word sum (little-endian words, the tail zero-padded) xor its
/// length, and chained FNV-style.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fold(u64);

impl Fold {
    const INIT: Fold = Fold(0xcbf2_9ce4_8422_2325);

    #[inline]
    fn add(&mut self, msg: &[u8]) {
        let mut sum = 0u64;
        let mut words = msg.chunks_exact(8);
        for w in &mut words {
            sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut tail = [0u8; 8];
            tail[..rest.len()].copy_from_slice(rest);
            sum = sum.wrapping_add(u64::from_le_bytes(tail));
        }
        self.0 = (self.0 ^ sum ^ msg.len() as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fn expected_fold(pool: &[Vec<u8>], count: usize) -> Fold {
    let mut f = Fold::INIT;
    for i in 0..count {
        f.add(&pool[i % POOL]);
    }
    f
}

// ----- options ------------------------------------------------------------------

const USAGE: &str = "usage: throughput pingpong|stream|duplex [--impl tcpchat|raw] [--framing frame|line]
                  [--size BYTES] [--count N] [--warmup N] [--recv batch|into] [--trials N]
  pingpong: --count round trips of --size bytes after --warmup (default 20000, 64, 1000)
  stream:   --count messages of --size bytes one way (default 1000000, 64);
            --recv batch (recv_batch, the default) or into (recv_into per message);
            --trials N: N transfers (each checked), the fastest reported (default 1)
  duplex:   --count lines of --size bytes sent by one thread and received back
            by another on one connection, through a byte echo (default 200000, 64);
            --trials as for stream";

#[derive(Clone)]
struct Opts {
    workload: String,
    imp: String,
    framing: Framing,
    size: usize,
    count: usize,
    warmup: usize,
    recv: String,
    trials: usize,
}

fn parse() -> Opts {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let workload = args.next().unwrap_or_else(|| usage("a workload is needed"));
    if !["pingpong", "stream", "duplex"].contains(&workload.as_str()) {
        usage(&format!("unknown workload {workload:?}"));
    }
    let mut o = Opts {
        workload: workload.clone(),
        imp: "tcpchat".into(),
        framing: Framing::Frame,
        size: 64,
        count: match workload.as_str() {
            "pingpong" => 20_000,
            "duplex" => 200_000,
            _ => 1_000_000,
        },
        warmup: 1_000,
        recv: "batch".into(),
        trials: 1,
    };
    while let Some(flag) = args.next() {
        let v = args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = || v.parse::<usize>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        match flag.as_str() {
            "--impl" if v == "tcpchat" || v == "raw" => o.imp = v.clone(),
            "--framing" if v == "frame" => o.framing = Framing::Frame,
            "--framing" if v == "line" => o.framing = Framing::Line,
            "--size" => o.size = num(),
            "--count" => o.count = num(),
            "--warmup" => o.warmup = num(),
            "--trials" => o.trials = num().max(1),
            "--recv" if v == "batch" || v == "into" => o.recv = v.clone(),
            _ => usage(&format!("bad flag {flag} {v}")),
        }
    }
    if o.size == 0 || o.count == 0 {
        usage("--size and --count must be positive");
    }
    if o.workload == "duplex" {
        o.framing = Framing::Line;
    }
    o
}

fn usage(msg: &str) -> ! {
    eprintln!("throughput: {msg}\n{USAGE}");
    exit(2)
}

fn fail(msg: String) -> ! {
    eprintln!("throughput: FAILED: {msg}");
    exit(1)
}

type R<T> = Result<T, String>;

fn e<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |err| format!("{what}: {err}")
}

fn framing_name(f: Framing) -> &'static str {
    match f {
        Framing::Line => "line",
        Framing::Frame => "frame",
        Framing::Raw => "raw",
    }
}

fn main() {
    let o = parse();
    let r = match (o.workload.as_str(), o.imp.as_str()) {
        ("pingpong", "tcpchat") => pingpong_tcpchat(&o),
        ("pingpong", _) => pingpong_raw(&o),
        ("duplex", _) => duplex_trials(&o),
        _ => stream_trials(&o),
    };
    match r {
        Ok(json) => println!("RESULT {json}"),
        Err(msg) => fail(msg),
    }
}

// ----- A: ping-pong ---------------------------------------------------------------

struct PingPong {
    rtts: Vec<Duration>,
    total: Duration,
    client_allocs: u64,
    server_allocs: u64,
}

fn pingpong_json(o: &Opts, p: PingPong) -> String {
    let mut rtts = p.rtts;
    rtts.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let median = us(rtts[rtts.len() / 2]);
    let p99 = us(rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)]);
    format!(
        "{{\"lang\":\"rust\",\"workload\":\"pingpong\",\"impl\":\"{}\",\"framing\":\"{}\",\"size\":{},\
         \"count\":{},\"rtt_median_us\":{median:.3},\"rtt_p99_us\":{p99:.3},\"rtt_min_us\":{:.3},\
         \"round_trips_per_s\":{:.1},\"allocs_per_msg_client\":{:.4},\"allocs_per_msg_server\":{:.4},\"ok\":true}}",
        o.imp,
        framing_name(o.framing),
        o.size,
        rtts.len(),
        us(rtts[0]),
        rtts.len() as f64 / p.total.as_secs_f64(),
        p.client_allocs as f64 / rtts.len() as f64,
        p.server_allocs as f64 / rtts.len() as f64,
    )
}

fn config(o: &Opts) -> Config {
    Config::default().with_framing(o.framing).with_read_timeout(Some(Duration::from_secs(60)))
}

fn pingpong_tcpchat(o: &Opts) -> R<String> {
    let server = Server::bind("127.0.0.1", 0, config(o)).map_err(e("bind"))?;
    let port = server.local_addr().port();
    let warmup = o.warmup;
    let echo = thread::spawn(move || -> R<u64> {
        let mut conn = server.accept().map_err(e("accept"))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0usize;
        let mut base = 0;
        loop {
            if n == warmup {
                base = allocs();
            }
            match conn.recv_into(&mut buf).map_err(e("server recv"))? {
                Some(len) => conn.send(&buf[..len]).map_err(e("server send"))?,
                None => break,
            }
            n += 1;
        }
        let used = allocs() - base;
        conn.close().map_err(e("server close"))?;
        Ok(used)
    });
    let pool = make_pool(o.size);
    let mut conn = tcpchat::connect("127.0.0.1", port, &config(o)).map_err(e("connect"))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut one = |i: usize, conn: &mut tcpchat::Conn| -> R<()> {
        let msg = &pool[i % POOL];
        conn.send(msg).map_err(e("send"))?;
        let n = conn.recv_into(&mut buf).map_err(e("recv"))?.ok_or("the echo server closed early")?;
        if &buf[..n] != msg.as_slice() {
            return Err(format!("round trip {i}: the echo differs from the message sent"));
        }
        Ok(())
    };
    for i in 0..o.warmup {
        one(i, &mut conn)?;
    }
    let mut rtts = Vec::with_capacity(o.count);
    let base = allocs();
    let started = Instant::now();
    for i in 0..o.count {
        let t = Instant::now();
        one(o.warmup + i, &mut conn)?;
        rtts.push(t.elapsed());
    }
    let total = started.elapsed();
    let client_allocs = allocs() - base;
    conn.close().map_err(e("close"))?;
    let server_allocs = echo.join().map_err(|_| "the echo thread panicked")??;
    Ok(pingpong_json(o, PingPong { rtts, total, client_allocs, server_allocs }))
}

/// Raw std::net: a BufReader and a BufWriter on each end, the same framing.
struct RawEnd {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
    framing: Framing,
    line: Vec<u8>,
}

impl RawEnd {
    fn new(s: TcpStream, framing: Framing) -> R<RawEnd> {
        s.set_nodelay(true).map_err(e("nodelay"))?;
        let w = BufWriter::with_capacity(1 << 16, s.try_clone().map_err(e("clone"))?);
        Ok(RawEnd { r: BufReader::with_capacity(1 << 16, s), w, framing, line: Vec::with_capacity(1 << 16) })
    }

    fn write_msg(&mut self, msg: &[u8]) -> std::io::Result<()> {
        match self.framing {
            Framing::Line => {
                self.w.write_all(msg)?;
                self.w.write_all(b"\n")
            }
            _ => {
                self.w.write_all(&(msg.len() as u32).to_be_bytes())?;
                self.w.write_all(msg)
            }
        }
    }

    /// Read one message into `buf` (frame) or `self.line` (line); returns
    /// its length, or None at end of stream.
    fn read_msg<'a>(&'a mut self, buf: &'a mut [u8]) -> std::io::Result<Option<&'a [u8]>> {
        match self.framing {
            Framing::Line => {
                self.line.clear();
                if self.r.read_until(b'\n', &mut self.line)? == 0 {
                    return Ok(None);
                }
                let mut msg = &self.line[..];
                if let Some(m) = msg.strip_suffix(b"\n") {
                    msg = m.strip_suffix(b"\r").unwrap_or(m);
                }
                Ok(Some(msg))
            }
            _ => {
                let mut h = [0u8; 4];
                match self.r.read_exact(&mut h) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(err) => return Err(err),
                }
                let n = u32::from_be_bytes(h) as usize;
                if n > buf.len() {
                    return Err(std::io::Error::other("frame too large"));
                }
                self.r.read_exact(&mut buf[..n])?;
                Ok(Some(&buf[..n]))
            }
        }
    }
}

fn pingpong_raw(o: &Opts) -> R<String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(e("bind"))?;
    let addr = listener.local_addr().map_err(e("addr"))?;
    let framing = o.framing;
    let warmup = o.warmup;
    let echo = thread::spawn(move || -> R<u64> {
        let (s, _) = listener.accept().map_err(e("accept"))?;
        let mut end = RawEnd::new(s, framing)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        let mut base = 0;
        loop {
            if n == warmup {
                base = allocs();
            }
            let len = match end.read_msg(&mut buf).map_err(e("server read"))? {
                Some(m) => {
                    let len = m.len();
                    if framing == Framing::Line {
                        buf[..len].copy_from_slice(&end.line[..len]);
                    }
                    len
                }
                None => break,
            };
            end.write_msg(&buf[..len]).map_err(e("server write"))?;
            end.w.flush().map_err(e("server flush"))?;
            n += 1;
        }
        Ok(allocs() - base)
    });
    let pool = make_pool(o.size);
    let mut end = RawEnd::new(TcpStream::connect(addr).map_err(e("connect"))?, framing)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut one = |i: usize, end: &mut RawEnd| -> R<()> {
        let msg = &pool[i % POOL];
        end.write_msg(msg).map_err(e("write"))?;
        end.w.flush().map_err(e("flush"))?;
        let got = end.read_msg(&mut buf).map_err(e("read"))?.ok_or("the echo server closed early")?;
        if got != msg.as_slice() {
            return Err(format!("round trip {i}: the echo differs from the message sent"));
        }
        Ok(())
    };
    for i in 0..o.warmup {
        one(i, &mut end)?;
    }
    let mut rtts = Vec::with_capacity(o.count);
    let base = allocs();
    let started = Instant::now();
    for i in 0..o.count {
        let t = Instant::now();
        one(o.warmup + i, &mut end)?;
        rtts.push(t.elapsed());
    }
    let total = started.elapsed();
    let client_allocs = allocs() - base;
    end.w.get_ref().shutdown(Shutdown::Write).map_err(e("shutdown"))?;
    let server_allocs = echo.join().map_err(|_| "the echo thread panicked")??;
    Ok(pingpong_json(o, PingPong { rtts, total, client_allocs, server_allocs }))
}

// ----- B: streaming -----------------------------------------------------------------

struct Stream {
    elapsed: Duration,
    count: usize,
    fold: Fold,
    /// Heap allocations of each thread after the first tenth of the messages
    /// (the steady state), up to the last message.
    recv_allocs: u64,
    send_allocs: u64,
    steady_msgs: usize,
}

/// Run the transfer `--trials` times (each on a new connection, each checked)
/// and report the fastest: on a shared machine noise only ever slows a
/// transfer down, so the fastest of a few short trials is the steadiest
/// figure; every trial's rate is in the result too.
fn stream_trials(o: &Opts) -> R<String> {
    let mut best: Option<Stream> = None;
    let mut rates = Vec::new();
    for _ in 0..o.trials {
        let (s, expected) = if o.imp == "tcpchat" { stream_tcpchat(o)? } else { stream_raw(o)? };
        if s.count != o.count {
            return Err(format!("received {} messages, sent {}", s.count, o.count));
        }
        if s.fold != expected {
            return Err(format!("checksum {:#x}, expected {:#x}", s.fold.0, expected.0));
        }
        rates.push(format!("{:.1}", s.count as f64 / s.elapsed.as_secs_f64()));
        if best.as_ref().map_or(true, |b| s.elapsed < b.elapsed) {
            best = Some(s);
        }
    }
    let s = best.ok_or("no trial")?;
    Ok(stream_json(o, s, &rates.join(",")))
}

fn stream_json(o: &Opts, s: Stream, rates: &str) -> String {
    let secs = s.elapsed.as_secs_f64();
    let imp = if o.imp == "tcpchat" { format!("tcpchat-{}", o.recv) } else { o.imp.clone() };
    format!(
        "{{\"lang\":\"rust\",\"workload\":\"stream\",\"impl\":\"{imp}\",\"framing\":\"{}\",\"size\":{},\
         \"count\":{},\"seconds\":{secs:.6},\"msgs_per_s\":{:.1},\"mb_per_s\":{:.2},\"checksum\":\"{:#x}\",\
         \"allocs_per_msg_recv\":{:.6},\"allocs_per_msg_send\":{:.6},\"trials_msgs_per_s\":[{rates}],\"ok\":true}}",
        framing_name(o.framing),
        o.size,
        s.count,
        s.count as f64 / secs,
        (s.count * o.size) as f64 / secs / 1e6,
        s.fold.0,
        s.recv_allocs as f64 / s.steady_msgs.max(1) as f64,
        s.send_allocs as f64 / (o.count - o.count / 10).max(1) as f64,
    )
}

/// Receiver bookkeeping shared by every implementation.
struct Tally {
    count: usize,
    size: usize,
    fold: Fold,
    bad_len: Option<usize>,
    steady_at: usize,
    steady_base: u64,
    steady_end: u64,
    total: usize,
}

impl Tally {
    fn new(o: &Opts) -> Tally {
        Tally {
            count: 0,
            size: o.size,
            fold: Fold::INIT,
            bad_len: None,
            steady_at: o.count / 10,
            steady_base: 0,
            steady_end: 0,
            total: o.count,
        }
    }

    #[inline]
    fn take(&mut self, m: &[u8]) {
        if m.len() != self.size && self.bad_len.is_none() {
            self.bad_len = Some(self.count);
        }
        self.fold.add(m);
        self.count += 1;
        if self.count == self.steady_at {
            self.steady_base = allocs();
        }
        if self.count == self.total {
            // The last message, before the end of stream is read.
            self.steady_end = allocs();
        }
    }

    fn finish(self, elapsed: Duration, send_allocs: u64, total: usize) -> R<Stream> {
        if let Some(i) = self.bad_len {
            return Err(format!("message {i} has the wrong length"));
        }
        Ok(Stream {
            elapsed,
            count: self.count,
            fold: self.fold,
            recv_allocs: self.steady_end.saturating_sub(self.steady_base),
            send_allocs,
            steady_msgs: self.count.saturating_sub(self.steady_at).max(1).min(total),
        })
    }
}

fn stream_tcpchat(o: &Opts) -> R<(Stream, Fold)> {
    let pool = Arc::new(make_pool(o.size));
    let expected = expected_fold(&pool, o.count);
    let server = Server::bind("127.0.0.1", 0, config(o)).map_err(e("bind"))?;
    let port = server.local_addr().port();
    let go = Arc::new(Barrier::new(2));
    let sender = {
        let (pool, go, o) = (pool.clone(), go.clone(), o.clone());
        thread::spawn(move || -> R<u64> {
            let mut conn = tcpchat::connect("127.0.0.1", port, &config(&o)).map_err(e("connect"))?;
            let batch = batch_size(o.size);
            let refs: Vec<&[u8]> = pool.iter().map(|m| m.as_slice()).collect();
            go.wait();
            // Allocations in the steady state: after the first tenth.
            let mut base = None;
            let mut sent = 0;
            while sent < o.count {
                if base.is_none() && sent >= o.count / 10 {
                    base = Some(allocs());
                }
                let n = batch.min(o.count - sent);
                let from = sent % POOL;
                if from + n <= POOL {
                    conn.send_many(&refs[from..from + n]).map_err(e("send_many"))?;
                } else {
                    conn.send_many((sent..sent + n).map(|i| refs[i % POOL])).map_err(e("send_many"))?;
                }
                sent += n;
            }
            let used = allocs() - base.unwrap_or(0);
            conn.close().map_err(e("close"))?;
            Ok(used)
        })
    };
    let mut conn = server.accept().map_err(e("accept"))?;
    let mut tally = Tally::new(o);
    let mut buf = vec![0u8; o.size.max(1 << 16)];
    go.wait();
    let started = Instant::now();
    if o.recv == "into" {
        while let Some(n) = conn.recv_into(&mut buf).map_err(e("recv_into"))? {
            tally.take(&buf[..n]);
        }
    } else {
        while conn.recv_batch(usize::MAX, |m| {
            tally.take(m);
            true
        })
        .map_err(e("recv_batch"))?
            > 0
        {}
    }
    let elapsed = started.elapsed();
    conn.close().map_err(e("close"))?;
    let send_allocs = sender.join().map_err(|_| "the sender panicked")??;
    Ok((tally.finish(elapsed, send_allocs, o.count)?, expected))
}

fn stream_raw(o: &Opts) -> R<(Stream, Fold)> {
    let pool = Arc::new(make_pool(o.size));
    let expected = expected_fold(&pool, o.count);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(e("bind"))?;
    let addr = listener.local_addr().map_err(e("addr"))?;
    let go = Arc::new(Barrier::new(2));
    let sender = {
        let (pool, go, o) = (pool.clone(), go.clone(), o.clone());
        thread::spawn(move || -> R<u64> {
            let mut end = RawEnd::new(TcpStream::connect(addr).map_err(e("connect"))?, o.framing)?;
            go.wait();
            let mut base = 0;
            for i in 0..o.count {
                if i == o.count / 10 {
                    base = allocs();
                }
                end.write_msg(&pool[i % POOL]).map_err(e("write"))?;
            }
            end.w.flush().map_err(e("flush"))?;
            let used = allocs() - base;
            end.w.get_ref().shutdown(Shutdown::Write).map_err(e("shutdown"))?;
            // Wait for the receiver's end of stream, so that closing sends no RST.
            let mut sink = [0u8; 64];
            while end.r.read(&mut sink).map_err(e("read"))? > 0 {}
            Ok(used)
        })
    };
    let (s, _) = listener.accept().map_err(e("accept"))?;
    let mut end = RawEnd::new(s, o.framing)?;
    let mut tally = Tally::new(o);
    let mut buf = vec![0u8; o.size.max(1 << 16)];
    go.wait();
    let started = Instant::now();
    while let Some(m) = end.read_msg(&mut buf).map_err(e("read"))? {
        tally.take(m);
    }
    let elapsed = started.elapsed();
    end.w.get_ref().shutdown(Shutdown::Write).map_err(e("shutdown"))?;
    let send_allocs = sender.join().map_err(|_| "the sender panicked")??;
    Ok((tally.finish(elapsed, send_allocs, o.count)?, expected))
}

// ----- E: duplex -------------------------------------------------------------------

/// The peer of the duplex runs: accept one connection and write back every
/// byte it reads (64 KiB reads), until end of stream; then shut down.
fn byte_echo() -> R<(u16, thread::JoinHandle<R<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(e("bind"))?;
    let port = listener.local_addr().map_err(e("addr"))?.port();
    let peer = thread::spawn(move || -> R<()> {
        let (mut s, _) = listener.accept().map_err(e("echo accept"))?;
        s.set_nodelay(true).map_err(e("nodelay"))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(format!("echo read: {err}")),
            };
            s.write_all(&buf[..n]).map_err(e("echo write"))?;
        }
        s.shutdown(Shutdown::Write).map_err(e("echo shutdown"))?;
        Ok(())
    });
    Ok((port, peer))
}

fn duplex_trials(o: &Opts) -> R<String> {
    let mut best: Option<Stream> = None;
    let mut rates = Vec::new();
    for _ in 0..o.trials {
        let (s, expected) = if o.imp == "tcpchat" { duplex_tcpchat(o)? } else { duplex_raw(o)? };
        if s.count != o.count {
            return Err(format!("received {} messages back, sent {}", s.count, o.count));
        }
        if s.fold != expected {
            return Err(format!("checksum {:#x}, expected {:#x}", s.fold.0, expected.0));
        }
        rates.push(format!("{:.1}", s.count as f64 / s.elapsed.as_secs_f64()));
        if best.as_ref().map_or(true, |b| s.elapsed < b.elapsed) {
            best = Some(s);
        }
    }
    let s = best.ok_or("no trial")?;
    let secs = s.elapsed.as_secs_f64();
    let imp = if o.imp == "tcpchat" { "tcpchat-split" } else { "raw" };
    Ok(format!(
        "{{\"lang\":\"rust\",\"workload\":\"duplex\",\"impl\":\"{imp}\",\"framing\":\"line\",\"size\":{},\
         \"count\":{},\"seconds\":{secs:.6},\"msgs_per_s\":{:.1},\"checksum\":\"{:#x}\",\
         \"allocs_per_msg_recv\":{:.6},\"allocs_per_msg_send\":{:.6},\"trials_msgs_per_s\":[{}],\"ok\":true}}",
        o.size,
        s.count,
        s.count as f64 / secs,
        s.fold.0,
        s.recv_allocs as f64 / s.steady_msgs.max(1) as f64,
        s.send_allocs as f64 / (o.count - o.count / 10).max(1) as f64,
        rates.join(","),
    ))
}

/// tcpchat: the connection split, the sending half on its own thread (one
/// `send` per line, then `shutdown_write`), the receiving half here
/// (`recv_into` per line until the echo's end of stream).
#[cfg(not(tcpchat_bench_no_split))]
fn duplex_tcpchat(o: &Opts) -> R<(Stream, Fold)> {
    let pool = Arc::new(make_pool(o.size));
    let expected = expected_fold(&pool, o.count);
    let (port, peer) = byte_echo()?;
    let conn = tcpchat::connect("127.0.0.1", port, &config(o)).map_err(e("connect"))?;
    let (mut rx, mut tx) = conn.split();
    let go = Arc::new(Barrier::new(2));
    let sender = {
        let (pool, go, count) = (pool.clone(), go.clone(), o.count);
        thread::spawn(move || -> R<(tcpchat::SendHalf, u64)> {
            go.wait();
            let mut base = 0;
            for i in 0..count {
                if i == count / 10 {
                    base = allocs();
                }
                tx.send(&pool[i % POOL]).map_err(e("send"))?;
            }
            let used = allocs() - base;
            tx.shutdown_write().map_err(e("shutdown_write"))?;
            Ok((tx, used))
        })
    };
    let mut tally = Tally::new(o);
    let mut buf = vec![0u8; o.size.max(1 << 16)];
    go.wait();
    let started = Instant::now();
    while let Some(n) = rx.recv_into(&mut buf).map_err(e("recv_into"))? {
        tally.take(&buf[..n]);
    }
    let elapsed = started.elapsed();
    let (tx, send_allocs) = sender.join().map_err(|_| "the sender panicked")??;
    rx.reunite(tx).map_err(e("reunite"))?.close().map_err(e("close"))?;
    peer.join().map_err(|_| "the echo peer panicked")??;
    Ok((tally.finish(elapsed, send_allocs, o.count)?, expected))
}

#[cfg(tcpchat_bench_no_split)]
fn duplex_tcpchat(_o: &Opts) -> R<(Stream, Fold)> {
    Err("built with --cfg tcpchat_bench_no_split: no Conn::split in this revision".into())
}

/// Raw std::net: the stream and its clone, one `write_all` of a whole line
/// per message on the sending thread (as tcpchat's `send` makes one write),
/// a `BufReader` (64 KiB) reading lines here.
fn duplex_raw(o: &Opts) -> R<(Stream, Fold)> {
    let pool = Arc::new(make_pool(o.size));
    let expected = expected_fold(&pool, o.count);
    let (port, peer) = byte_echo()?;
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(e("connect"))?;
    s.set_nodelay(true).map_err(e("nodelay"))?;
    let mut w = s.try_clone().map_err(e("clone"))?;
    let go = Arc::new(Barrier::new(2));
    let sender = {
        let (pool, go, count) = (pool.clone(), go.clone(), o.count);
        thread::spawn(move || -> R<u64> {
            let wire: Vec<Vec<u8>> = pool.iter().map(|m| [&m[..], b"\n"].concat()).collect();
            go.wait();
            let mut base = 0;
            for i in 0..count {
                if i == count / 10 {
                    base = allocs();
                }
                w.write_all(&wire[i % POOL]).map_err(e("write"))?;
            }
            let used = allocs() - base;
            w.shutdown(Shutdown::Write).map_err(e("shutdown"))?;
            Ok(used)
        })
    };
    let mut r = BufReader::with_capacity(1 << 16, s);
    let mut line = Vec::with_capacity(1 << 16);
    let mut tally = Tally::new(o);
    go.wait();
    let started = Instant::now();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).map_err(e("read"))? == 0 {
            break;
        }
        tally.take(line.strip_suffix(b"\n").unwrap_or(&line));
    }
    let elapsed = started.elapsed();
    let send_allocs = sender.join().map_err(|_| "the sender panicked")??;
    peer.join().map_err(|_| "the echo peer panicked")??;
    Ok((tally.finish(elapsed, send_allocs, o.count)?, expected))
}
