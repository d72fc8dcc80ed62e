#!/usr/bin/env bash
# The tcpchat benchmark (issue 6), in one command:
#
#   bash benches/run.sh            # every workload, 5 repetitions (a few minutes)
#   bash benches/run.sh --quick    # small counts, 1 repetition: for CI (well under a minute)
#   bash benches/run.sh --reps 9   # more repetitions
#   bash benches/run.sh --only 'B/frame/64/' --no-room   # a subset (ids: see target/bench/full/results.jsonl)
#   bash benches/run.sh --compare REV          # ping-pong and streaming: REV's library against this tree's
#   bash benches/run.sh --compare REV..REV2    # ... against REV2's (both built in worktrees under target/)
#
# It builds what it needs (the release library and examples, the Rust bench
# binary benches/throughput.rs, the C program benches/bench_c.c with gcc -O2
# against target/release; the Python benchmark uses bindings/python and
# target/release/libtcpchat.so), runs every workload of issue 6 over
# 127.0.0.1 for every implementation, interleaving the implementations in
# each repetition so that noise from other work spreads over all of them, and
# prints ONE markdown table: each workload and implementation with the median
# and min-max over the repetitions and the ratio to the raw baseline measured
# in the same run (benches/report.py makes it).
#
# Every program checks every message (counts, lengths, checksums; echoes
# equal to what was sent) and exits non-zero on a mismatch; each run is
# bounded by `timeout`. The exit status is non-zero when any measurement
# failed or a count or checksum was wrong. No time is ever asserted.
#
# Streaming (workload B) through Rust and C: each repetition is the fastest
# of 3 transfers in one process (each transfer checked); see BENCHMARKS.md.
#
# Latency (workload A) is measured twice: with both ends pinned to one CPU
# (`taskset -c`), which is how the targets are judged (without pinning, the
# wake-up of the other, idle CPU dominates the round trip), and unpinned.
#
# Duplex (workload E): one connection, one thread sending and another
# receiving, through a byte-echo peer, for tcpchat in Rust (Conn::split), C
# (one handle, two threads) and Python (one Connection, two threads), next to
# raw std::net, raw C and Python's socket module doing the same.
#
# --compare REV: the speed rule of the full-duplex change ("the single-threaded
# paths do not pay for it"). REV is checked out in a git worktree under
# target/compare/ and its library built there (its own CARGO_TARGET_DIR),
# with TODAY's benchmark programs (benches/throughput.rs is copied in;
# bench_c.c is compiled against REV's header and library; bench_py.py loads
# REV's binding with REV's library). Then the ping-pong (pinned) and
# streaming measurements of the tcpchat rows run for both builds, each
# measurement for one build right after the same for the other (the order
# alternating), --reps times (default 7; each Rust and C streaming figure the
# fastest of 5 transfers), plus one raw row per workload that
# does not use the library at all (a control: its ratio shows the noise).
# The table gives each build's median and the median of the per-pair ratios.
# The worktrees are removed at the end (the build caches under
# target/compare/ stay, for the next run).
#
# Output: the table on stdout (also written to target/bench/MODE/table.md,
# MODE = full, quick or compare); the raw measurements in target/bench/MODE/results.jsonl;
# each run's log in target/bench/MODE/logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
REPS=
REPS_ASKED=
ROOM=1
ONLY=
COMPARE=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --compare) COMPARE=${2:?--compare needs a revision (REV or REV..REV2)}; shift ;;
        --compare=*) COMPARE=${1#--compare=} ;;
        --reps) REPS=${2:?--reps needs a number}; REPS_ASKED=$REPS; shift ;;
        --reps=*) REPS=${1#--reps=}; REPS_ASKED=$REPS ;;
        --no-room) ROOM=0 ;;
        --only) ONLY=${2:?--only needs a regular expression}; shift ;;
        -h|--help) sed -n '2,54p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (use --quick, --reps N, --only REGEX, --no-room, --compare REV)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    REPS=${REPS:-1}
    A_COUNT=2000; A_WARMUP=100
    B_SMALL=20000; B_BIG=2000
    E_COUNT=5000
    TRIALS=1
    ROOM_ARGS=(--quick)
    RUN_TIMEOUT=60
