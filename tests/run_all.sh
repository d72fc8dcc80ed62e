#!/usr/bin/env bash
# Every test of tcpchat, in one command: Rust (unit, integration, doc,
# hostile peers, the fuzz corpus), clippy, the C API (examples, tests under
# valgrind, install via pkg-config, header checks), the Python binding
# (mypy, pytest, interop), and the short modes of the soak run, the
# benchmarks and the fuzzers. TCPCHAT_SKIP_FUZZ=1 skips the fuzz run (it
# installs cargo-fuzz the first time).
#
#   bash tests/run_all.sh
#
# Needs: a Rust toolchain, gcc, make, python3 with venv/pip (PyPI reachable
# the first time), and valgrind + pkg-config for the C checks (.ci/run
# installs them). Set VALGRIND=0 to run the C tests without valgrind.
set -uo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if [ -z "${VALGRIND:-}" ]; then
    if command -v valgrind >/dev/null 2>&1; then VALGRIND=1; else VALGRIND=0; fi
fi

passed=0
failed=0
failures=()
step() {
    local name=$1
    shift
    printf '\n==> %s\n' "$name"
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf '==> FAILED: %s\n' "$name"
    fi
}

# The shared and static libraries and the Rust examples: the C and Python
# tests load target/release/libtcpchat.so (cargo test alone builds only the
# rlib).
step "build: library and Rust examples (release)" cargo build --release --lib --examples
step "Rust: unit, integration and doc tests" cargo test --release
if cargo clippy --version >/dev/null 2>&1; then
    step "Rust: clippy" cargo clippy --release --all-targets -- -D warnings
else
    printf '\n==> Rust: clippy is not installed; skipped\n'
fi
step "C: examples" make -C examples/c
step "C: tests (valgrind=$VALGRIND)" make -C tests/c check VALGRIND="$VALGRIND"
# The same C tests again, rebuilt with AddressSanitizer and UBSan.
step "C: tests under ASan and UBSan" make -C tests/c clean check SANITIZE=1
step "Python: mypy and pytest" bash tests/python/run.sh
# Hardening and performance, in their short CI modes: they check counts,
# checksums and memory bounds, never a time.
step "Soak: the room under mixed hostile load (quick)" cargo run --release --example soak -- --quick
step "Benchmarks (quick: counts and checksums only)" bash benches/run.sh --quick
if [ "${TCPCHAT_SKIP_FUZZ:-0}" != 1 ]; then
    step "Fuzz: each target for a short run" bash fuzz/run.sh "${TCPCHAT_FUZZ_SECONDS:-15}"
fi

printf '\n'
if [ "$failed" -gt 0 ]; then
    printf 'failed suites: %s\n' "${failures[*]}"
fi
printf 'suites: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
