#!/usr/bin/env bash
# Interop of the example programs: the C chat_server with the Rust
# chat_client and the Rust chat_server with the C chat_client (and C with C),
# in every framing, checking both transcripts exactly; then the C echo_server
# answering a client and stopping cleanly on SIGTERM; then the C chat_room
# (and the Rust one, which must behave the same) with nc and /dev/tcp clients.
#
# Run by `make -C tests/c check` (after `make -C examples/c`). The Rust
# examples come from `cargo build --release --examples`; when they are absent
# the Rust pairs are skipped with a message (the C pairs still run).
#
# No sleeps: servers are started with --port 0 and the port is read from
# their first stderr line through a fifo; everything is bounded by timeout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
c_bin="$root/examples/c/build"
rust_bin="${TCPCHAT_RUST_EXAMPLES:-$root/target/release/examples}"
limit=20 # seconds, for every step

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passed=0

fail() {
    echo "FAILED: $*" >&2
    failures=$((failures + 1))
}

# The transcripts of the tutorial's session.
printf 'hello\nhow are you\n' >"$work/server_in"
printf 'hi\nfine\n' >"$work/client_in"
printf 'client: hi\nclient: fine\n' >"$work/server_want"
printf 'server: hello\nserver: how are you\n' >"$work/client_want"

