#!/usr/bin/env python3
"""The Python side of the tcpchat benchmark (issue 6).

Workloads A (ping-pong), B (one-way streaming) and E (duplex), each through:

* ``tcpchat``: the Python binding (``bindings/python``); batches cross the
  FFI once (``send_many`` / ``recv_many``);
* ``tutorial``: the ``socket`` module as a tutorial writes it: one
  ``sendall`` per message; frames read with a ``recv_exact`` helper (a
  ``recv`` for the 4-byte header, one for the payload), lines with
  ``makefile().readline()`` once per message; no TCP_NODELAY;
* ``plain``: the best plain-Python version: TCP_NODELAY, ``sendall`` of the
  joined frames of a whole batch, ``recv_into`` a large buffer and parsing
  every complete message out of each read (``bytes.split`` for lines).

The measuring end runs in this process; the other end (the echo server of
A, the sender of B, the byte echo of E) is this script again in a child
process, so the two do not share a GIL.

E, duplex: one connection, a thread sending ``--count`` lines one call at a
time while the main thread receives them back from the echo peer (a plain
socket writing back every byte it reads, the same peer for all): ``plain`` is
one ``socket`` used by the two threads (``sendall(line + b"\\n")`` per line;
``recv`` of 64 KiB split on newlines), TCP_NODELAY as tcpchat sets it;
``tcpchat`` is ONE ``Connection`` used by the two threads (``send`` per line
on one, ``recv_many(1024)`` on the other, the binding's counterpart of a
64 KiB ``recv``); ``tcpchat-recv`` the same with ``recv`` per line. ``benches/run.sh`` runs it once per measurement and
collects the ``RESULT`` line (one JSON object). By hand::

    python3 benches/bench_py.py pingpong --impl tcpchat --count 20000
    python3 benches/bench_py.py stream --impl plain --framing line --size 64 --count 1000000
    python3 benches/bench_py.py duplex --impl tcpchat --count 200000

Checks: every echo equals what was sent; a stream's receiver checks the
count, every length, and the CRC-32 (``zlib.crc32``) of all payloads in
order against the value computed from the same message generator. A wrong
figure prints FAILED and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Set

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
POOL = 1024
HDR = struct.Struct(">I")
READ_SIZE = 1 << 18
#: recv() size for the plain line reader: a fresh bytes object per call, kept
#: under glibc's mmap threshold (128 KiB) so that it is not an mmap each time.
LINE_READ = 1 << 16
TIMEOUT_S = 60.0


def load_tcpchat() -> Any:
    """The binding from bindings/python (or the directory TCPCHAT_BINDING
    names: ``run.sh --compare`` points it at another revision's), with the
    repository's release library unless TCPCHAT_LIB says otherwise."""
    lib = os.path.join(ROOT, "target", "release", "libtcpchat.so")
    if "TCPCHAT_LIB" not in os.environ and os.path.exists(lib):
        os.environ["TCPCHAT_LIB"] = lib
    sys.path.insert(0, os.environ.get("TCPCHAT_BINDING") or os.path.join(ROOT, "bindings", "python"))
    import tcpchat  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

    return tcpchat


def make_pool(size: int) -> List[bytes]:
    """Message i is pool[i % POOL]; byte j of pool message k is
    32 + (31k + 7j) % 95, printable ASCII (so never a newline), as in
    throughput.rs and bench_c.c. Built by rotating one period of the
    sequence: (s + 7j) % 95 == 7 (j + 68 s) % 95 since 7 * 68 = 1 (mod 95)."""
    base = bytes(32 + (7 * t) % 95 for t in range(95))
    big = base * (size // 95 + 2)
    return [big[(68 * ((31 * k) % 95)) % 95 :][:size] for k in range(POOL)]


def batch_size(size: int) -> int:
    return max(1, min(1024, 65536 // size))


def expected_crc(pool: List[bytes], count: int) -> int:
    blob = b"".join(pool)
    crc = 0
    for _ in range(count // POOL):
        crc = zlib.crc32(blob, crc)
    for k in range(count % POOL):
        crc = zlib.crc32(pool[k], crc)
    return crc


def fail(msg: str) -> None:
    print(f"bench_py: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    """The tutorial's helper: loop on recv until n bytes came; None at EOF."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            if data:
                fail("the stream ended inside a message")
            return None
        data += chunk
    return data


# ----- the peer process ----------------------------------------------------------


def spawn_peer(args: argparse.Namespace, role: str, port: int) -> "subprocess.Popen[bytes]":
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "_peer",
        role,
        "--impl",
        args.impl,
        "--framing",
        args.framing,
        "--size",
        str(args.size),
        "--count",
        str(args.count),
        "--port",
        str(port),
    ]
    return subprocess.Popen(cmd)


def finish_peer(child: "subprocess.Popen[bytes]") -> None:
    try:
        rc = child.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        fail("the peer process did not finish")
    if rc != 0:
        fail(f"the peer process exited with {rc}")


def peer_main(args: argparse.Namespace) -> None:
    port = args.port
    if args.role == "byteecho":
        byte_echo(port)
        return
    pool = make_pool(args.size)  # before connecting: the receiver's clock starts at accept
    if args.impl == "tcpchat":
        tc = load_tcpchat()
        conn = tc.connect("127.0.0.1", port, framing=args.framing, read_timeout=TIMEOUT_S)
        if args.role == "echo":
            while True:
                m = conn.recv()
                if m is None:
                    break
                conn.send(m)
        else:
            batch = batch_size(args.size)
            sent = 0
            while sent < args.count:
                n = min(batch, args.count - sent)
                k = sent % POOL
                conn.send_many(pool[k : k + n])
                sent += n
        conn.close()
        return
    sock = socket.create_connection(("127.0.0.1", port))
    if args.impl == "plain":
        nodelay(sock)
    if args.role == "echo":
        echo_socket(sock, args.impl)
    else:
        send_socket(sock, args, pool)
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(4096):
        pass
    sock.close()


def byte_echo(port: int) -> None:
    """The duplex peer: write back every byte read, until end of stream."""
    sock = socket.create_connection(("127.0.0.1", port))
    nodelay(sock)
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    recv_into, sendall = sock.recv_into, sock.sendall
    while True:
        n = recv_into(buf)
        if n == 0:
            break
        sendall(view[:n])
    sock.shutdown(socket.SHUT_WR)
    sock.close()


def echo_socket(sock: socket.socket, impl: str) -> None:
    if impl == "tutorial":
        while True:
            h = recv_exact(sock, 4)
            if h is None:
                return
            (n,) = HDR.unpack(h)
            m = recv_exact(sock, n)
            if m is None:
                fail("the stream ended inside a frame")
                return
            sock.sendall(h + m)
    # plain: echo every complete frame of each read with one sendall
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    unpack_from = HDR.unpack_from
    have = 0
    while True:
        n = sock.recv_into(view[have:])
        if n == 0:
            return
        have += n
        pos = 0
        while have - pos >= 4:
            (ln,) = unpack_from(buf, pos)
            if have - pos - 4 < ln:
                break
            pos += 4 + ln
        if pos:
            sock.sendall(view[:pos])
            buf[: have - pos] = buf[pos:have]
            have -= pos


def send_socket(sock: socket.socket, args: argparse.Namespace, pool: List[bytes]) -> None:
    line = args.framing == "line"
    if args.impl == "tutorial":
        for i in range(args.count):
            m = pool[i % POOL]
            if line:
                sock.sendall(m + b"\n")
            else:
                sock.sendall(struct.pack(">I", len(m)) + m)
        return
    pack = HDR.pack
    batch = batch_size(args.size)
    sent = 0
    while sent < args.count:
        n = min(batch, args.count - sent)
        k = sent % POOL
        msgs = pool[k : k + n]
        if line:
            sock.sendall(b"\n".join(msgs) + b"\n")
        else:
            sock.sendall(b"".join([pack(len(m)) + m for m in msgs]))
        sent += n


# ----- A: ping-pong ----------------------------------------------------------------


def pingpong(args: argparse.Namespace) -> Dict[str, Any]:
    pool = make_pool(args.size)
    total = args.warmup + args.count
    rtts = [0] * args.count
    clock = time.perf_counter_ns
    t_begin = 0
    if args.impl == "tcpchat":
        tc = load_tcpchat()
        server = tc.Server("127.0.0.1", 0, framing="frame", read_timeout=TIMEOUT_S)
        child = spawn_peer(args, "echo", server.port)
        conn = server.accept(timeout=TIMEOUT_S)
        send, recv = conn.send, conn.recv
        for i in range(total):
            m = pool[i % POOL]
            if i == args.warmup:
                t_begin = clock()
            t = clock()
            send(m)
            r = recv()
            if i >= args.warmup:
                rtts[i - args.warmup] = clock() - t
            if r != m:
                fail(f"round trip {i}: the echo differs from the message sent")
        elapsed_ns = clock() - t_begin
        conn.close()
        server.close()
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        child = spawn_peer(args, "echo", listener.getsockname()[1])
        listener.settimeout(TIMEOUT_S)
        sock, _ = listener.accept()
        sock.settimeout(None)
        listener.close()
        if args.impl == "tutorial":
            for i in range(total):
                m = pool[i % POOL]
                if i == args.warmup:
                    t_begin = clock()
                t = clock()
                sock.sendall(struct.pack(">I", len(m)) + m)
                h = recv_exact(sock, 4)
                r = recv_exact(sock, HDR.unpack(h)[0]) if h else None
                if i >= args.warmup:
                    rtts[i - args.warmup] = clock() - t
                if r != m:
                    fail(f"round trip {i}: the echo differs from the message sent")
        else:
            nodelay(sock)
            buf = bytearray(READ_SIZE)
            view = memoryview(buf)
            pack, unpack_from = HDR.pack, HDR.unpack_from
            recv_into, sendall = sock.recv_into, sock.sendall
            for i in range(total):
                m = pool[i % POOL]
                if i == args.warmup:
                    t_begin = clock()
                t = clock()
                sendall(pack(len(m)) + m)
                have = recv_into(view)
                while have < 4 or have < 4 + unpack_from(buf, 0)[0]:
                    n = recv_into(view[have:])
                    if n == 0:
                        fail("the echo server closed early")
                    have += n
                if i >= args.warmup:
                    rtts[i - args.warmup] = clock() - t
                if buf[4:have] != m:
                    fail(f"round trip {i}: the echo differs from the message sent")
        elapsed_ns = clock() - t_begin
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
        sock.close()
    finish_peer(child)
    rtts.sort()
    n = len(rtts)
    return {
        "workload": "pingpong",
        "count": n,
        "rtt_median_us": rtts[n // 2] / 1e3,
        "rtt_p99_us": rtts[min(n - 1, n * 99 // 100)] / 1e3,
        "rtt_min_us": rtts[0] / 1e3,
        "round_trips_per_s": n / (elapsed_ns / 1e9),
    }


# ----- B: streaming -------------------------------------------------------------------


def stream(args: argparse.Namespace) -> Dict[str, Any]:
    pool = make_pool(args.size)
    want_crc = expected_crc(pool, args.count)
    size = args.size
    count = 0
    crc = 0
    lengths: Set[int] = set()
    line = args.framing == "line"
    crc32, join = zlib.crc32, b"".join
    if args.impl == "tcpchat":
        tc = load_tcpchat()
        server = tc.Server("127.0.0.1", 0, framing=args.framing, read_timeout=TIMEOUT_S)
        child = spawn_peer(args, "sender", server.port)
        conn = server.accept(timeout=TIMEOUT_S)
        recv_many = conn.recv_many
        t0 = time.perf_counter()
        while True:
            msgs = recv_many(1024)
            if not msgs:
                break
            count += len(msgs)
            lengths.update(map(len, msgs))
            crc = crc32(join(msgs), crc)
        secs = time.perf_counter() - t0
        conn.close()
        server.close()
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        child = spawn_peer(args, "sender", listener.getsockname()[1])
        listener.settimeout(TIMEOUT_S)
        sock, _ = listener.accept()
        sock.settimeout(None)
        listener.close()
        t0 = time.perf_counter()
        if args.impl == "tutorial":
            if line:
                f = sock.makefile("rb")
                while True:
                    m = f.readline()
                    if not m:
                        break
                    m = m[:-1] if m.endswith(b"\n") else m
                    count += 1
                    lengths.add(len(m))
                    crc = crc32(m, crc)
                f.close()
            else:
                while True:
                    h = recv_exact(sock, 4)
                    if h is None:
                        break
                    body = recv_exact(sock, HDR.unpack(h)[0])
                    if body is None:
                        fail("the stream ended inside a frame")
                        break
                    count += 1
                    lengths.add(len(body))
                    crc = crc32(body, crc)
        else:
            nodelay(sock)
            if line:
                pending = b""
                recv = sock.recv
                while True:
                    data = recv(LINE_READ)
                    if not data:
                        break
                    if pending:
                        data = pending + data
                    msgs = data.split(b"\n")
                    pending = msgs.pop()
                    count += len(msgs)
                    lengths.update(map(len, msgs))
                    crc = crc32(join(msgs), crc)
                if pending:
                    count += 1
                    lengths.add(len(pending))
                    crc = crc32(pending, crc)
            else:
                buf = bytearray(READ_SIZE)
                view = memoryview(buf)
                unpack_from = HDR.unpack_from
                recv_into = sock.recv_into
                have = 0
                while True:
                    n = recv_into(view[have:])
                    if n == 0:
                        break
                    have += n
                    pos = 0
                    msgs = []
                    append = msgs.append
                    while have - pos >= 4:
                        (ln,) = unpack_from(buf, pos)
                        end = pos + 4 + ln
                        if end > have:
                            if 4 + ln > READ_SIZE:
                                fail("a frame larger than the read buffer")
                            break
                        append(buf[pos + 4 : end])
                        pos = end
                    if pos:
                        buf[: have - pos] = buf[pos:have]
                        have -= pos
                    count += len(msgs)
                    lengths.update(map(len, msgs))
                    crc = crc32(join(msgs), crc)
                if have:
                    fail("the stream ended inside a frame")
        secs = time.perf_counter() - t0
        sock.shutdown(socket.SHUT_WR)
        sock.close()
    finish_peer(child)
    if count != args.count:
        fail(f"received {count} messages, sent {args.count}")
    if lengths != {size}:
        fail(f"message lengths {sorted(lengths)[:5]}, expected {size}")
    if crc != want_crc:
        fail(f"CRC-32 {crc:#x}, expected {want_crc:#x}")
    return {
        "workload": "stream",
        "count": count,
        "seconds": secs,
        "msgs_per_s": count / secs,
        "mb_per_s": count * size / secs / 1e6,
        "checksum": f"crc32:{crc:#010x}",
    }


# ----- E: duplex ---------------------------------------------------------------------


def duplex(args: argparse.Namespace) -> Dict[str, Any]:
    pool = make_pool(args.size)
    want_crc = expected_crc(pool, args.count)
    total = args.count
    count = 0
    crc = 0
    lengths: Set[int] = set()
    crc32 = zlib.crc32
    go = threading.Barrier(2)
    failed: List[str] = []
    if args.impl in ("tcpchat", "tcpchat-recv"):
        tc = load_tcpchat()
        server = tc.Server("127.0.0.1", 0, framing="line", read_timeout=TIMEOUT_S)
        child = spawn_peer(args, "byteecho", server.port)
        conn = server.accept(timeout=TIMEOUT_S)

        def send_all() -> None:
            try:
                send = conn.send
                go.wait()
                for i in range(total):
                    send(pool[i % POOL])
                conn.shutdown_write()
            except Exception as e:  # reported by the receiving side
                failed.append(repr(e))

        sender = threading.Thread(target=send_all)
        sender.start()
        recv, recv_many, join = conn.recv, conn.recv_many, b"".join
        go.wait()
        t0 = time.perf_counter()
        if args.impl == "tcpchat":
            while True:
                msgs = recv_many(1024)
                if not msgs:
                    break
                count += len(msgs)
                lengths.update(map(len, msgs))
                crc = crc32(join(msgs), crc)
        else:
            while True:
                m = recv()
                if m is None:
                    break
                count += 1
                lengths.add(len(m))
                crc = crc32(m, crc)
        secs = time.perf_counter() - t0
        sender.join()
        conn.close()
        server.close()
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        child = spawn_peer(args, "byteecho", listener.getsockname()[1])
        listener.settimeout(TIMEOUT_S)
        sock, _ = listener.accept()
        sock.settimeout(None)
        listener.close()
        nodelay(sock)

        def send_all() -> None:
            try:
                sendall = sock.sendall
                go.wait()
                for i in range(total):
                    sendall(pool[i % POOL] + b"\n")
                sock.shutdown(socket.SHUT_WR)
            except Exception as e:  # reported by the receiving side
                failed.append(repr(e))

        sender = threading.Thread(target=send_all)
        sender.start()
        recv, join = sock.recv, b"".join
        pending = b""
        go.wait()
        t0 = time.perf_counter()
        while True:
            data = recv(LINE_READ)
            if not data:
                break
            if pending:
                data = pending + data
            msgs = data.split(b"\n")
            pending = msgs.pop()
            count += len(msgs)
            lengths.update(map(len, msgs))
            crc = crc32(join(msgs), crc)
        secs = time.perf_counter() - t0
        sender.join()
        if pending:
            fail("the stream ended inside a line")
        sock.close()
    finish_peer(child)
    if failed:
        fail(f"the sending thread failed: {failed[0]}")
    if count != args.count:
        fail(f"received {count} messages back, sent {args.count}")
    if lengths != {args.size}:
        fail(f"message lengths {sorted(lengths)[:5]}, expected {args.size}")
    if crc != want_crc:
        fail(f"CRC-32 {crc:#x}, expected {want_crc:#x}")
    return {
        "workload": "duplex",
        "count": count,
        "seconds": secs,
        "msgs_per_s": count / secs,
        "checksum": f"crc32:{crc:#010x}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workload", choices=["pingpong", "stream", "duplex", "_peer"])
    p.add_argument("role", nargs="?", default="", help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=["tcpchat", "tcpchat-recv", "tutorial", "plain"], default="tcpchat")
    p.add_argument("--framing", choices=["frame", "line"], default="frame")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", type=int)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.count is None:
        args.count = {"pingpong": 20000, "duplex": 200000}.get(args.workload, 1000000)
    if args.size <= 0 or args.count <= 0:
        p.error("--size and --count must be positive")
    if args.workload == "_peer":
        peer_main(args)
        return
    if args.impl == "tcpchat-recv" and args.workload != "duplex":
        p.error("--impl tcpchat-recv is for duplex only")
    runs: Dict[str, Callable[[argparse.Namespace], Dict[str, Any]]] = {
        "pingpong": pingpong,
        "stream": stream,
        "duplex": duplex,
    }
    run = runs[args.workload]
    if args.workload == "pingpong":
        args.framing = "frame"
    if args.workload == "duplex":
        args.framing = "line"
    result = run(args)
    out: Dict[str, Any] = {"lang": "python", "impl": args.impl, "framing": args.framing, "size": args.size}
    out.update(result)
    out["ok"] = True
    print("RESULT " + json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
