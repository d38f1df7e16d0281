"""Issue 4: traffic of known shape against a running node (`edgeproxy serve`, 1 and 2 workers);
the scraped /metrics counters move by exactly that shape, gauges tell the truth, a restarted
worker's counts are not lost, and `edgeproxy status` shows it all on one screen.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.node.tail import PER_WORKER_FAMILIES
from tests.integration.node import TOKEN, Node

CACHEABLE = b"c" * 1000
NO_STORE = b"n" * 500
MEMORY_CACHE_BYTES = 32 << 20


class Scrape:
    """One /metrics page: {(sample name, labels): value}; `value()` sums samples matching the
    labels given (the rest are free)."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, *, missing_ok: bool = False, **labels: str) -> float:
        want = set(labels.items())
        found = [v for (n, ls), v in self.samples.items() if n == name and want <= ls]
        assert found or missing_ok, f"no sample {name}{labels}"
        return sum(found)

    def counters(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        names = {f"{n}_total" for n, t in self.types.items() if t == "counter"}
        names |= {
            f"{n}_{suffix}"
            for n, t in self.types.items()
            if t == "histogram"
            for suffix in ("bucket", "count", "sum")
        }
        return {k: v for k, v in self.samples.items() if k[0] in names}


async def scrape(node: Node) -> Scrape:
    async with aiohttp.ClientSession() as s:
        async with s.get(node.admin + "/metrics") as r:
            assert r.status == 200
            return Scrape(await r.text())


def origin_app(seen: list[str]) -> web.Application:
    async def cacheable(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=CACHEABLE, headers={"Cache-Control": "max-age=60"})

    async def no_store(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=NO_STORE, headers={"Cache-Control": "no-store"})

    async def form(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"posted:" + await request.read())

    async def fail(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(status=500, body=b"boom")

    app = web.Application()
    app.router.add_get("/c/{n}", cacheable)
    app.router.add_get("/blocked/{n}", cacheable)
    app.router.add_get("/nostore/{n}", no_store)
    app.router.add_post("/form", form)
    app.router.add_get("/fail", fail)
    return app


@dataclass
class Shape:
    """What the client saw: requests and body bytes by (site, method class, result)."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    body_bytes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, site: str, method: str, result: str, body: bytes) -> None:
        self.requests[(site, method, result)] += 1
        self.body_bytes[(site, result)] += len(body)


async def send(
    s: aiohttp.ClientSession,
    shape: Shape,
    url: str,
    host: str,
    want: tuple[int, str, str, str],
    *,
    method: str = "GET",
    data: bytes | None = None,
) -> None:
    status, site, mclass, result = want
    async with s.request(method, url, headers={"Host": host}, data=data) as r:
        body = await r.read()
        assert r.status == status, (url, host, r.status, body)
        if result == "hit":
            assert r.headers["Cache-Status"].startswith("edgeproxy; hit"), r.headers
        if result == "miss":
            assert "fwd=miss" in r.headers["Cache-Status"] and "stored" in r.headers["Cache-Status"]
    shape.add(site, mclass, result, body)


async def run_traffic(node: Node) -> Shape:
    """7 misses, 11 hits, 7 passes (3 no-store, 2 origin 500s, 2 POSTs), 3 blocked (prefix),
    2 origin connect errors (site b), 4 unknown hosts (421). Every request but the hits takes a
    new connection, so with 2 workers both take traffic; the hits share one connection (one
    worker, whose memory tier holds the object)."""
    shape = Shape()
    u = node.url
    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    keep = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
    async with fresh, keep:
        await send(keep, shape, u + "/c/0", "a.test", (200, "a", "read", "miss"))
        for _ in range(11):
            await send(keep, shape, u + "/c/0", "a.test", (200, "a", "read", "hit"))
        for n in range(1, 7):
            await send(fresh, shape, u + f"/c/{n}", "a.test", (200, "a", "read", "miss"))
        for n in range(3):
            await send(fresh, shape, u + f"/nostore/{n}", "a.test", (200, "a", "read", "pass"))
        for _ in range(2):
            await send(fresh, shape, u + "/fail", "a.test", (500, "a", "read", "pass"))
        for n in range(2):
            await send(
                fresh,
                shape,
                u + "/form",
                "a.test",
                (200, "a", "write", "pass"),
                method="POST",
                data=b"x" * (n + 1),
            )
        for n in range(3):
            await send(fresh, shape, u + f"/blocked/{n}", "a.test", (451, "a", "read", "blocked"))
        for _ in range(2):
            await send(fresh, shape, u + "/c/0", "b.test", (502, "b", "read", "error"))
        for _ in range(4):
            await send(fresh, shape, u + "/c/0", "nowhere.test", (421, "-", "read", "error"))
    return shape


def write_config(tmp_path: Path, origin: str, dead_port: int) -> Path:
    dead = f"http://127.0.0.1:{dead_port}"
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\nworker_restart_backoff_s = 0.1\n\n'
        f'[[sites]]\nname = "a"\nhosts = ["a.test"]\norigin = "{origin}"\n\n'
        f'[[sites]]\nname = "b"\nhosts = ["b.test"]\norigin = "{dead}"\n\n'
        f"[cache]\nmemory_cache_bytes = {MEMORY_CACHE_BYTES}\n"
    )
    return cfg


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but not listening, held for the test: connecting is refused, and no other
    process can start listening there meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
async def node_factory(origin_server, tmp_path: Path, dead_port: int):
    started: list[Node] = []
    seen: list[str] = []

    async def start(workers: int) -> tuple[Node, list[str]]:
        origin = await origin_server(origin_app(seen))
        cfg = write_config(tmp_path, origin, dead_port)
        node = Node(["--config", str(cfg), "--workers", str(workers)])
        started.append(node)
        await node.start()
        return node, seen

    yield start
    for node in started:
        await node.stop()


async def push_prefix(node: Node) -> int:
    status, body = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {
            "entries": [
                {
                    "id": "take-1",
                    "type": "prefix",
                    "value": "http://a.test/blocked/",
                    "notice": "N-1",
                    "reason": "test",
                }
            ]
        },
    )
    assert status == 200, body
    return int(body["version"])


def assert_counters_match(before: Scrape, after: Scrape, shape: Shape, seen: list[str]) -> None:
    def delta(name: str, **labels: str) -> float:
        # A histogram child appears only once observed, so it may be missing before; a
        # write/other requests_total series only once counted, so it may be missing after.
        return after.value(name, missing_ok=True, **labels) - before.value(
            name, missing_ok=True, **labels
        )

    for site in ("a", "b", "-"):
        for method in ("read", "write", "other"):
            for result in ("hit", "stale", "miss", "pass", "revalidated", "blocked", "error"):
                want = shape.requests[(site, method, result)]
                got = delta("edgeproxy_requests_total", site=site, method=method, result=result)
                assert got == want, (site, method, result, got, want)
        for result in ("hit", "stale", "miss", "pass", "revalidated", "blocked", "error"):
            want_n = sum(shape.requests[(site, m, result)] for m in ("read", "write", "other"))
            got_b = delta("edgeproxy_response_bytes_total", site=site, result=result)
            assert got_b == shape.body_bytes[(site, result)], (site, result)
            # Histograms have a child only once a (site, result) has been observed.
            name = "edgeproxy_request_duration_seconds_count"
            got_n = after.value(name, missing_ok=True, site=site, result=result) - before.value(
                name, missing_ok=True, site=site, result=result
            )
            assert got_n == want_n, (site, result, got_n, want_n)
    assert sum(shape.requests.values()) == 34
    assert delta("edgeproxy_requests_total") == 34
    # Every request the origin saw was counted as an origin request, and no more.
    assert len(seen) == 14
    assert delta("edgeproxy_origin_requests_total", site="a") == 14
    assert delta("edgeproxy_origin_duration_seconds_count", site="a") == 14
    assert delta("edgeproxy_origin_requests_total", site="b") == 0
    assert delta("edgeproxy_origin_errors_total", site="b", kind="connect") == 2
    assert delta("edgeproxy_origin_errors_total", site="a") == 0
    assert delta("edgeproxy_blocked_total", site="a", type="prefix") == 3
    assert delta("edgeproxy_blocked_total") == 3
    assert delta("edgeproxy_cache_not_stored_total", reason="no-store") == 3
    assert delta("edgeproxy_coalesced_total") == 0
    assert delta("edgeproxy_handler_errors_total") == 0


@pytest.mark.parametrize("workers", [1, 2])
async def test_counters_move_by_exactly_the_traffic(
    node_factory, workers: int, capsys, monkeypatch
) -> None:
    node, seen = await node_factory(workers)
    version = await push_prefix(node)
    before = await scrape(node)
    shape = await run_traffic(node)
    after = await scrape(node)
    assert_counters_match(before, after, shape, seen)

    # Gauges: what the memory tiers hold, the node's and every worker's blocklist version.
    assert after.value("edgeproxy_cache_objects") == 7
    assert 7 * len(CACHEABLE) <= after.value("edgeproxy_cache_bytes") <= 7 * (len(CACHEABLE) + 2000)
    assert after.value("edgeproxy_cache_max_bytes") == MEMORY_CACHE_BYTES
    assert after.value("edgeproxy_blocklist_version") == version
    for w in range(workers):
        assert after.value("edgeproxy_worker_blocklist_version", worker=str(w)) == version
    assert after.value("edgeproxy_blocklist_entries", type="prefix") == 1
    assert after.value("edgeproxy_blocklist_last_apply_timestamp_seconds") > 0
    assert after.value("edgeproxy_workers") == workers
    assert after.value("edgeproxy_worker_restarts_total") == 0
    assert after.value("edgeproxy_open_connections") >= 0
    if workers == 1:
        return
    _, status = await node.admin_json("GET", "/status")
    # 22 of the 34 requests took a new connection each: both workers served some.
    served = [w["requests"] for w in status["workers"]]
    assert sum(served) == 34 and all(served), served
    assert sum(w["cache_objects"] for w in status["workers"]) == 7
    await check_status_command(node, version, capsys, monkeypatch)
    await check_restart(node, after)


async def check_status_command(node: Node, version: int, capsys, monkeypatch) -> None:
    """`edgeproxy status --admin URL` (the CLI's own entry point, in a thread: it runs its own
    event loop) prints the one-screen summary of this node."""
    from proxy.cli import main

    monkeypatch.setenv("EDGEPROXY_ADMIN_TOKEN", TOKEN)
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["status", "--admin", node.admin]) == 0
    text = capsys.readouterr().out
    pids = await node.worker_pids()
    assert "2 workers" in text and "0 restarts" in text, text
    assert "34 total" in text and "req/s" in text, text
    # 11 hits of 18 cache lookups (7 misses).
    assert "hit ratio: 61.1%" in text, text
    assert "blocked: 3 (prefix 3)" in text, text
    assert "cache: 7 objects" in text and "of 32.0 MiB" in text, text
    for w, pid in enumerate(pids):
        line = next(x for x in text.splitlines() if f"worker {w} " in x)
        assert f"pid {pid}" in line and f"blocklist version {version}" in line, line
        assert "applied 20" in line, line
    await check_status_forms_agree(node, version, capsys)


async def check_status_forms_agree(node: Node, version: int, capsys) -> None:
    """Issue 17: `edgeproxy status` and `edgeproxy blocklist status` print in one form (a
    headline naming the node, indented lines, the same worker line, the same time format) and
    both give the admin API's JSON with --json."""
    import json

    from proxy.cli import main

    assert await asyncio.to_thread(main, ["status", "--admin", node.admin, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["blocklist_version"] == version
    assert await asyncio.to_thread(main, ["blocklist", "status", "--admin", node.admin]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"edgeproxy blocklist at {node.admin}: version {version}, 2 workers")
    assert "  entries: url 0, prefix 1," in text, text
    for w in status["workers"]:
        line = next(x for x in text.splitlines() if f"worker {w['worker']} " in x)
        # the same words as `edgeproxy status`'s worker line, up to its counts
        assert line.startswith(
            f"    worker {w['worker']} (pid {w['pid']}): blocklist version {version} applied 20"
        ), line
        assert line.endswith(" ago)"), line
    assert (
        await asyncio.to_thread(main, ["blocklist", "status", "--admin", node.admin, "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["version"] == version


async def check_restart(node: Node, before: Scrape) -> None:
    """A killed worker is restarted and counted; its counts (as of the last scrape) are kept, so
    no counter goes backwards; the new worker enforces the pushed entry."""
    await node.kill_worker_and_wait(0)
    after = await scrape(node)
    assert after.value("edgeproxy_worker_restarts_total") == 1
    assert after.value("edgeproxy_workers") == 2
    old, new = before.counters(), after.counters()
    # process_* counters are per process: a new worker-0 starts its CPU seconds from 0 (and
    # process_start_time_seconds says so), as any restarted process does; so do the
    # per-worker tail histograms (proxy/node/tail.py).
    per_process = ("process_", *PER_WORKER_FAMILIES)
    old = {k: v for k, v in old.items() if not k[0].startswith(per_process)}
    assert old.keys() <= new.keys()
    went_back = {k: (v, new[k]) for k, v in old.items() if new[k] < v}
    assert not went_back
    # Nothing was served in between, so the totals are not just monotonic but unchanged.
    assert after.value("edgeproxy_requests_total") == before.value("edgeproxy_requests_total")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for n in range(6):
            async with s.get(node.url + f"/blocked/x{n}", headers={"Host": "a.test"}) as r:
                assert r.status == 451
    final = await scrape(node)
    assert final.value("edgeproxy_blocked_total", type="prefix") == 9


async def test_status_command_copes_with_a_sparse_or_broken_admin(origin_server, capsys) -> None:
    from proxy.admin.status import show_status

    async def sparse(request: web.Request) -> web.Response:
        return web.json_response({"workers": [{"worker": 0}], "requests": {"hit": 1}})

    app = web.Application()
    app.router.add_get("/status", sparse)
    base = await origin_server(app)
    assert await show_status(base, "", interval_s=0.0) == 0
    out = capsys.readouterr().out
    assert "1 workers" in out and "worker 0" in out

    broken = web.Application()

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    broken.router.add_get("/status", down)
    base = await origin_server(broken)
    assert await show_status(base, "", interval_s=0.0) == 1
    assert "edgeproxy status:" in capsys.readouterr().err

    with socket.socket() as unused:  # bound, not listening: refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        assert await show_status(f"127.0.0.1:{port}", "", interval_s=0.0) == 1
    assert "edgeproxy status: cannot reach" in capsys.readouterr().err
