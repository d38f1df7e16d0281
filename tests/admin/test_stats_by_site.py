"""Issue 10: per-site counters are keyed by site name, so workers with different site lists (a
SIGHUP added or removed sites) and the retired counts of workers gone combine, and /metrics and
/status answer 200 with series for every site; /readyz says not-ready while workers disagree on
the config or the blocklist version."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import WorkerStats, combine
from proxy.node.health import NodeHealth
from tests.admin.fake_node import Admin, report


def test_combine_adds_by_site_name_whatever_the_lists() -> None:
    old = WorkerStats(["a", "b"])
    new = WorkerStats(["c", "a"])  # a moved, b gone, c new
    old.observe(0, 0, 0, 10, 0.001)  # a
    old.blocked[1][2] += 1  # b, host
    new.observe(1, 0, 0, 10, 0.001)  # a
    new.observe(0, 0, 2, 10, 0.001)  # c, miss
    new.origin_failures[2][0] += 1  # unknown site, connect
    total = combine([old.snapshot(), new.snapshot()])
    assert total is not None
    sites = total["sites"]
    assert set(sites) == {"a", "b", "c", "-"}
    assert sites["a"]["requests"][0][0] == 2
    assert sites["b"]["blocked"][2] == 1
    assert sites["c"]["requests"][0][2] == 1
    assert sites["-"]["origin_failures"][0] == 1
    assert total["not_stored"] == [0] * len(total["not_stored"])
    # Combining does not change its inputs (the retired total is combined again later).
    assert old.snapshot()["sites"]["a"]["requests"][0][0] == 1


async def samples(admin: Admin, name: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s:
        async with s.get(admin.url + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == name:
                site = sample.labels.get("site", "")
                out[site] = out.get(site, 0) + sample.value
    return out


async def test_metrics_and_status_with_workers_of_different_site_lists(make_admin) -> None:
    admin = await make_admin(sites=["a", "b"])
    admin.node.reports = [report(0, ["a"], hits=2), report(1, ["b", "a"], hits=3)]
    admin.node.retired_stats = report(9, ["old", "a"], hits=5).stats
    counts = await samples(admin, "edgeproxy_requests_total")
    assert counts == {"a": 2, "b": 3, "old": 5, "-": 0}
    async with aiohttp.ClientSession() as s:
        async with s.get(admin.url + "/status") as r:
            assert r.status == 200
            body = await r.json()
    assert body["requests"]["hit"] == 10
    assert [w["requests"] for w in body["workers"]] == [2, 3]


async def test_readyz_is_not_ready_while_workers_disagree(make_admin) -> None:
    admin = await make_admin()
    admin.node.reports = [report(0, ["a"], version=1)]

    async def readyz() -> tuple[int, list[str]]:
        async with aiohttp.ClientSession() as s:
            async with s.get(admin.url + "/readyz") as r:
                return r.status, (await r.json())["problems"]

    # The origin (port 9) is not reachable here: that problem is always listed; look at the rest.
    def others(problems: list[str]) -> list[str]:
        return [p for p in problems if "origin of site" not in p]

    assert others((await readyz())[1]) == []
    admin.node.node_health = NodeHealth(
        wanted=2, running=2, listening=2, behind_config=[1], config_generation=3
    )
    admin.node.reports = [report(0, ["a"]), report(1, ["a"])]
    code, problems = await readyz()
    assert code == 503 and others(problems) == ["workers [1] still run an older config"]
    admin.node.node_health = NodeHealth(
        wanted=2, running=2, listening=2, behind_config=[], config_generation=3
    )
    admin.node.reports = [report(0, ["a"], version=1), report(1, ["a"], version=2)]
    code, problems = await readyz()
    assert code == 503 and "workers enforce versions [1, 2]" in others(problems)[0]
    admin.node.reports = [report(0, ["a"])]  # one worker did not answer
    code, problems = await readyz()
    assert code == 503 and others(problems) == ["1 of 2 workers answered"]
