"""Issue 12, "Progress on long work": a compile job the node is running shows in /metrics, in
`GET /status` and `GET /blocklist`, and in both `edgeproxy status` screens. The real admin app
on a real socket, in front of a fake node whose blocklist says a job is half way."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.admin.status import render, render_blocklist
from tests.admin.fake_node import Admin

HALF_WAY = {
    "pid": 4242,
    "what": "file",
    "phase": "compile",
    "entries_done": 500_000,
    "entries_total": 1_000_000,
    "entries_per_s": 125_000.0,
    "eta_s": 4.0,
    "running_s": 9.5,
}


async def get(admin: Admin, path: str) -> Any:
    async with aiohttp.ClientSession() as s:
        async with s.get(admin.url + path, headers=admin.auth) as r:
            assert r.status == 200
            return await (r.text() if path == "/metrics" else r.json())


def samples(text: str) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


async def test_a_running_compile_shows_in_the_metrics(make_admin: Any) -> None:
    admin = await make_admin()
    idle = samples(await get(admin, "/metrics"))
    assert idle["edgeproxy_blocklist_compile_running"] == 0
    assert idle["edgeproxy_blocklist_compile_entries_total"] == 0
    admin.node.blocklist.loading = HALF_WAY
    admin.node.blocklist.compiles = 3
    busy = samples(await get(admin, "/metrics"))
    assert busy["edgeproxy_blocklist_compile_running"] == 1
    assert busy["edgeproxy_blocklist_compile_entries_done"] == 500_000
    assert busy["edgeproxy_blocklist_compile_entries_total"] == 1_000_000
    assert busy["edgeproxy_blocklist_compile_eta_seconds"] == 4.0
    assert busy["edgeproxy_blocklist_compiles_total"] == 3


async def test_a_running_compile_shows_in_both_status_screens(make_admin: Any) -> None:
    admin = await make_admin()
    assert (await get(admin, "/status"))["blocklist_loading"] is None
    assert "loading" not in render(admin.url, None, await get(admin, "/status"), 0.0)
    admin.node.blocklist.loading = HALF_WAY
    status = await get(admin, "/status")
    assert status["blocklist_loading"] == HALF_WAY
    want = (
        "loading (file, pid 4242): compile 500,000 of 1,000,000 entries (50%), "
        "125,000 entries/s, eta 4s, running 9s"
    )
    assert f"\n    {want}\n" in render(admin.url, None, status, 0.0)
    answer = await get(admin, "/blocklist")
    assert answer["loading"] == HALF_WAY
    assert f"\n  {want}" in render_blocklist(admin.url, answer)
