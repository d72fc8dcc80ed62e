#!/usr/bin/env python3
"""Turn the measurements of one `benches/run.sh` run into the markdown table.

    python3 benches/report.py RESULTS.jsonl [--quick] [--compare]

RESULTS.jsonl has one line per measurement, written by run.sh:
``{"id": ..., "rep": N, "pinned": true|false, "result": {...} | null,
"log": PATH}``; the room benchmark's lines carry ``"room": PATH`` (its
printed table) instead of a result. Each row of the table is one workload
and implementation: the median over the repetitions, the min–max, and the
ratio to the raw baseline measured in the same run. Exits 1 when a
measurement failed or a count is not what was asked for.

With ``--compare`` (the results of ``run.sh --compare REV``) the ids end in
``@new`` or ``@old``, one of each per repetition ("pair"), and the table
puts the two builds side by side: each one's median, and the median over the
pairs of the ratio new / old of the two measured one right after the other.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from typing import Any, Dict, List, Optional, Tuple

Rows = Dict[str, List[Dict[str, Any]]]

IMPL_NAMES = {
    "rust/raw": "Rust raw `std::net` (BufReader/BufWriter)",
    "rust/tcpchat": "Rust tcpchat API (`send` + `recv_into`)",
    "rust/tcpchat-batch": "Rust tcpchat API (`send_many` + `recv_batch`)",
    "rust/tcpchat-into": "Rust tcpchat API (`send_many` + `recv_into` per message)",
    "c/raw": "C raw POSIX sockets (buffered writer + reader)",
    "c/tcpchat": "C tcpchat API (`tcpchat_conn_send` + `_recv`)",
    "c/raw-poll1": "C raw, with `poll()` of the socket before each `read()`",
    "c/raw-poll3": "C raw, with `poll()` of the socket + 2 eventfds before each `read()`",
    "c/tcpchat-many": "C tcpchat API (`_send_many` + `_recv_many`)",
    "c/tcpchat-recv": "C tcpchat API (`_send_many` + `_recv` per message)",
    "py/tutorial": "Python `socket`, tutorial style (one call per message)",
    "py/plain": "Python `socket`, best plain (batched `sendall`, parse many per `recv`)",
    "py/tcpchat": "Python tcpchat binding",
}

DUPLEX_NAMES = {
    "rust/raw": "Rust raw `std::net` (the stream and its `try_clone`; `write_all` per line, `BufReader`)",
    "rust/tcpchat": "Rust tcpchat API (`Conn::split`: `send` per line / `recv_into` per line)",
    "c/raw": "C raw POSIX sockets (one descriptor; `send()` per line, the buffered line reader)",
    "c/tcpchat": "C tcpchat API (ONE handle: `tcpchat_conn_send` / `tcpchat_conn_recv` per line)",
    "py/plain": "Python `socket` (one socket; `sendall(line + b\"\\n\")` per line / `recv(65536)` + `split`)",
    "py/tcpchat": "Python tcpchat binding (ONE `Connection`: `send` per line / `recv_many(1024)`)",
    "py/tcpchat-recv": "Python tcpchat binding (ONE `Connection`: `send` per line / `recv` per line)",
}


def load(path: str) -> Tuple[Rows, List[str], Dict[str, Any]]:
    rows: Rows = {}
    failures: List[str] = []
    meta: Dict[str, Any] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if rec.get("meta"):
                meta.update(rec["meta"])
                continue
            rid = rec["id"]
            if "room" in rec:
                room = parse_room(rec["room"], rec.get("text")) if rec.get("ok") else None
                if room is None:
                    failures.append(f"{rid} (rep {rec['rep']}): see {rec.get('log', rec['room'])}")
                    continue
                rows.setdefault(rid, []).append(room)
                continue
            res = rec.get("result")
            if not res or not res.get("ok"):
                failures.append(f"{rid} (rep {rec['rep']}): see {rec.get('log')}")
                continue
            want = rec.get("count")
            if want is not None and res.get("count") != want:
                failures.append(f"{rid} (rep {rec['rep']}): {res.get('count')} of {want} messages")
                continue
            res["pinned"] = rec.get("pinned", False)
            res["rep"] = rec.get("rep")
            rows.setdefault(rid, []).append(res)
    return rows, failures, meta


def parse_room(path: str, text: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The figures of room_bench's printed table (given, or read from `path`)."""
    if not text:
        try:
            text = open(path).read()
        except OSError:
            return None
    out: Dict[str, Any] = {}
    m = re.search(r"\| idle clients held by the room \| (\d+) \|", text)
    if m:
        out["clients"] = int(m.group(1))
    m = re.search(r"\| resident memory per idle client \| (\d+) bytes \|", text)
    if m:
        out["bytes_per_client"] = float(m.group(1))
    # "fan-out latency, 1 sender to N receivers[ (arrival in their sockets)], p50 / p99 / max | a / b / c ms |"
    m = re.search(r"fan-out latency, 1 sender to (\d+) receivers[^|]*\| ([\d.]+) / ([\d.]+) / ([\d.]+) ms", text)
    if m:
        out["receivers"] = int(m.group(1))
        out["p50_ms"], out["p99_ms"], out["max_ms"] = (float(m.group(i)) for i in (2, 3, 4))
    # Newer room_bench: the same latency as seen by the one process reading every receiver.
    m = re.search(r"\| the same, as seen by [^|]*\| ([\d.]+) / ([\d.]+) / ([\d.]+) ms", text)
    if m:
        out["seen_p50_ms"], out["seen_p99_ms"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"lines delivered per second, (\d+) clients each sending (\d+) at once \| (\d+) \((\d+) lines", text)
    if m:
        out["talkers"] = int(m.group(1))
        out["lines_per_s"] = float(m.group(3))
        out["lines"] = int(m.group(4))
    need = ("bytes_per_client", "p50_ms", "p99_ms", "lines_per_s")
    return out if all(k in out for k in need) else None


