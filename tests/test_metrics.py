"""proxy/metrics.py rendering (issue 17): latency buckets that resolve a hit, and no all-zero
requests_total series for method × result combinations never seen."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import LATENCY_BUCKETS_S, M_INDEX, R_INDEX, MethodClass, Result, WorkerStats
from proxy.metrics import families as render


def requests_series(ws: WorkerStats) -> dict[tuple[str, str, str], float]:
    class C:
        def collect(self):
            return render(ws.sites, ws.snapshot())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(C())  # type: ignore[arg-type]
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if s.name == "edgeproxy_requests_total":
                out[(s.labels["site"], s.labels["method"], s.labels["result"])] = s.value
    return out


def test_lowest_latency_bucket_is_below_a_hit() -> None:
    assert LATENCY_BUCKETS_S[0] == 0.00005
    assert LATENCY_BUCKETS_S == sorted(LATENCY_BUCKETS_S) and LATENCY_BUCKETS_S[-1] == 5
    assert len(LATENCY_BUCKETS_S) <= 16
    ws = WorkerStats(["a"])
    ws.observe(0, M_INDEX[MethodClass.READ], R_INDEX[Result.HIT], 10, 0.00007)  # a 70 µs hit
    assert ws.latency[0][R_INDEX[Result.HIT]][:3] == [0, 1, 0]  # in (50 µs, 100 µs]


def test_requests_total_reads_always_other_methods_once_seen() -> None:
    ws = WorkerStats(["a", "b"])
    series = requests_series(ws)
    reads = {(site, "read", r.value) for site in ("a", "b", "-") for r in Result}
    assert set(series) == reads  # 21 series for two sites, not 63
    assert not any(series.values())
    ws.observe(1, M_INDEX[MethodClass.WRITE], R_INDEX[Result.PASS], 0, 0.01)
    series = requests_series(ws)
    assert set(series) == reads | {("b", "write", "pass")}
    assert series[("b", "write", "pass")] == 1
