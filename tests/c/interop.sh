#!/usr/bin/env bash
# Interop of the example programs: the C chat_server with the Rust
# chat_client and the Rust chat_server with the C chat_client (and C with C),
# in every framing, checking both transcripts exactly; then the C echo_server
# answering a client and stopping cleanly on SIGTERM.
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

# Bad flags: usage on stderr, exit 2.
for prog in chat_server chat_client echo_server; do
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