def med(vals: List[float]) -> float:
    return statistics.median(vals)


def fmt_num(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def stat(rows: Rows, rid: str, key: str) -> Optional[Tuple[float, float, float]]:
    vals = [r[key] for r in rows.get(rid, []) if key in r]
    if not vals:
        return None
    return med(vals), min(vals), max(vals)


def pratio(rows: Rows, rid: str, base_rid: str, key: str) -> Optional[float]:
    """The ratio of `rid` to `base_rid`: the median over the repetitions of
    the ratio of the two measured in the same repetition (seconds apart, so
    under the same load), or the ratio of the medians when they share no
    repetition."""
    base = {r.get("rep"): r[key] for r in rows.get(base_rid, []) if key in r}
    pairs = [r[key] / base[r.get("rep")] for r in rows.get(rid, []) if key in r and base.get(r.get("rep"))]
    if pairs:
        return med(pairs)
    a, b = stat(rows, rid, key), stat(rows, base_rid, key)
    return a[0] / b[0] if a and b else None


def verdict(ok: bool, quick: bool) -> str:
    if quick:
        return "(not judged in quick mode)"
    return "**met**" if ok else "**missed**"


COMPARE_ROWS = [
    ("A-pinned/rust/raw", "A ping-pong, 64 B frames, pinned (`taskset -c`)", "Rust raw `std::net` (control: no library code)"),
    ("A-pinned/rust/tcpchat", "A ping-pong, 64 B frames, pinned (`taskset -c`)", IMPL_NAMES["rust/tcpchat"]),
    ("A-pinned/c/tcpchat", "A ping-pong, 64 B frames, pinned (`taskset -c`)", IMPL_NAMES["c/tcpchat"]),
    ("A-pinned/py/tcpchat", "A ping-pong, 64 B frames, pinned (`taskset -c`)", IMPL_NAMES["py/tcpchat"]),
] + [
    (f"B/{fr}/{sz}/{impl}", f"B streaming, {sz} B, {fr}", name)
    for fr in ("frame", "line")
    for sz in (64, 4096)
    for impl, name in (
        ("c/raw", "C raw POSIX sockets (control: no library code)"),
        ("rust/tcpchat-batch", IMPL_NAMES["rust/tcpchat-batch"]),
        ("rust/tcpchat-into", IMPL_NAMES["rust/tcpchat-into"]),
        ("c/tcpchat-many", IMPL_NAMES["c/tcpchat-many"]),
        ("c/tcpchat-recv", IMPL_NAMES["c/tcpchat-recv"]),
        ("py/tcpchat", IMPL_NAMES["py/tcpchat"]),
    )
]


def compare_table(rows: Rows, meta: Dict[str, Any], quick: bool) -> List[str]:
    """The two builds side by side (results of `run.sh --compare`)."""
    out: List[str] = []
    w = out.append
    w(f"new: {meta.get('new', '?')}  ")
    w(f"old: {meta.get('old', '?')}")
    w("")
    w(
        "| workload | implementation | new (median) | old (median) | new / old (median of per-pair ratios) "
        "| min–max of the per-pair ratios | pairs | within 3% |"
    )
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rid, workload, name in COMPARE_ROWS:
        new, old = rows.get(rid + "@new", []), rows.get(rid + "@old", [])
        if not new or not old:
            continue
        key, unit, lower_better = (
            ("rtt_median_us", "µs RTT", True) if rid.startswith("A") else ("msgs_per_s", "msg/s", False)
        )
        old_by_rep = {r.get("rep"): r[key] for r in old if key in r}
        ratios = [r[key] / old_by_rep[r.get("rep")] for r in new if key in r and old_by_rep.get(r.get("rep"))]
        if not ratios:
            continue
        rm = med(ratios)
        nm, om = med([r[key] for r in new]), med([r[key] for r in old])
        fmt = (lambda x: f"{x:.2f} {unit}") if lower_better else (lambda x: f"{fmt_num(x)} {unit}")
        slower = rm - 1 if lower_better else 1 - rm
        if quick:
            verdict_txt = "(not judged in quick mode)"
        elif "control" in name:
            verdict_txt = "(control: the noise)"
        else:
            verdict_txt = ("**yes**" if slower <= 0.03 else "**no**") + (
                f" ({slower * 100:+.1f}% slower)" if slower > 0 else f" ({-slower * 100:.1f}% faster)"
            )
        w(
            f"| {workload} | {name} | {fmt(nm)} | {fmt(om)} | {rm:.3f} | {min(ratios):.3f}–{max(ratios):.3f} "
            f"| {len(ratios)} | {verdict_txt} |"
        )
    w("")
    w("RTT: a ratio above 1 is slower; messages per second: a ratio below 1 is slower.")
    return out


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    quick = "--quick" in sys.argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    rows, failures, meta = load(args[0])
    if "--compare" in sys.argv:
        print("\n".join(compare_table(rows, meta, quick)))
        print()
        if meta.get("load_before") or meta.get("load_after"):
            print(
                f"Load average (1, 5, 15 min) before the run: {meta.get('load_before', '?')}; "
                f"after: {meta.get('load_after', '?')}."
            )
        if failures:
            print()
            print("FAILED measurements:")
            for f in failures:
                print(f"- {f}")
            return 1
        return 0
    reps = meta.get("reps", "?")
    out: List[str] = []
    w = out.append
    w(
        "| workload | implementation | pinned | median | min–max | also (median) "
        "| ratio to the baseline (median of per-repetition ratios) | target |"
    )
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")

    # ----- A -----
    a_count = meta.get("a_count", 20000)
    for pin in ("pinned", "unpinned"):
        pfx = f"A-{pin}/"
        if not any(k.startswith(pfx) for k in rows):
            continue
        pin_txt = f"yes (`taskset -c {meta.get('pin_cpu', 0)}`, both ends)" if pin == "pinned" else "no"
        base_rid = {"rust": pfx + "rust/raw", "c": pfx + "c/raw", "py": pfx + "py/plain"}
        base_name = {"rust": "raw std::net", "c": "raw C", "py": "best plain Python"}
        key = "rtt_median_us"
        for impl in (
            "rust/raw", "rust/tcpchat", "c/raw", "c/tcpchat", "c/raw-poll1", "c/raw-poll3",
            "py/tutorial", "py/plain", "py/tcpchat",
        ):
            rid = pfx + impl
            s = stat(rows, rid, "rtt_median_us")
            if s is None:
                continue
            rt = stat(rows, rid, "round_trips_per_s")
            lang = impl.split("/")[0]
            rb = pratio(rows, rid, base_rid[lang], key)
            ratio = f"{rb:.2f}× {base_name[lang]}" if rb else "—"
            if impl.endswith("/raw") or impl == "py/plain":
                ratio = "1.00 (baseline)"
            target = "(judged on the pinned rows)" if pin != "pinned" and "tcpchat" in impl else ""
            if pin == "pinned":
                if impl == "rust/tcpchat" and rb:
                    target = f"≤ 1.10× raw std::net: {rb:.2f} {verdict(rb <= 1.10, quick)}"
                elif impl == "c/tcpchat":
                    r = pratio(rows, rid, pfx + "rust/tcpchat", key)
                    if r:
                        target = f"≤ 1.05× Rust API: {r:.2f} {verdict(r <= 1.05, quick)}"
                elif impl == "py/tcpchat" and rb:
                    target = f"≤ 1.05× plain Python: {rb:.2f} {verdict(rb <= 1.05, quick)}"
            allocs = ""
            rr = rows[rid][0]
            if "allocs_per_msg_client" in rr and "tcpchat" in impl:
                ac = max(x.get("allocs_per_msg_client", 0) for x in rows[rid])
                aserv = max(x.get("allocs_per_msg_server", 0) for x in rows[rid])
                allocs = f"; heap allocs per round trip: client {ac:g}, server {aserv:g}"
            w(
                f"| A ping-pong, 64 B frames, {a_count:,} round trips | {IMPL_NAMES.get(impl, impl)} | {pin_txt} "
                f"| {s[0]:.2f} µs RTT | {s[1]:.2f}–{s[2]:.2f} µs | {fmt_num(rt[0]) if rt else '?'} round trips/s{allocs} "
                f"| {ratio} | {target} |"
            )

    # ----- B -----
    for framing in ("frame", "line"):
        for size in (64, 4096):
            pfx = f"B/{framing}/{size}/"
            if not any(k.startswith(pfx) for k in rows):
                continue
            key = "msgs_per_s"
            raw_c, py_plain, py_tut = pfx + "c/raw", pfx + "py/plain", pfx + "py/tutorial"
            count = rows[next(k for k in rows if k.startswith(pfx))][0]["count"]
            for impl in (
                "c/raw", "rust/raw", "rust/tcpchat-batch", "rust/tcpchat-into",
                "c/tcpchat-many", "c/tcpchat-recv", "py/tutorial", "py/plain", "py/tcpchat",
            ):
                rid = pfx + impl
                s = stat(rows, rid, "msgs_per_s")
                if s is None:
                    continue
                mb = stat(rows, rid, "mb_per_s") or (0.0, 0.0, 0.0)
                lang = impl.split("/")[0]
                target = ""
                if lang == "py":
                    if impl == "py/plain":
                        ratio = "1.00 (baseline)"
                    else:
                        parts = []
                        r2 = pratio(rows, rid, py_plain, key)
                        r1 = pratio(rows, rid, py_tut, key)
                        if r2:
                            parts.append(f"{r2:.2f}× best plain")
                        if r1 and impl != "py/tutorial":
                            parts.append(f"{r1:.1f}× tutorial")
                        ratio = ", ".join(parts) or "—"
                    if impl == "py/tcpchat" and size == 64 and r1 and r2:
                        target = (
                            f"≥ 10× tutorial: {r1:.1f} {verdict(r1 >= 10, quick)}; "
                            f"≥ 2× best plain: {r2:.2f} {verdict(r2 >= 2, quick)}"
                        )
                else:
                    r = pratio(rows, rid, raw_c, key)
                    ratio = "1.00 (baseline)" if impl == "c/raw" else (f"{r:.2f}× raw C" if r else "—")
                    if framing == "frame" and size == 64 and impl in ("rust/tcpchat-batch", "c/tcpchat-many") and r:
                        target = f"≥ 0.9× raw buffered C: {r:.2f} {verdict(r >= 0.9, quick)}"
                allocs = ""
                if "tcpchat" in impl and "allocs_per_msg_recv" in rows[rid][0]:
                    ar = max(x["allocs_per_msg_recv"] for x in rows[rid])
                    asend = max(x["allocs_per_msg_send"] for x in rows[rid])
                    allocs = f"; heap allocs per message: recv {ar:.3g}, send {asend:.3g}"
                w(
                    f"| B streaming, {count:,} × {size} B, {framing} | {IMPL_NAMES.get(impl, impl)} | no "
                    f"| {fmt_num(s[0])} msg/s | {fmt_num(s[1])}–{fmt_num(s[2])} | {mb[0]:.0f} MB/s{allocs} "
                    f"| {ratio} | {target} |"
                )

    # ----- E: duplex -----
    if any(k.startswith("E/") for k in rows):
        count = rows[next(k for k in rows if k.startswith("E/"))][0]["count"]
        py_sock = "E/py/plain"
        for impl in ("rust/raw", "rust/tcpchat", "c/raw", "c/tcpchat", "py/plain", "py/tcpchat", "py/tcpchat-recv"):
            rid = "E/" + impl
            s = stat(rows, rid, "msgs_per_s")
            if s is None:
                continue
            lang = impl.split("/")[0]
            parts = []
            if impl == "py/plain":
                parts.append("1.00 (baseline)")
            else:
                if impl in ("rust/tcpchat", "c/tcpchat"):
                    r = pratio(rows, rid, f"E/{lang}/raw", "msgs_per_s")
                    if r:
                        parts.append(f"{r:.2f}× raw {'std::net' if lang == 'rust' else 'C'}")
                r = pratio(rows, rid, py_sock, "msgs_per_s")
                if r:
                    parts.append(f"{r:.2f}× Python socket")
            allocs = ""
            if "tcpchat" in impl and "allocs_per_msg_recv" in rows[rid][0]:
                ar = max(x["allocs_per_msg_recv"] for x in rows[rid])
                asend = max(x["allocs_per_msg_send"] for x in rows[rid])
                allocs = f"heap allocs per message: recv {ar:.3g}, send {asend:.3g}"
            w(
                f"| E duplex, {count:,} × 64 B lines, one thread sending, one receiving, through an echo "
                f"| {DUPLEX_NAMES.get(impl, impl)} | no | {fmt_num(s[0])} msg/s | {fmt_num(s[1])}–{fmt_num(s[2])} "
                f"| {allocs} | {'; '.join(parts) or '—'} | (no target) |"
            )

    # ----- C and D: the room -----
    room = rows.get("room", [])
    if room:
        r0 = room[0]
        p50 = stat(rows, "room", "p50_ms")
        p99 = stat(rows, "room", "p99_ms")
        lps = stat(rows, "room", "lines_per_s")
        bpc = stat(rows, "room", "bytes_per_client")
        assert p50 and p99 and lps and bpc
        w(
            f"| C room fan-out, {r0.get('talkers', '?'):,} clients, 1 sender → {r0.get('receivers', '?'):,}"
            f"{' (arrival in the receivers sockets: kernel receive timestamp)' if 'seen_p99_ms' in r0 else ''} "
            f"| tcpchat `Room` (examples/chat_room, measured by examples/room_bench) | no "
            f"| p50 {p50[0]:.2f} ms, p99 {p99[0]:.2f} ms | p99 {p99[1]:.2f}–{p99[2]:.2f} ms "
            f"| p50 {p50[1]:.2f}–{p50[2]:.2f} ms | no raw baseline | "
            f"p99 ≤ 5 ms: {p99[0]:.2f} {verdict(p99[0] <= 5.0, quick)} |"
        )
        seen = stat(rows, "room", "seen_p99_ms")
        seen50 = stat(rows, "room", "seen_p50_ms")
        if seen and seen50:
            w(
                f"| C room fan-out, the same lines as seen by room_bench's one reading process "
                f"| tcpchat `Room` | no | p50 {seen50[0]:.2f} ms, p99 {seen[0]:.2f} ms "
                f"| p99 {seen[1]:.2f}–{seen[2]:.2f} ms | | no raw baseline | (the target is judged on arrival, above) |"
            )
        w(
            f"| C room, all {r0.get('talkers', '?'):,} clients talking at once | tcpchat `Room` | no "
            f"| {fmt_num(lps[0])} lines delivered/s | {fmt_num(lps[1])}–{fmt_num(lps[2])} "
            f"| {r0.get('lines', 0):,} lines per run | no raw baseline | (no target) |"
        )
        w(
            f"| D idle connections, {r0.get('clients', '?'):,} clients | tcpchat `Room` | no "
            f"| {bpc[0]:.0f} B resident per client | {bpc[1]:.0f}–{bpc[2]:.0f} B | | no raw baseline "
            f"| ≤ 4 KiB: {verdict(bpc[0] <= 4096, quick)} |"
        )

    print("\n".join(out))
    print()
    n = {k: len(v) for k, v in rows.items()}
    print(f"Repetitions per row: {min(n.values()) if n else 0}–{max(n.values()) if n else 0} (asked: {reps}).")
    if meta.get("load_before") or meta.get("load_after"):
        print(
            f"Load average (1, 5, 15 min) before the run: {meta.get('load_before', '?')}; "
            f"after: {meta.get('load_after', '?')}."
        )
    if failures:
        print()
        print("FAILED measurements:")
        for f in failures:
            print(f"- {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
