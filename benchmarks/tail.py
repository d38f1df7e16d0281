"""Where the hit tail comes from (issue 18): per round, who waited for a core, and inside the
edge, how long each worker's loop kept a request waiting and how long it collected garbage.

wrk's p99 is the whole round trip: the server's work, the server's waits (its loop busy with
other connections, a GC pause, the kernel running another process on its core) and wrk's own
waits (wrk shares the 2 cores with the server's workers: when wrk is off-core, the answers it
has not read yet age). Three sources say which:

- `/proc/PID/task/*/schedstat` (the kernel's run-queue wait: time runnable but not running),
  for the server's processes and for wrk, per second of the round;
- the edge's per-worker histograms (proxy/node/tail.py): request duration from head parsed to
  answer written, loop lag sampled at random moments, GC pauses;
- wrk's p99 itself.

Their numbers over a round sit side by side in the results ("tail" tables).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.cpu import tree


def run_queue_wait_s(root_pids: list[int]) -> float:
    """Seconds the tree's threads have spent runnable but waiting for a CPU, so far."""
    total_ns = 0
    for stat in tree(root_pids):
        total_ns += _tasks_wait_ns(stat.pid)
    return total_ns / 1e9


def _tasks_wait_ns(pid: int) -> int:
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue  # the thread ended
        total += int(fields[1])
    return total


def process_wait_s(pid: int) -> float:
    """One process's run-queue wait so far (all its threads), 0 once it is gone."""
    return _tasks_wait_ns(pid) / 1e9


# -- the edge's per-worker histograms ---------------------------------------------------------

Histograms = dict[tuple[str, str], dict[float, float]]  # (family, worker) -> {le: cumulative}


def histograms(text: str) -> Histograms:
    """The per-worker histograms of an edge's /metrics text (`edge_ops.metrics_text`)."""
    out: Histograms = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("edgeproxy_worker_") or fam.type != "histogram":
            continue
        for s in fam.samples:
            if not s.name.endswith("_bucket"):
                continue
            key = (fam.name + _generation(s.labels), s.labels["worker"])
            out.setdefault(key, {})[float(s.labels["le"])] = s.value
    return out


def _generation(labels: dict[str, str]) -> str:
    return f"[gen{labels['generation']}]" if "generation" in labels else ""


def delta(before: Histograms, after: Histograms) -> Histograms:
    """What a round added (a worker replaced mid-round: its new counts alone)."""
    out: Histograms = {}
    for key, buckets in after.items():
        old = before.get(key, {})
        if any(buckets.get(le, 0) < n for le, n in old.items()):
            old = {}
        out[key] = {le: n - old.get(le, 0) for le, n in buckets.items()}
    return out


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` (None when the round saw nothing)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    for le in bounds:
        if buckets[le] >= q * total:
            return le
    return bounds[-1]


def largest(buckets: dict[float, float]) -> float | None:
    """The upper bound of the highest bucket that gained anything."""
    bounds = sorted(buckets)
    prev = 0.0
    top = None
    for le in bounds:
        if buckets[le] > prev:
            top = le
        prev = buckets[le]
    return top


def edge_summary(d: Histograms) -> dict[str, Any]:
    """Per worker: request p99, loop-lag p50/p99, GC collections and the largest pause."""
    workers = sorted({w for _, w in d})
    out: dict[str, Any] = {}
    for w in workers:
        req = d.get(("edgeproxy_worker_request_duration_seconds", w), {})
        lag = d.get(("edgeproxy_worker_loop_lag_seconds", w), {})
        gcs = [d.get((f"edgeproxy_worker_gc_pause_seconds[gen{g}]", w), {}) for g in range(3)]
        out[w] = {
            "request_p99_s": quantile(req, 0.99),
            "lag_p50_s": quantile(lag, 0.50),
            "lag_p99_s": quantile(lag, 0.99),
            "lag_samples": max(lag.values(), default=0),
            "gc_collections": [max(g.values(), default=0) for g in gcs],
            "gc_largest_s": max((x for g in gcs if (x := largest(g)) is not None), default=None),
        }
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per target and round."""
    lines = [
        "| target | round | wrk p99 ms | server run-queue wait ms/s | wrk run-queue wait ms/s "
        "| edge workers: request p99 ms | loop lag p50 / p99 ms | GC gen0/1/2 | largest GC ms |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        workers = r.get("edge") or {}
        cells = [
            " / ".join(_ms(w["request_p99_s"]) for w in workers.values()),
            " · ".join(f"{_ms(w['lag_p50_s'])} / {_ms(w['lag_p99_s'])}" for w in workers.values()),
            " · ".join("/".join(f"{n:.0f}" for n in w["gc_collections"]) for w in workers.values()),
            " / ".join(_ms(w["gc_largest_s"]) for w in workers.values()),
        ]
        lines.append(
            f"| {r['target']} | {r['round']} | {r['client_p99_us'] / 1000:.2f} "
            f"| {r['server_wait_ms_per_s']:.0f} | {r['client_wait_ms_per_s']:.0f} | "
            + " | ".join(c or "–" for c in cells)
            + " |"
        )
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:g}"
