"""Where the time goes in one `profile=true` trace (the perfetto JSON jax.profiler writes).

Usage: python tools/trace_summary.py <job>/profile/plugins/profile/<run>/perfetto_trace.json.gz

Prints markdown: per device stream (GPU/TPU; the XLA CPU threads on a CPU) the busy time, the
span from its first to its last op and the gaps (span - busy: launch and host waits), then the
ops taking the most time, grouped by name, with counts and the XLA module they belong to.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path


def _load(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def _busy(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (nested/overlapping ops count once)."""
    total, end_so_far = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= end_so_far:
            continue
        total += end - max(start, end_so_far)
        end_so_far = end
    return total


def summarize(path: Path, top: int = 20) -> str:
    events = _load(path)
    procs = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"
    }
    ops = [e for e in events if e.get("ph") == "X" and "dur" in e]
    device_pids = {p for p, n in procs.items() if "device:" in n or "TPU" in n or "GPU" in n}
    if device_pids:
        chosen = [e for e in ops if e["pid"] in device_pids]
        where = "device"
    else:  # a CPU run: XLA's own worker threads, not Python
        chosen = [e for e in ops if "XLA" in threads.get((e["pid"], e["tid"]), "")]
        where = "XLA CPU threads"
    lines = [f"# Trace summary: {path.parent.name}", "", f"Ops on the {where}.", ""]
    lines += ["| Stream | Ops | Busy ms | Span ms | Gaps ms |", "| --- | --- | --- | --- | --- |"]
    by_stream = collections.defaultdict(list)
    for e in chosen:
        by_stream[(e["pid"], e["tid"])].append(e)
    for key, evs in sorted(by_stream.items(), key=lambda kv: -len(kv[1])):
        spans = [(e["ts"], e["ts"] + e["dur"]) for e in evs]
        busy = _busy(spans)
        span = max(b for _, b in spans) - min(a for a, _ in spans)
        name = f"{procs.get(key[0], key[0])} / {threads.get(key, key[1])}"
        lines.append(
            f"| {name} | {len(evs)} | {busy / 1e3:.2f} | {span / 1e3:.2f} | "
            f"{(span - busy) / 1e3:.2f} |"
        )
    totals: dict[str, list] = collections.defaultdict(lambda: [0.0, 0, ""])
    for e in chosen:
        entry = totals[e["name"]]
        entry[0] += e["dur"]
        entry[1] += 1
        args = e.get("args") or {}
        entry[2] = entry[2] or str(args.get("hlo_module") or args.get("long_name", ""))[:60]
    grand = sum(t for t, _, _ in totals.values()) or 1.0
    lines += ["", "| Op | Count | Total ms | Share | Mean us | Module |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for name, (total, count, module) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(
            f"| {name[:70]} | {count} | {total / 1e3:.2f} | {100 * total / grand:.1f}% | "
            f"{total / count:.1f} | {module} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(summarize(args.trace, args.top), end="")
