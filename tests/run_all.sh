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

# Each suite's full output goes to its own log under target/test-logs/; the
# terminal (and CI) gets one line per suite, the path of a failed suite's log
# with its last lines, and a summary table at the end.
LOGS=target/test-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
passed=0
failed=0
failures=()
summary=()
n=0
step() {
    local name=$1
    shift
    n=$((n + 1))
    local log
    log=$LOGS/$(printf '%02d' "$n")-$(printf '%s' "$name" | tr -c 'A-Za-z0-9' '-' | tr -s '-' | sed 's/-$//').log
    local start=$SECONDS
    printf '%-62s ' "$name"
    if "$@" >"$log" 2>&1; then
        local took=$((SECONDS - start))
        passed=$((passed + 1))
        printf 'passed %4d s\n' "$took"
        summary+=("$(printf 'passed %4d s  %s' "$took" "$name")")
    else
        local took=$((SECONDS - start))
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAILED %4d s  (log: %s)\n' "$took" "$log"
        summary+=("$(printf 'FAILED %4d s  %s  (log: %s)' "$took" "$name" "$log")")
        printf -- '---- last lines of %s ----\n' "$log"
        tail -n 40 "$log" | sed 's/^/    /'
        printf -- '----\n'
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
    printf 'Rust: clippy is not installed; skipped\n'
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

printf '\n== summary (full logs in %s/) ==\n' "$LOGS"
for line in "${summary[@]}"; do
    printf '%s\n' "$line"
done
printf 'total: %d s\n' "$SECONDS"
if [ "$failed" -gt 0 ]; then
    printf 'failed suites: %s\n' "${failures[*]}"
fi
printf 'suites: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
