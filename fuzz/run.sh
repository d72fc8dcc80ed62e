#!/usr/bin/env bash
# Coverage-guided fuzzing of the line and frame decoders and the room's line
# parser, with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 600: the documented longer run; CI-sized runs
# use 30 to 60). TARGETs default to all of them: line_decoder frame_decoder
# room_parser. Installs cargo-fuzz with `cargo install` when it is missing
# (about a minute on two cores).
#
# Stable Rust has no -Zsanitizer, so the targets are built with
# `--sanitizer none`: libFuzzer's coverage instrumentation works on stable,
# and the code under test is safe Rust, whose bounds and overflow checks
# (debug assertions are on in fuzz builds) turn memory errors into panics,
# which libFuzzer reports as crashes. FUZZ_SANITIZER=address builds with
# AddressSanitizer instead, through RUSTC_BOOTSTRAP=1.
#
# The committed seeds in fuzz/corpus/TARGET are read, never written; what the
# fuzzer finds goes to fuzz/work/TARGET (ignored by git). A crash leaves its
# input in fuzz/artifacts/TARGET/ and makes this script exit 1: copy that
# input into fuzz/corpus/TARGET/ (tests/fuzz_corpus.rs then replays it in
# the normal test suite), fix the bug, and add a named regression test.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(line_decoder frame_decoder room_parser)
fi
case "$seconds" in
    '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz (cargo install cargo-fuzz)"
    started=$(date +%s)
    cargo install cargo-fuzz --version 0.13.2 --locked
    echo "==> cargo-fuzz installed in $(($(date +%s) - started)) s"
fi

sanitizer=${FUZZ_SANITIZER:-none}
if [ "$sanitizer" != none ]; then
    # -Zsanitizer on the stable toolchain.
    export RUSTC_BOOTSTRAP=1
fi
# A fuzz build must not rewrite the committed C header (see build.rs).
export TCPCHAT_NO_HEADER_UPDATE=1

echo "==> building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build -O --sanitizer "$sanitizer"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "corpus/$t"
    echo "==> fuzzing $t for $seconds s"
    if ! cargo fuzz run -O --sanitizer "$sanitizer" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$t")
        echo "==> $t FAILED: the input is in fuzz/artifacts/$t/" >&2
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds} s each without a crash"