# chat SERVER_BIN CLIENT_BIN FRAMING NAME
chat() {
    local server=$1 client=$2 framing=$3 name=$4
    local d="$work/$name"
    mkdir -p "$d"
    mkfifo "$d/err"
    timeout "$limit" "$server" --port 0 --once --framing "$framing" \
        <"$work/server_in" >"$d/server_out" 2>"$d/err" &
    local spid=$!
    local first=""
    exec 3<"$d/err"
    if ! IFS= read -r -t "$limit" first <&3; then
        exec 3<&-
        fail "$name: the server wrote no first line"
        wait "$spid" || true
        return
    fi
    cat <&3 >"$d/server_err" &
    local catpid=$!
    exec 3<&-
    if [[ ! $first =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
        fail "$name: first stderr line is '$first', not 'listening on 127.0.0.1:PORT'"
        kill "$spid" 2>/dev/null || true
        wait "$spid" "$catpid" || true
        return
    fi
    local port=${BASH_REMATCH[1]}
    local crc=0 src=0
    timeout "$limit" "$client" --port "$port" --framing "$framing" \
        <"$work/client_in" >"$d/client_out" 2>"$d/client_err" || crc=$?
    wait "$spid" || src=$?
    wait "$catpid" || true
    local ok=1
    if [[ $src -ne 0 ]]; then fail "$name: server exited $src"; ok=0; fi
    if [[ $crc -ne 0 ]]; then fail "$name: client exited $crc"; ok=0; fi
    if ! diff -u "$work/server_want" "$d/server_out" >&2; then fail "$name: server transcript"; ok=0; fi
    if ! diff -u "$work/client_want" "$d/client_out" >&2; then fail "$name: client transcript"; ok=0; fi
    if [[ $ok -eq 1 ]]; then
        passed=$((passed + 1))
    else
        echo "--- $name server stderr:" >&2; cat "$d/server_err" >&2 || true
        echo "--- $name client stderr:" >&2; cat "$d/client_err" >&2 || true
    fi
}

for f in raw line frame; do
    chat "$c_bin/chat_server" "$c_bin/chat_client" "$f" "c-server_c-client_$f"
done
if [[ -x $rust_bin/chat_server && -x $rust_bin/chat_client ]]; then
    for f in raw line frame; do
        chat "$c_bin/chat_server" "$rust_bin/chat_client" "$f" "c-server_rust-client_$f"
        chat "$rust_bin/chat_server" "$c_bin/chat_client" "$f" "rust-server_c-client_$f"
    done
else
    echo "interop: SKIPPED the C<->Rust pairs: no Rust examples in $rust_bin" \
        "(build them with: cargo build --release --examples)"
fi

# The C echo_server: one client over bash's /dev/tcp, then SIGTERM.
echo_check() {
    local d="$work/echo"
    mkdir -p "$d"
    mkfifo "$d/err"
    timeout "$limit" "$c_bin/echo_server" --port 0 --max-clients 2 2>"$d/err" &
    local spid=$!
    local first="" line=""
    exec 3<"$d/err"
    IFS= read -r -t "$limit" first <&3 || true
    cat <&3 >"$d/rest" &
    local catpid=$!
    exec 3<&-
    if [[ ! $first =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
        fail "echo_server: first stderr line is '$first'"
        kill "$spid" 2>/dev/null || true
        wait "$spid" "$catpid" || true
        return
    fi
    exec 4<>"/dev/tcp/127.0.0.1/${BASH_REMATCH[1]}"
    printf 'ping\n' >&4
    IFS= read -r -t "$limit" line <&4 || true
    exec 4>&-
    [[ $line == ping ]] || fail "echo_server echoed '$line', not 'ping'"
    kill -TERM "$spid"
    local rc=0
    wait "$spid" || rc=$?
    wait "$catpid" || true
    [[ $rc -eq 0 ]] || fail "echo_server exited $rc after SIGTERM"
    grep -q '^echo_server: stopped; served 1 clients, refused 0, echoed 1 messages' "$d/rest" ||
        fail "echo_server stats: $(cat "$d/rest")"
    [[ $failures -ne 0 ]] || passed=$((passed + 1))
}
echo_check

# The chat room (the C one; the Rust one too when built, which must behave
# the same): two clients join, a line from each reaches the other as
# `NAME: TEXT`, one client too many gets the full-room line, SIGTERM gives
# every client the closing line and end of stream, and the room exits 0 with
# exactly the transcript on stdout and its figures on stderr. The clients are
# bash's /dev/tcp and plain nc (netcat-openbsd; .ci/run installs it).

# open_client KIND PORT NAME: connect a devtcp or nc client; sets cw (the fd
# to write its lines to), cr (the fd to read its lines from), cpid (nc's pid).
open_client() {
    local kind=$1 port=$2 n=$3
    cpid=""
    if [[ $kind == devtcp ]]; then
        exec {cw}<>"/dev/tcp/127.0.0.1/$port"
        cr=$cw
    else
        mkfifo "$d/$n.in" "$d/$n.out"
        timeout "$limit" nc -N 127.0.0.1 "$port" <"$d/$n.in" >"$d/$n.out" &
        cpid=$!
        exec {cw}<>"$d/$n.in" # read-write: opening does not wait for nc
        exec {cr}<"$d/$n.out"
    fi
}

# expect_line FD WANT WHAT
expect_line() {
    local got=""
    IFS= read -r -t "$limit" got <&"$1" || true
    [[ $got == "$2" ]] && return 0
    fail "$3: got '$got', expected '$2'"
    return 1
}

# expect_eof FD WHAT: the stream ends here.
expect_eof() {
    local got="" rc=0
    IFS= read -r -t "$limit" got <&"$1" || rc=$?
    [[ $rc -eq 1 && -z $got ]] && return 0
    fail "$2: expected end of stream, got '$got' (read status $rc)"
    return 1
}

# after_sigterm WHAT W R PID FAILURES_BEFORE: the client reads the closing
# line, then the end of stream, and closes. (nc writes the end of stream on
# its stdout only once its stdin has ended too: close that first; it then
# closes its socket and exits.)
after_sigterm() {
    local what=$1 w=$2 r=$3 pid=$4 before=$5 rc=0
    [[ $failures -ne $before ]] || expect_line "$r" "* server shutting down" "$what" || true
    [[ $r == "$w" ]] || exec {w}>&-
    [[ $failures -ne $before ]] || expect_eof "$r" "$what" || true
    exec {r}<&-
    if [[ -n $pid ]]; then
        wait "$pid" || rc=$?
        [[ $rc -eq 0 ]] || fail "$what: nc exited $rc"
    fi
}

# room_check SERVER_BIN KIND NAME
room_check() {
    local server=$1 kind=$2 name=$3
    d="$work/$name"
    mkdir -p "$d"
    mkfifo "$d/err"
    # Two --allow flags: they add up (the loopback one is not the last).
    timeout "$limit" "$server" --port 0 --max-clients 2 --allow 127.0.0.1 --allow 10.0.0.0/8 \
        --deny 192.0.2.0/24 </dev/null >"$d/out" 2>"$d/err" &
    local spid=$! first=""
    exec 3<"$d/err"
    IFS= read -r -t "$limit" first <&3 || true
    cat <&3 >"$d/rest" &
    local catpid=$!
    exec 3<&-
    if [[ ! $first =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
        fail "$name: first stderr line is '$first', not 'listening on 127.0.0.1:PORT'"
        kill "$spid" 2>/dev/null || true
        wait "$spid" "$catpid" || true
        return
    fi
    local port=${BASH_REMATCH[1]} before=$failures a_w a_r a_pid b_w b_r b_pid x
    local welcome="(commands: /nick NAME, /who, /quit)"
    open_client "$kind" "$port" a
    a_w=$cw a_r=$cr a_pid=$cpid
    expect_line "$a_r" "* welcome, you are guest1 $welcome" "$name: first client" &&
        open_client "$kind" "$port" b && b_w=$cw b_r=$cr b_pid=$cpid &&
        expect_line "$b_r" "* welcome, you are guest2 $welcome" "$name: second client" &&
        expect_line "$a_r" "* guest2 joined" "$name: first client" &&
        exec {x}<>"/dev/tcp/127.0.0.1/$port" &&
        expect_line "$x" "error: server full (2 clients); try again later" "$name: third client" &&
        expect_eof "$x" "$name: third client" &&
        exec {x}>&- &&
        printf 'hello from a\n' >&"$a_w" &&
        expect_line "$b_r" "guest1: hello from a" "$name: second client" &&
        printf 'hi from b, ü\n' >&"$b_w" &&
        expect_line "$a_r" "guest2: hi from b, ü" "$name: first client" || true
    kill -TERM "$spid" 2>/dev/null || true
    # b's nc inherited a's fds: close b first, so that a's nc sees its end.
    [[ -z ${b_r:-} ]] || after_sigterm "$name: second client" "$b_w" "$b_r" "$b_pid" "$before"
    after_sigterm "$name: first client" "$a_w" "$a_r" "$a_pid" "$before"
    local rc=0
    wait "$spid" || rc=$?
    wait "$catpid" || true
    [[ $rc -eq 0 ]] || fail "$name: chat_room exited $rc after SIGTERM"
    printf 'guest1: hello from a\nguest2: hi from b, ü\n' >"$d/want"
    diff -u "$d/want" "$d/out" >&2 || fail "$name: transcript on stdout"
    grep -q '^chat_room: stopped; 2 joined, 1 refused, 2 messages, 0 dropped$' "$d/rest" ||
        fail "$name: no stats line on stderr"
    if [[ $failures -eq $before ]]; then
        passed=$((passed + 1))
    else
        echo "--- $name stderr:" >&2
        cat "$d/rest" >&2 || true
    fi
}

rooms=("$c_bin/chat_room")
if [[ -x $rust_bin/chat_room ]]; then
    rooms+=("$rust_bin/chat_room")
else
    echo "interop: SKIPPED the Rust chat_room: not in $rust_bin"
fi
clients=(devtcp)
if command -v nc >/dev/null 2>&1; then
    clients+=(nc)
elif [[ -n ${CI:-} ]]; then
    fail "nc is not installed (CI installs netcat-openbsd)"
else
    echo "interop: SKIPPED the nc clients of chat_room: nc is not installed (apt-get install netcat-openbsd)"
fi
for room in "${rooms[@]}"; do
    lang=c
    [[ $room == "$c_bin/chat_room" ]] || lang=rust
    for kind in "${clients[@]}"; do
        room_check "$room" "$kind" "$lang-chat_room_$kind-clients"
    done
done

# Bad flags: usage on stderr, exit 2 (the room has no --framing: lines only).
rc=0
"$c_bin/chat_room" --framing line >/dev/null 2>"$work/usage" || rc=$?
if [[ $rc -eq 2 ]] && grep -q '^error: unknown flag "--framing"' "$work/usage"; then
    passed=$((passed + 1))
else
    fail "chat_room --framing line exited $rc"
fi
for prog in chat_server chat_client echo_server chat_room; do
    rc=0
    "$c_bin/$prog" --no-such-flag >/dev/null 2>"$work/usage" || rc=$?
    if [[ $rc -eq 2 ]] && grep -q "^usage: $prog" "$work/usage"; then
        passed=$((passed + 1))
    else
        fail "$prog --no-such-flag exited $rc"
    fi
done

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
