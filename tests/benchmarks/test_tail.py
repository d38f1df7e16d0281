"""benchmarks/tail.py: run-queue waits from /proc, and the edge's per-worker histograms per round."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.load import _run_sampling_wait
from benchmarks.tail import delta, edge_summary, largest, quantile, run_queue_wait_s, table

SPIN = "import time\nend = time.perf_counter() + {s}\nwhile time.perf_counter() < end: pass\n"


def test_more_spinners_than_cores_wait_in_the_run_queue() -> None:
    n = (os.cpu_count() or 1) + 1
    procs = [subprocess.Popen([sys.executable, "-c", SPIN.format(s=5)]) for _ in range(n)]
    try:
        pids = [p.pid for p in procs]
        before = run_queue_wait_s(pids)
        deadline = time.monotonic() + 4
        while run_queue_wait_s(pids) - before < 0.05:  # n spinners on n - 1 cores must queue
            assert time.monotonic() < deadline, "no run-queue wait seen"
            time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert run_queue_wait_s(pids) == 0  # gone: nothing to read


def test_a_waiting_client_reports_its_wait_and_output() -> None:
    n = (os.cpu_count() or 1) + 1
    others = [subprocess.Popen([sys.executable, "-c", SPIN.format(s=3)]) for _ in range(n)]
    try:
        code = SPIN.format(s=1.5) + "print('WRKJSON {}')\n"
        out, wait_ms_per_s = _run_sampling_wait([sys.executable, "-c", code], timeout_s=30)
    finally:
        for p in others:
            p.kill()
            p.wait()
    assert "WRKJSON {}" in out
    assert wait_ms_per_s > 0


def _hist(*counts: float) -> dict[float, float]:
    bounds = [0.001, 0.01, 0.1, float("inf")]
    acc, out = 0.0, {}
    for b, c in zip(bounds, counts, strict=True):
        acc += c
        out[b] = acc
    return out


def test_quantiles_and_largest_come_from_a_rounds_delta() -> None:
    before = {("edgeproxy_worker_loop_lag_seconds", "worker-0"): _hist(100, 0, 0, 0)}
    after = {("edgeproxy_worker_loop_lag_seconds", "worker-0"): _hist(198, 1, 1, 0)}
    d = delta(before, after)[("edgeproxy_worker_loop_lag_seconds", "worker-0")]
    assert d == _hist(98, 1, 1, 0)
    assert quantile(d, 0.5) == 0.001
    assert quantile(d, 0.99) == 0.01
    assert quantile(d, 1.0) == 0.1
    assert largest(d) == 0.1
    assert quantile(_hist(0, 0, 0, 0), 0.99) is None


def test_a_worker_replaced_mid_round_counts_from_zero() -> None:
    key = ("edgeproxy_worker_loop_lag_seconds", "worker-1")
    d = delta({key: _hist(500, 5, 0, 0)}, {key: _hist(7, 0, 0, 0)})
    assert d[key] == _hist(7, 0, 0, 0)


def test_the_table_has_a_row_per_target_and_round() -> None:
    d = {
        ("edgeproxy_worker_request_duration_seconds", "worker-0"): _hist(99, 1, 0, 0),
        ("edgeproxy_worker_loop_lag_seconds", "worker-0"): _hist(50, 49, 1, 0),
        ("edgeproxy_worker_gc_pause_seconds[gen1]", "worker-0"): _hist(3, 0, 0, 0),
    }
    rows = [
        {
            "target": "edgeproxy",
            "round": 1,
            "client_p99_us": 4860.0,
            "server_wait_ms_per_s": 120.0,
            "client_wait_ms_per_s": 80.0,
            "edge": edge_summary(d),
        },
        {
            "target": "nginx",
            "round": 1,
            "client_p99_us": 4600.0,
            "server_wait_ms_per_s": 90.0,
            "client_wait_ms_per_s": 70.0,
            "edge": None,
        },
    ]
    text = table(rows)
    assert "| edgeproxy | 1 | 4.86 | 120 | 80 | 1 | 1 / 10 | 0/3/0 | 1 |" in text
    assert "| nginx | 1 | 4.60 | 90 | 70 | – | – | – | – |" in text
