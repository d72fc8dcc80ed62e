//! The stderr logger never panics, blocks or raises SIGPIPE: stderr closed
//! (`program 2>&1 | head` after head exits) or full (a pipe nobody reads)
//! only makes it drop and count records.
//!
//! One test in its own binary, because it points this process's stderr at
//! pipes.

use std::time::{Duration, Instant};

use tcpchat::log::{dropped_records, log, set_logger, stderr_logger};
use tcpchat::LogLevel;

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: fds is a live local array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

#[test]
fn a_closed_or_full_stderr_never_panics_blocks_or_kills() {
    // SAFETY: plain descriptor calls on descriptors this test owns; fd 2 is
    // restored at the end. SIGPIPE gets its default action (killing the
    // process), as in a C program that never ignored it.
    let saved = unsafe { libc::dup(2) };
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    set_logger(LogLevel::Info, Some(stderr_logger()));

    // Closed: the reader is gone.
    let (r, w) = pipe();
    unsafe {
        libc::close(r);
        libc::dup2(w, 2);
        libc::close(w);
    }
    let before = dropped_records();
    for i in 0..100 {
        log(LogLevel::Warn, &format!("record {i} into a closed pipe"));
    }
    assert_eq!(dropped_records() - before, 100);

    // Full: nobody reads; the writes must not wait.
    let (r, w) = pipe();
    unsafe {
        libc::dup2(w, 2);
        libc::close(w);
    }
    let started = Instant::now();
    let before = dropped_records();
    let long = "x".repeat(3000);
    for _ in 0..1000 {
        log(LogLevel::Warn, &long);
    }
    let took = started.elapsed();
    let dropped = dropped_records() - before;

    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
        libc::close(r);
    }
    set_logger(LogLevel::Off, None);
    // A 64 KiB pipe takes about 20 records of 3 KB; the rest are dropped.
    assert!(dropped >= 900, "only {dropped} of 1000 records dropped");
    assert!(took < Duration::from_secs(5), "logging into a full pipe took {took:?}");
}