else
    A_COUNT=20000; A_WARMUP=1000
    B_SMALL=1000000; B_BIG=200000
    E_COUNT=200000
    REPS=${REPS:-5}
    TRIALS=3
    if [ -n "$COMPARE" ]; then
        # More pairs, and the fastest of 5 transfers: the ratios are what
        # is judged, to within 3%.
        REPS=${REPS_ASKED:-7}
        TRIALS=5
    fi
    ROOM_ARGS=()
    RUN_TIMEOUT=300
fi

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# Each mode has its own directory, and one run of a mode at a time uses it: a
# second run (the test command's quick mode started by someone else, say)
# waits for the first instead of overwriting its files.
MODE=full
[ "$QUICK" = 1 ] && MODE=quick
[ -n "$COMPARE" ] && MODE=compare
OUT=$ROOT/target/bench/$MODE
LOGS=$OUT/logs
mkdir -p "$LOGS"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$OUT/.lock"
    if ! flock -n 9; then
        say "another $MODE run is using $OUT: waiting for it to finish"
        flock 9
    fi
fi
rm -f "$LOGS"/*.log "$OUT"/room-*.txt
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

# ----- build -------------------------------------------------------------------

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
say "building (cargo build --release --examples; cargo bench --no-run; gcc -O2)"
cargo build --release --lib --examples >&2 || die "cargo build failed"
# The bench executable named in `cargo bench --no-run --message-format=json`.
bench_exe() {
    python3 -c '
import json, sys
exe = ""
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "throughput" and m.get("executable"):
        exe = m["executable"]
print(exe)'
}
RUST_BENCH=$(cargo bench --bench throughput --no-run --message-format=json 2>/dev/null | bench_exe)
[ -n "$RUST_BENCH" ] && [ -x "$RUST_BENCH" ] || die "building benches/throughput.rs failed (try: cargo bench --bench throughput --no-run)"
C_BENCH=$OUT/bench_c
${CC:-gcc} -O2 -std=c11 -Wall -Wextra -I"$ROOT/include" "$ROOT/benches/bench_c.c" -o "$C_BENCH" \
    -L"$ROOT/target/release" -ltcpchat -Wl,-rpath,"$ROOT/target/release" -lpthread >&2 ||
    die "building benches/bench_c.c failed"
export TCPCHAT_LIB="${TCPCHAT_LIB:-$ROOT/target/release/libtcpchat.so}"
PY=${PYTHON:-python3}
ROOM_BENCH=$ROOT/target/release/examples/room_bench
if [ "$ROOM" = 1 ] && [ ! -x "$ROOM_BENCH" ]; then
    say "examples/room_bench is not built: workloads C and D are skipped"
    ROOM=0
fi

# Pin to the first CPU this process may use (CPU 0 on most machines).
PIN_CPU=$("$PY" -c 'import os; print(min(os.sched_getaffinity(0)))' 2>/dev/null || echo 0)
if command -v taskset >/dev/null 2>&1; then
    PIN=(taskset -c "$PIN_CPU")
else
    say "taskset is missing: the 'pinned' runs are not pinned"
    PIN=()
fi

# ----- the measurements ----------------------------------------------------------

# One measurement: id, pinned (true/false), expected count, then the command.
# Appends {"id", "rep", "pinned", "count", "result", "log"} to RESULTS.
failed=0
measure() {
    local id=$1 pinned=$2 count=$3
    shift 3
    if [ -n "$ONLY" ] && ! printf '%s' "$id" | grep -Eq -- "$ONLY"; then return 0; fi
    local log=$LOGS/$(printf '%s' "$id" | tr '/' '_')-rep$rep.log
    local cmd=("$@")
    if [ "$pinned" = true ]; then cmd=("${PIN[@]}" "$@"); fi
    printf '$ %s\n' "${cmd[*]}" >"$log"
    timeout -k 5 "$RUN_TIMEOUT" "${cmd[@]}" >>"$log" 2>&1 9>&-
    local rc=$?
    local result
    result=$(grep -m1 '^RESULT ' "$log" | cut -c8-)
    if [ $rc -ne 0 ] || [ -z "$result" ]; then
        say "FAILED (exit $rc): $id rep $rep: see $log"
        tail -n 5 "$log" >&2
        result=null
        failed=$((failed + 1))
    fi
    printf '{"id":"%s","rep":%d,"pinned":%s,"count":%d,"result":%s,"log":"%s"}\n' \
        "$id" "$rep" "$pinned" "$count" "$result" "$log" >>"$RESULTS"
}

room() {
    local txt=$OUT/room-rep$rep.txt log=$LOGS/room-rep$rep.log
    printf '$ %s\n' "$ROOM_BENCH ${ROOM_ARGS[*]}" >"$log"
    timeout -k 5 600 "$ROOM_BENCH" "${ROOM_ARGS[@]}" >"$txt" 2>>"$log" 9>&-
    local rc=$? ok=true
    if [ $rc -ne 0 ]; then
        say "FAILED (exit $rc): room_bench rep $rep: see $log"
        tail -n 5 "$log" >&2
        ok=false
        failed=$((failed + 1))
    fi
    # The room's printed table goes into the results too, so that they stand alone.
    "$PY" -c 'import json, sys
rep, ok, txt, log = sys.argv[1:]
try:
    text = open(txt).read()
except OSError:
    text = ""
print(json.dumps({"id": "room", "rep": int(rep), "ok": ok == "true", "room": txt, "text": text, "log": log}))' \
        "$rep" "$ok" "$txt" "$log" >>"$RESULTS"
}

# ----- --compare: two builds side by side -----------------------------------------

CMP=$ROOT/target/compare
WORKTREES=()
cleanup_worktrees() {
    for wt in ${WORKTREES[@]+"${WORKTREES[@]}"}; do
        git -C "$ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"
    done
    git -C "$ROOT" worktree prune >/dev/null 2>&1 || true
}

# build_rev NAME REV: REV's library (in a worktree, with its own target
# directory) and today's benchmark programs built against it. Sets
# NAME_RUST, NAME_C, NAME_LIB and NAME_BINDING.
build_rev() {
    local name=$1 rev=$2
    local sha
    sha=$(git -C "$ROOT" rev-parse --verify --quiet "$rev^{commit}") || die "--compare: no revision $rev"
    local wt=$CMP/$name-src tgt=$CMP/$name-target
    mkdir -p "$CMP"
    if [ -e "$wt" ]; then git -C "$ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"; fi
    git -C "$ROOT" worktree prune
    say "$name: $rev ($(git -C "$ROOT" log -1 --format='%h %s' "$sha")) in $wt"
    git -C "$ROOT" worktree add --detach "$wt" "$sha" >&2 || die "git worktree add $rev failed"
    WORKTREES+=("$wt")
    # Today's measurement code (the tcpchat duplex left out where the
    # revision has no Conn::split).
    cp "$ROOT/benches/throughput.rs" "$wt/benches/throughput.rs"
    local flags=()
    if ! grep -q "pub fn split" "$wt/src/conn.rs"; then
        flags=(RUSTFLAGS="--cfg tcpchat_bench_no_split")
    fi
    (cd "$wt" && env CARGO_TARGET_DIR="$tgt" TCPCHAT_NO_HEADER_UPDATE=1 ${flags[@]+"${flags[@]}"} \
        cargo build --release --lib) >&2 || die "$name: cargo build failed"
    local exe
    exe=$(cd "$wt" && env CARGO_TARGET_DIR="$tgt" ${flags[@]+"${flags[@]}"} \
        cargo bench --bench throughput --no-run --message-format=json 2>/dev/null | bench_exe)
    [ -n "$exe" ] && [ -x "$exe" ] || die "$name: building benches/throughput.rs failed"
    ${CC:-gcc} -O2 -std=c11 -Wall -Wextra -I"$wt/include" "$ROOT/benches/bench_c.c" -o "$CMP/$name-bench_c" \
        -L"$tgt/release" -ltcpchat -Wl,-rpath,"$tgt/release" -lpthread >&2 ||
        die "$name: building benches/bench_c.c failed"
    printf -v "${name}_RUST" '%s' "$exe"
    printf -v "${name}_C" '%s' "$CMP/$name-bench_c"
    printf -v "${name}_LIB" '%s' "$tgt/release/libtcpchat.so"
    printf -v "${name}_BINDING" '%s' "$wt/bindings/python"
    printf -v "${name}_DESC" '%s' "$(git -C "$ROOT" log -1 --format='%h (%s)' "$sha")"
}

# One measurement for both builds, one right after the other (the order
# alternating with the repetition): compare_one ID PINNED COUNT KIND ARGS...,
# KIND being rust, c or py.
compare_one() {
    local id=$1 pinned=$2 count=$3 kind=$4
    shift 4
    local sides=(new old)
    if [ $((rep % 2)) = 0 ]; then sides=(old new); fi
    local side
    for side in "${sides[@]}"; do
        local rust_v=${side}_RUST c_v=${side}_C lib_v=${side}_LIB bind_v=${side}_BINDING
        case $kind in
            rust) measure "$id@$side" "$pinned" "$count" "${!rust_v}" "$@" ;;
            c) measure "$id@$side" "$pinned" "$count" "${!c_v}" "$@" ;;
            py) measure "$id@$side" "$pinned" "$count" env TCPCHAT_LIB="${!lib_v}" \
                    TCPCHAT_BINDING="${!bind_v}" "$PY" benches/bench_py.py "$@" ;;
        esac
    done
}

compare_main() {
    trap cleanup_worktrees EXIT
    local old_rev=${COMPARE%%..*} new_rev=
    case $COMPARE in *..*) new_rev=${COMPARE#*..} ;; esac
    build_rev old "$old_rev"
    if [ -n "$new_rev" ]; then
        build_rev new "$new_rev"
    else
        new_RUST=$RUST_BENCH new_C=$C_BENCH new_LIB=$TCPCHAT_LIB new_BINDING=$ROOT/bindings/python
        new_DESC="the working tree of $(git -C "$ROOT" log -1 --format='%h (%s)' HEAD)"
        if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- src bindings include)" ]; then
            new_DESC="$new_DESC, with uncommitted changes in src/, bindings/ or include/"
        fi
    fi
    "$PY" -c 'import json, sys; print(json.dumps({"meta": {"compare": True, "new": sys.argv[1], "old": sys.argv[2]}}))' \
        "$new_DESC" "$old_DESC" >>"$RESULTS"
    local tr=(--trials "$TRIALS") pp=(pingpong --size 64 --count "$A_COUNT" --warmup "$A_WARMUP")
    for rep in $(seq 1 "$REPS"); do
        say "pair $rep of $REPS"
        # A, pinned: raw std::net (a control: no library code), then the tcpchat rows.
        compare_one "A-pinned/rust/raw" true "$A_COUNT" rust "${pp[@]}" --impl raw
        compare_one "A-pinned/rust/tcpchat" true "$A_COUNT" rust "${pp[@]}" --impl tcpchat
        compare_one "A-pinned/c/tcpchat" true "$A_COUNT" c "${pp[@]}" --impl tcpchat
        compare_one "A-pinned/py/tcpchat" true "$A_COUNT" py "${pp[@]}" --impl tcpchat
        for framing in frame line; do
            for size in 64 4096; do
                local count=$B_SMALL
                [ $size = 4096 ] && count=$B_BIG
                local st=(stream --framing $framing --size $size --count "$count") id=B/$framing/$size
                compare_one "$id/c/raw" false "$count" c "${st[@]}" "${tr[@]}" --impl raw
                compare_one "$id/rust/tcpchat-batch" false "$count" rust "${st[@]}" "${tr[@]}" --impl tcpchat --recv batch
                compare_one "$id/rust/tcpchat-into" false "$count" rust "${st[@]}" "${tr[@]}" --impl tcpchat --recv into
                compare_one "$id/c/tcpchat-many" false "$count" c "${st[@]}" "${tr[@]}" --impl tcpchat
                compare_one "$id/c/tcpchat-recv" false "$count" c "${st[@]}" "${tr[@]}" --impl tcpchat-recv
                compare_one "$id/py/tcpchat" false "$count" py "${st[@]}" --impl tcpchat
            done
        done
    done
    local load_after
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    printf '{"meta":{"load_after":"%s"}}\n' "$load_after" >>"$RESULTS"
    say "load average after: $load_after"
    local quick_flag=()
    [ "$QUICK" = 1 ] && quick_flag=(--quick)
    "$PY" benches/report.py "$RESULTS" --compare "${quick_flag[@]}" | tee "$OUT/table.md"
    local report_rc=${PIPESTATUS[0]}
    if [ "$failed" -gt 0 ] || [ "$report_rc" -ne 0 ]; then
        say "FAILED: $failed measurement(s) failed (see above)"
        return 1
    fi
    say "all measurements completed with the right counts and checksums"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
printf '{"meta":{"reps":%d,"quick":%s,"a_count":%d,"pin_cpu":%d,"load_before":"%s"}}\n' \
    "$REPS" "$([ "$QUICK" = 1 ] && echo true || echo false)" "$A_COUNT" "$PIN_CPU" "$load_before" >>"$RESULTS"
say "$( [ "$QUICK" = 1 ] && echo quick mode, ) $REPS repetition(s); load average before: $load_before"

if [ -n "$COMPARE" ]; then
    compare_main
    exit $?
fi

for rep in $(seq 1 "$REPS"); do
    say "repetition $rep of $REPS"
    # A: ping-pong, 64 B frames, pinned then unpinned.
    for pin in pinned unpinned; do
        p=false; [ $pin = pinned ] && p=true
        pp=(pingpong --size 64 --count "$A_COUNT" --warmup "$A_WARMUP")
        measure "A-$pin/rust/raw" $p "$A_COUNT" "$RUST_BENCH" "${pp[@]}" --impl raw
        measure "A-$pin/rust/tcpchat" $p "$A_COUNT" "$RUST_BENCH" "${pp[@]}" --impl tcpchat
        measure "A-$pin/c/raw" $p "$A_COUNT" "$C_BENCH" "${pp[@]}" --impl raw
        measure "A-$pin/c/tcpchat" $p "$A_COUNT" "$C_BENCH" "${pp[@]}" --impl tcpchat
        # The raw C baseline with a poll() before each read, of 1 and of 3
        # descriptors: what a cancellable wait costs (see BENCHMARKS.md).
        measure "A-$pin/c/raw-poll1" $p "$A_COUNT" "$C_BENCH" "${pp[@]}" --impl raw-poll1
        measure "A-$pin/c/raw-poll3" $p "$A_COUNT" "$C_BENCH" "${pp[@]}" --impl raw-poll3
        measure "A-$pin/py/tutorial" $p "$A_COUNT" "$PY" benches/bench_py.py "${pp[@]}" --impl tutorial
        measure "A-$pin/py/plain" $p "$A_COUNT" "$PY" benches/bench_py.py "${pp[@]}" --impl plain
        measure "A-$pin/py/tcpchat" $p "$A_COUNT" "$PY" benches/bench_py.py "${pp[@]}" --impl tcpchat
    done
    # B: streaming, one way.
    for framing in frame line; do
        for size in 64 4096; do
            count=$B_SMALL; [ $size = 4096 ] && count=$B_BIG
            st=(stream --framing $framing --size $size --count "$count")
            # Rust and C: each repetition is the fastest of $TRIALS transfers
            # (each checked; 1,000,000 x 64 B takes only ~40 ms, so one
            # scheduling hiccup on this shared machine would decide a single
            # transfer). Python transfers take 0.2-3 s each: one per repetition.
            tr=(--trials "$TRIALS")
            id=B/$framing/$size
            measure "$id/c/raw" false "$count" "$C_BENCH" "${st[@]}" "${tr[@]}" --impl raw
            measure "$id/rust/raw" false "$count" "$RUST_BENCH" "${st[@]}" "${tr[@]}" --impl raw
            measure "$id/rust/tcpchat-batch" false "$count" "$RUST_BENCH" "${st[@]}" "${tr[@]}" --impl tcpchat --recv batch
            measure "$id/rust/tcpchat-into" false "$count" "$RUST_BENCH" "${st[@]}" "${tr[@]}" --impl tcpchat --recv into
            measure "$id/c/tcpchat-many" false "$count" "$C_BENCH" "${st[@]}" "${tr[@]}" --impl tcpchat
            measure "$id/c/tcpchat-recv" false "$count" "$C_BENCH" "${st[@]}" "${tr[@]}" --impl tcpchat-recv
            measure "$id/py/tutorial" false "$count" "$PY" benches/bench_py.py "${st[@]}" --impl tutorial
            measure "$id/py/plain" false "$count" "$PY" benches/bench_py.py "${st[@]}" --impl plain
            measure "$id/py/tcpchat" false "$count" "$PY" benches/bench_py.py "${st[@]}" --impl tcpchat
        done
    done
    # E: duplex, one connection, a sending and a receiving thread, through
    # a byte echo. Rust and C: the fastest of $TRIALS runs (each checked).
    dx=(duplex --count "$E_COUNT")
    measure "E/rust/raw" false "$E_COUNT" "$RUST_BENCH" "${dx[@]}" "${tr[@]}" --impl raw
    measure "E/rust/tcpchat" false "$E_COUNT" "$RUST_BENCH" "${dx[@]}" "${tr[@]}" --impl tcpchat
    measure "E/c/raw" false "$E_COUNT" "$C_BENCH" "${dx[@]}" "${tr[@]}" --impl raw
    measure "E/c/tcpchat" false "$E_COUNT" "$C_BENCH" "${dx[@]}" "${tr[@]}" --impl tcpchat
    measure "E/py/plain" false "$E_COUNT" "$PY" benches/bench_py.py "${dx[@]}" --impl plain
    measure "E/py/tcpchat" false "$E_COUNT" "$PY" benches/bench_py.py "${dx[@]}" --impl tcpchat
    measure "E/py/tcpchat-recv" false "$E_COUNT" "$PY" benches/bench_py.py "${dx[@]}" --impl tcpchat-recv
    # C and D: the room (examples/room_bench, which runs examples/chat_room).
    if [ "$ROOM" = 1 ]; then room; fi
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
printf '{"meta":{"load_after":"%s"}}\n' "$load_after" >>"$RESULTS"
say "load average after: $load_after"

# ----- the table -------------------------------------------------------------------

quick_flag=()
[ "$QUICK" = 1 ] && quick_flag=(--quick)
"$PY" benches/report.py "$RESULTS" "${quick_flag[@]}" | tee "$OUT/table.md"
report_rc=${PIPESTATUS[0]}
if [ "$failed" -gt 0 ] || [ "$report_rc" -ne 0 ]; then
    say "FAILED: $failed measurement(s) failed (see above)"
    exit 1
fi
say "all measurements completed with the right counts and checksums"
