//! Replays every input of `fuzz/corpus/` (the fuzzers' seeds and every
//! crash they found, kept as regression inputs) through the checks the
//! fuzz targets run, so the normal suite exercises them without a fuzzer.
//! The fuzzing itself: `bash fuzz/run.sh [SECONDS]`.

use std::fs;
use std::path::Path;

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    for path in &inputs {
        let data = fs::read(path).unwrap();
        let run = std::panic::catch_unwind(|| check(&data));
        assert!(run.is_ok(), "{target}: the input {} fails", path.display());
    }
}

#[test]
fn line_decoder_corpus() {
    replay("line_decoder", checks::line_decoder);
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", checks::frame_decoder);
}

#[test]
fn room_parser_corpus() {
    replay("room_parser", checks::room_parser);
}

/// The first crash the fuzzers found (`line_decoder`): a last line without
/// its newline, one byte over the limit, was delivered at end of stream.
#[test]
fn regression_final_line_one_over_the_limit() {
    checks::line_decoder(&[0, 0, 126, 163]);
    assert_eq!(tcpchat::room::fuzz_lines(1, b"ab"), 0);
}
