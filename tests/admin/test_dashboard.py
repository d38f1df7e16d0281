"""Issue 4: config/grafana-dashboard.json is a Grafana dashboard that imports cleanly, and every
query in it names a metric (and labels) that a node's /metrics exposes. The exposition is rendered
by the admin listener's own collector over real worker stats, without starting a node."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.admin.app import _Collector
from proxy.admin.view import NodeHealth
from proxy.metrics import WorkerStats
from proxy.node.control import BlocklistReport, CacheReport, StatsReply
from proxy.takedown.metrics import ServiceMetrics

CONFIG = Path(__file__).resolve().parents[2] / "config"
DASHBOARD = CONFIG / "grafana-dashboard.json"
ADDED_BY_PROMETHEUS = {"instance", "job", "le", "__name__"}
PROMQL_WORDS = set(
    "sum max min avg count rate increase irate by without time histogram_quantile label_values"
    " on ignoring group_left group_right and or unless bool topk bottomk abs clamp_min clamp_max"
    " offset".split()
)


def exposed() -> dict[str, set[str]]:
    """Sample name → label names, as the admin listener renders them for a 2-worker node."""
    stats = []
    for w in range(2):
        ws = WorkerStats(["a", "b"])
        ws.observe(0, 0, 0, 100, 0.002)  # histograms show a child once observed
        ws.observe_origin(0, 0.001)
        stats.append(
            StatsReply(
                worker=w,
                pid=100 + w,
                stats=ws.snapshot(),
                connections=1,
                coalescing_waiters=0,
                cache=CacheReport(objects=1, bytes=10, max_bytes=100, evictions=0, purged=0),
                blocklist=BlocklistReport(version=3, applied_at=1.0, counts={}),
                origin_requests=1,
                started_at=1.0,
            )
        )
    counts = {"url": 0, "prefix": 1, "host": 0, "sha256": 0}
    node = SimpleNamespace(
        cfg=SimpleNamespace(sites=[SimpleNamespace(name="a"), SimpleNamespace(name="b")]),
        retired_stats=None,
        restarts=0,
        tls_reload_failures=0,
        health=lambda: NodeHealth(
            wanted=2, running=2, listening=2, behind_config=[], config_generation=0
        ),
        blocklist=SimpleNamespace(
            version=3,
            applied_at=1.0,
            reload_failures=0,
            counts=lambda: dict(counts),
            stale_since=lambda: None,
            compiles=1,
            tables_shipped=1,
            table_rejections={"spot-check": 1},
            loading_status=lambda: None,
            pinner=SimpleNamespace(pinned_bytes=4096, failures=0),
        ),
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(node, stats))  # type: ignore[arg-type]
    text = generate_latest(registry).decode() + takedown_exposition()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            names.setdefault(s.name, set()).update(s.labels)
    return names


def takedown_exposition() -> str:
    """The takedown service's /metrics (its own registry, `proxy/takedown/metrics.py`), with
    one of everything observed so histograms and counters show their children."""
    m = ServiceMetrics(["http://edge-a:8081"])
    m.time_to_enforcement.observe(1.5)
    m.edge_failures["http://edge-a:8081"].inc()
    return m.exposition().decode()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for p in panels(dash):
        for t in p.get("targets", []):
            found.append((p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            found.append((f"variable {v['name']}", q["query"] if isinstance(q, dict) else q))
    return found


def test_dashboard_is_grafana_json_that_imports(dashboard: dict[str, Any]) -> None:
    d = dashboard
    assert d["title"] and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"])
    assert 36 <= d["schemaVersion"] <= 41
    assert d.get("id") is None  # an import must not carry another instance's database id
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: set[tuple[int, int]] = set()
    for p in panels(d):
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["type"] in {"timeseries", "stat", "table", "gauge", "bargauge"}
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}"


def test_the_panels_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    text = {
        p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in panels(dashboard)
    }

    def panel_with(*needles: str) -> str:
        hits = [t for t, e in text.items() if all(n in e for n in needles)]
        assert hits, needles
        return hits[0]

    panel_with("edgeproxy_requests_total", 'result=~"hit|stale"')  # hit ratio
    panel_with("sum by (result) (rate(edgeproxy_requests_total")  # req/s by result
    panel_with("sum by (type) (rate(edgeproxy_blocked_total")  # blocked/s by type
    p = panel_with(
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
        "edgeproxy_request_duration_seconds_bucket",
    )
    assert p
    panel_with("edgeproxy_origin_errors_total")
    panel_with("edgeproxy_cache_bytes", "/", "edgeproxy_cache_max_bytes")  # cache fill
    panel_with("edgeproxy_worker_blocklist_version", "by (instance, worker)")
    # The takedown service (issue 14: silent failures).
    panel_with("sum by (state) (edgeproxy_takedown_notices)")
    panel_with("edgeproxy_takedown_overdue_cases")
    panel_with("sum by (edge) (rate(edgeproxy_takedown_edge_delivery_failures_total")
    panel_with("edgeproxy_takedown_notification_failures_total")
    panel_with("histogram_quantile(0.95", "edgeproxy_takedown_time_to_enforcement_seconds_bucket")


def test_every_query_names_an_exposed_metric_and_label(dashboard: dict[str, Any]) -> None:
    names = exposed()
    all_labels = set().union(*names.values()) | ADDED_BY_PROMETHEUS
    seen_metrics = set()
    for where, expr in queries(dashboard):
        metrics = set(re.findall(r"\b(edgeproxy_[a-z0-9_]+)\b", expr))
        assert metrics, f"{where}: no edgeproxy metric in {expr!r}"
        for m in metrics:
            assert m in names, f"{where}: {m} is not exposed (have {sorted(names)})"
        seen_metrics |= metrics
        for m, selector in re.findall(r"(edgeproxy_[a-z0-9_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector):
                assert label in names[m] | ADDED_BY_PROMETHEUS, f"{where}: {m} has no {label}"
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in all_labels, f"{where}: no metric has label {label}"
        words = set(re.findall(r"\b([a-z_]+)\s*\(", expr))
        assert words <= PROMQL_WORDS, f"{where}: unexpected function {words - PROMQL_WORDS}"
    # The dashboard covers the families the issue names.
    for m in (
        "edgeproxy_requests_total",
        "edgeproxy_blocked_total",
        "edgeproxy_request_duration_seconds_bucket",
        "edgeproxy_origin_errors_total",
        "edgeproxy_cache_bytes",
        "edgeproxy_cache_max_bytes",
        "edgeproxy_worker_blocklist_version",
        "edgeproxy_blocklist_version",
        "edgeproxy_takedown_notices",
        "edgeproxy_takedown_overdue_cases",
        "edgeproxy_takedown_edge_delivery_failures_total",
        "edgeproxy_takedown_notification_failures_total",
        "edgeproxy_takedown_time_to_enforcement_seconds_bucket",
    ):
        assert m in seen_metrics, m


def test_a_dashboard_naming_a_missing_metric_is_caught() -> None:
    """The check above can fail: a typo'd metric is not among the exposed names."""
    names = exposed()
    assert "edgeproxy_requests_total" in names and "edgeproxy_request_total" not in names
    assert "edgeproxy_request_duration_seconds_bucket" in names
    assert "le" in names["edgeproxy_request_duration_seconds_bucket"]


def test_prometheus_scrape_example_targets_the_admin_metrics() -> None:
    text = (CONFIG / "prometheus.yml").read_text()
    assert re.search(r"^scrape_configs:\s*$", text, re.M)
    assert re.search(r"^\s+- job_name: edgeproxy\s*$", text, re.M)
    assert re.search(r"^\s+metrics_path: /metrics\s*$", text, re.M)
    assert re.search(r"^\s+- 127\.0\.0\.1:8081\s*$", text, re.M)  # the default admin listener
    assert re.search(r"^\s+- job_name: edgeproxy-takedown\s*$", text, re.M)
    assert re.search(r"^\s+- 127\.0\.0\.1:8450\s*$", text, re.M)  # takedown serve's default
    assert "\t" not in text
