"""Issue 10, "SIGHUP with a config that adds a site makes /metrics and /status answer 500 until
restart": per-site counters are keyed by site name, so workers with different site lists (and
the retired counts of workers gone) add up, whichever sites a reload adds or removes."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp

from tests.admin.test_metrics import Scrape, scrape
from tests.integration.node import Node
from tests.node.conftest import get, origin_app


def site_config(path: Path, sites: dict[str, str]) -> None:
    path.write_text(
        "\n".join(
            f'[[sites]]\nname = "{name}"\nhosts = ["{name}.test"]\norigin = "{origin}"\n'
            for name, origin in sites.items()
        )
    )


async def reload_until(node: Node, host: str, body: bytes, timeout_s: float = 20.0) -> None:
    """SIGHUP, then poll until `host` answers `body` on every worker (new connections)."""
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(timeout_s):
        while True:
            answers = [await get(node.url + "/p", headers={"Host": host}) for _ in range(4)]
            if all(a[2] == body for a in answers):
                break
            await asyncio.sleep(0.1)
        while True:  # and the rolling restart is over: every worker on the new config
            status, _ = await node.admin_json("GET", "/readyz")
            if status == 200:
                return
            await asyncio.sleep(0.1)


async def requests_of(s: Scrape, site: str) -> float:
    return s.value("edgeproxy_requests_total", missing_ok=True, site=site)


async def test_sighup_adding_and_removing_sites_keeps_metrics_and_status(
    origin_server, nodes, tmp_path: Path
) -> None:
    a = await origin_server(origin_app([], tag="A"))
    b = await origin_server(origin_app([], tag="B"))
    c = await origin_server(origin_app([], tag="C"))
    cfg = tmp_path / "edge.toml"
    site_config(cfg, {"a": a})
    node = Node(["--config", str(cfg), "--workers", "2"])
    nodes.append(node)
    await node.start()
    for _ in range(3):
        assert (await get(node.url + "/p", headers={"Host": "a.test"}))[2] == b"A:/p"
    await scrape(node)  # the old workers' counts are now known to the supervisor

    site_config(cfg, {"a": a, "b": b})  # adds a site
    await reload_until(node, "b.test", b"B:/p")
    after_add = await scrape(node)
    assert await requests_of(after_add, "a") >= 3
    assert await requests_of(after_add, "b") >= 4
    assert after_add.value("edgeproxy_origin_requests_total", site="b") >= 1
    status, body = await node.admin_json("GET", "/status")
    assert status == 200
    assert sum(body["requests"].values()) >= 7

    site_config(cfg, {"c": c, "b": b})  # removes "a", adds "c" before "b"
    await reload_until(node, "c.test", b"C:/p")
    after = await scrape(node)
    # The removed site's counts stay (counters never go backwards); the new ones appear.
    assert await requests_of(after, "a") >= await requests_of(after_add, "a")
    assert await requests_of(after, "b") >= await requests_of(after_add, "b")
    assert await requests_of(after, "c") >= 4
    assert (await get(node.url + "/p", headers={"Host": "a.test"}))[0] == 421
    status, body = await node.admin_json("GET", "/status")
    assert status == 200 and len(body["workers"]) == 2
    async with aiohttp.ClientSession() as s:
        async with s.get(node.admin + "/readyz") as r:
            ready = await r.json()
    assert r.status == 200 and ready["config_generation"] == 2, ready


async def test_counts_made_after_the_last_scrape_survive_a_reload(
    origin_server, nodes, tmp_path: Path
) -> None:
    """A retiring worker sends its final counts as it exits: requests it answered after the
    last scrape still count once it is gone (counters never go backwards). Nothing asks the
    admin between those requests and the old workers' exit."""
    a = await origin_server(origin_app([], tag="A"))
    b = await origin_server(origin_app([], tag="B"))
    cfg = tmp_path / "edge.toml"
    site_config(cfg, {"a": a})
    node = Node(["--config", str(cfg), "--workers", "2"])
    nodes.append(node)
    await node.start()
    status, body = await node.admin_json("GET", "/status")
    old_pids = [w["pid"] for w in body["workers"]]
    before = await requests_of(await scrape(node), "a")
    for _ in range(10):  # answered, never scraped before the workers retire
        assert (await get(node.url + "/p", headers={"Host": "a.test"}))[2] == b"A:/p"
    site_config(cfg, {"a": a, "b": b})
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(20):
        while any(_alive(pid) for pid in old_pids):
            await asyncio.sleep(0.05)
    after = await requests_of(await scrape(node), "a")
    assert after >= before + 10


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_no_old_worker_takes_a_client_once_the_reload_is_ready(
    origin_server, nodes, tmp_path: Path
) -> None:
    """When /readyz is green after a reload, every old worker has closed its listening
    socket: a removed site is refused on every new connection."""
    a = await origin_server(origin_app([], tag="A"))
    b = await origin_server(origin_app([], tag="B"))
    cfg = tmp_path / "edge.toml"
    site_config(cfg, {"a": a})
    node = Node(["--config", str(cfg), "--workers", "2"])
    nodes.append(node)
    await node.start()
    site_config(cfg, {"b": b})
    await reload_until(node, "b.test", b"B:/p")
    for _ in range(20):
        assert (await get(node.url + "/p", headers={"Host": "a.test"}))[0] == 421
