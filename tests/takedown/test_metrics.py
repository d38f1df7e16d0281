"""Issue 14: silent failures. An edge that is down keeps the case `published`; the service
now says so in its log and in GET /metrics (delivery failures per edge, overdue cases), and
once the edge is back the case's time to enforcement is observed. /metrics is Prometheus text
and needs no key."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.takedown.conftest import Env, MakeEnv, notice


async def scrape(env: Env) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await env.client.get("/metrics")  # no Authorization header
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(await r.text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_edge_down_is_logged_counted_and_overdue(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture
) -> None:
    env = await make_env(n_edges=2)
    up, down = env.edges
    down.down = True
    caplog.set_level(logging.WARNING, "edgeproxy.takedown.publisher")
    before = await scrape(env)
    assert before[("edgeproxy_takedown_notices", (("state", "published"),))] == 0
    _, body = await env.post("/notices", "trusted", notice())
    case = body["case"]
    await env.wait_state(case, "published")
    for _ in range(200):
        if sum(down.url in r.getMessage() for r in caplog.records) >= 3:
            break
        await asyncio.sleep(0.02)
    logged = [r.getMessage() for r in caplog.records if down.url in r.getMessage()]
    assert len(logged) >= 3 and "HTTP 503" in logged[0] and "retrying" in logged[0]
    assert not any(up.url in r.getMessage() for r in caplog.records)
    env.clock.advance(env.svc.cfg.deadlines.enforcement_s + 1)
    m = await scrape(env)
    failures = m[("edgeproxy_takedown_edge_delivery_failures_total", (("edge", down.url),))]
    assert failures >= 3
    assert m[("edgeproxy_takedown_edge_delivery_failures_total", (("edge", up.url),))] == 0
    assert m[("edgeproxy_takedown_edge_acks_total", (("edge", up.url),))] == 1
    assert m[("edgeproxy_takedown_notices", (("state", "published"),))] == 1
    assert m[("edgeproxy_takedown_overdue_cases", (("reason", "enforcement"),))] == 1
    assert m[("edgeproxy_takedown_time_to_enforcement_seconds_count", ())] == 0
    _, view = await env.get(f"/cases/{case}")
    [stuck] = [e for e in view["edges"] if e["edge"] == down.url]
    assert stuck["attempts"] >= 3 and stuck["last_error"] and stuck["overdue"]

    down.down = False  # the edge comes back: enforced, and how long it took is observed
    await env.wait_state(case, "enforced")
    m = await scrape(env)
    assert m[("edgeproxy_takedown_notices", (("state", "enforced"),))] == 1
    assert m[("edgeproxy_takedown_overdue_cases", (("reason", "enforcement"),))] == 0
    assert m[("edgeproxy_takedown_time_to_enforcement_seconds_count", ())] == 1
    assert m[("edgeproxy_takedown_time_to_enforcement_seconds_sum", ())] >= 0


async def test_pending_decisions_are_overdue_by_reason(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    await env.post("/notices", "submitter", notice())
    await env.post("/notices", "submitter", notice({"url": "https://cdn.example/b"}))
    m = await scrape(env)
    assert m[("edgeproxy_takedown_notices", (("state", "under_review"),))] == 2
    assert m[("edgeproxy_takedown_overdue_cases", (("reason", "decision"),))] == 0
    env.clock.advance(env.svc.cfg.deadlines.decision_s + 1)
    m = await scrape(env)
    assert m[("edgeproxy_takedown_overdue_cases", (("reason", "decision"),))] == 2
