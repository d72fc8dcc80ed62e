#!/usr/bin/env python3
"""Where the Python binding's time goes: the cost of one call, measured.

    python3 benches/py_calls.py            # (taskset -c 0 for steadier figures)

Prints, in microseconds per call (median of 7 rounds of 5,000 calls):

* ``Connection.recv()`` of a message already received (no system call), the
  bare ctypes call underneath it (``tcpchat_conn_recv`` + ``string_at``), and
  ``socket.recv_into`` of 68 bytes already received (one system call);
* ``Connection.send()`` of 64 bytes, the bare ctypes ``tcpchat_conn_send``
  (one system call each), and ``socket.sendall``;

and, in nanoseconds per message for a batch of 1,024 messages of 64 bytes,
the Python-side work of ``Connection.send_many`` (the list of parts, the
join, the ctypes array of lengths) next to the same batch with the lengths
in an ``array.array`` handed over with ``from_buffer``, and the work after
``tcpchat_conn_recv_many`` returns (slicing the block into ``bytes``).
This is the profile behind the A and B Python rows of BENCHMARKS.md.
With ``TCPCHAT_BINDING=DIR TCPCHAT_LIB=SO`` it measures another build's
binding and library (BENCHMARKS.md, the full-duplex change).
"""

from __future__ import annotations

import array
import ctypes
import os
import socket
import statistics
import sys
import time
import timeit
from typing import Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "target", "release", "libtcpchat.so")
if "TCPCHAT_LIB" not in os.environ and os.path.exists(LIB):
    os.environ["TCPCHAT_LIB"] = LIB
# TCPCHAT_BINDING: another binding directory (another revision's, with its
# library in TCPCHAT_LIB), to compare the per-call costs of two builds.
sys.path.insert(0, os.environ.get("TCPCHAT_BINDING") or os.path.join(ROOT, "bindings", "python"))
import tcpchat  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
from tcpchat import _ffi  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

P = 5000
ROUNDS = 7
MSG = b"x" * 64


def per_call(res: Dict[str, List[float]], name: str, fn: Callable[[], object]) -> None:
    t = time.perf_counter()
    for _ in range(P):
        fn()
    res.setdefault(name, []).append((time.perf_counter() - t) / P)


def main() -> None:
    res: Dict[str, List[float]] = {}
    with tcpchat.Server(port=0, framing="frame") as srv:
        a = tcpchat.connect("127.0.0.1", srv.port, framing="frame")
        b = srv.accept()
        ap, bp = a._handle._ptr, b._handle._ptr
        buf = (ctypes.c_uint8 * 65536)()
        n = ctypes.c_size_t(0)
        nref = ctypes.byref(n)
        frecv, fsend = _ffi.tcpchat_conn_recv, _ffi.tcpchat_conn_send

        def bare_recv() -> None:
            frecv(bp, buf, 65536, nref)
            ctypes.string_at(buf, n.value)

        for _ in range(ROUNDS):
            # P messages fit in the socket buffers: no call ever waits.
            per_call(res, "Connection.send(64 B)", lambda: a.send(MSG))
            time.sleep(0.02)
            per_call(res, "Connection.recv(), message already here", lambda: b.recv())
            per_call(res, "bare ctypes tcpchat_conn_send(64 B)", lambda: fsend(ap, MSG, 64))
            time.sleep(0.02)
            per_call(res, "bare ctypes tcpchat_conn_recv + string_at", bare_recv)
        a.close()
        b.close()
    listener = socket.create_server(("127.0.0.1", 0))
    s1 = socket.create_connection(listener.getsockname())
    s2, _ = listener.accept()
    for s in (s1, s2):  # as tcpchat does (without it, Nagle batches the small sends)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = b"\0\0\0\x40" + MSG
    view = memoryview(bytearray(1 << 18))
    for _ in range(ROUNDS):
        per_call(res, "socket.sendall(68 B)", lambda: s1.sendall(frame))
        time.sleep(0.02)
        per_call(res, "socket.recv_into(68 B already here)", lambda: s2.recv_into(view, 68))
    s1.close()
    s2.close()
    listener.close()
    print("| call | µs per call (median of 7 × 5,000) |")
    print("| --- | --- |")
    for k, v in res.items():
        print(f"| {k} | {statistics.median(v) * 1e6:.2f} |")

    # Batches: the Python-side work per message, without any system call.
    batch = [bytes(32 + (k * 31 + j * 7) % 95 for j in range(64)) for k in range(1024)]
    as_bytes = tcpchat._callbacks.as_bytes

    def send_many_prep() -> None:  # what Connection.send_many does before the call
        parts = [as_bytes(m) for m in batch]
        b"".join(parts)
        (ctypes.c_size_t * len(parts))(*map(len, parts))

    def send_many_array() -> None:  # the same arguments, lengths through array.array
        b"".join(batch)
        lens = array.array("L", map(len, batch))
        (ctypes.c_size_t * len(lens)).from_buffer(lens)

    rbuf = (ctypes.c_uint8 * 65536)()
    rlens = (ctypes.c_size_t * 1024)(*([64] * 1024))

    def recv_many_post() -> None:  # what Connection.recv_many does after the call
        sizes = rlens[:1000]
        blob = ctypes.string_at(rbuf, sum(sizes))
        out = []
        at = 0
        for size in sizes:
            out.append(blob[at : at + size])
            at += size

    print()
    print("| Python-side work per message, batch of 1,024 × 64 B | ns per message |")
    print("| --- | --- |")
    for name, fn, per in (
        ("Connection.send_many: parts list, join, ctypes array of lengths", send_many_prep, 1024),
        ("the same arguments with array.array + from_buffer for the lengths", send_many_array, 1024),
        ("Connection.recv_many: slicing the received block into bytes", recv_many_post, 1000),
    ):
        runs = timeit.repeat(fn, number=200, repeat=5)
        print(f"| {name} | {min(runs) / 200 / per * 1e9:.0f} |")


if __name__ == "__main__":
    main()
