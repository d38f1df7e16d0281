"""Issue 17, "Reload keeps the cache": a SIGHUP that leaves a site's cache-relevant settings
alone keeps its stored objects (the next request is a hit); one that changes them drops that
site's objects and only those. A reload the workers can take in place keeps the workers and
their memory caches; one that needs new workers keeps the cache through the node tier
(`cache.node_tier_bytes`), and without it starts cold (proxy/node/reload.py)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from proxy.config import Config, Site
from proxy.node.reload import plan
from tests.integration.node import Node
from tests.node.conftest import get, origin_app


def write(path: Path, origins: dict[str, str], extra: str = "", site_b: str = "") -> None:
    sites = "".join(
        f'[[sites]]\nname = "{name}"\nhosts = ["{name}.test"]\norigin = "{origin}"\n'
        + (site_b if name == "b" else "")
        + "\n"
        for name, origin in origins.items()
    )
    path.write_text(extra + "\n" + sites)


async def reload(node: Node, generation: int, timeout_s: float = 30.0) -> None:
    """SIGHUP, then wait until the node runs config `generation` in every worker."""
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                status, body = await node.admin_json("GET", "/readyz")
                if status == 200 and body["config_generation"] == generation:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError("\n".join(node.output[-20:])) from None


async def cache_status(node: Node, host: str, path: str) -> str:
    status, headers, _ = await get(node.url + path, headers={"Host": host})
    assert status == 200
    return headers["Cache-Status"]


async def fill(node: Node) -> None:
    for host, path in (("a.test", "/x"), ("b.test", "/y")):
        assert "fwd=miss" in await cache_status(node, host, path)
        assert "; hit" in await cache_status(node, host, path)


async def test_in_place_reload_keeps_objects_and_drops_only_a_changed_site(
    origin_server, nodes, tmp_path: Path
) -> None:
    seen_a: list[str] = []
    seen_b: list[str] = []
    a = await origin_server(origin_app(seen_a, tag="A"))
    b = await origin_server(origin_app(seen_b, tag="B"))
    b2 = await origin_server(origin_app(seen_b, tag="B2"))
    cfg = tmp_path / "edge.toml"
    write(cfg, {"a": a, "b": b})
    node = Node(["--config", str(cfg), "--workers", "1"])
    nodes.append(node)
    await node.start()
    await fill(node)
    pids = await node.worker_pids()

    # Unrelated changes: a limit, the admin API's timeout, b's 451 link (how answers look).
    write(
        cfg,
        {"a": a, "b": b},
        extra="[limits]\nkeepalive_timeout_s = 30.0\n[admin]\napply_timeout_s = 60.0\n",
        site_b='blocked_by_url = "https://b.test/legal"\n',
    )
    await reload(node, 1)
    assert await node.worker_pids() == pids  # the same workers: applied in place
    assert "; hit" in await cache_status(node, "a.test", "/x")
    assert "; hit" in await cache_status(node, "b.test", "/y")
    assert (seen_a, seen_b) == (["/x"], ["/y"])

    # A cache-relevant change of b (its origin): b's objects go, a's stay.
    write(cfg, {"a": a, "b": b2})
    await reload(node, 2)
    assert await node.worker_pids() == pids
    assert "; hit" in await cache_status(node, "a.test", "/x")
    assert "fwd=miss" in await cache_status(node, "b.test", "/y")
    _, _, body = await get(node.url + "/y", headers={"Host": "b.test"})
    assert body == b"B2:/y"  # from the new origin, stored anew
    assert (seen_a, seen_b) == (["/x"], ["/y", "/y"])


async def test_a_reload_that_restarts_workers_keeps_the_cache_in_the_node_tier(
    origin_server, nodes, tmp_path: Path
) -> None:
    seen_a: list[str] = []
    seen_b: list[str] = []
    a = await origin_server(origin_app(seen_a, tag="A"))
    b = await origin_server(origin_app(seen_b, tag="B"))
    cfg = tmp_path / "edge.toml"
    tier = f'[cache]\nnode_tier_bytes = 33554432\nnode_tier_path = "{tmp_path / "tier"}"\n'
    write(cfg, {"a": a, "b": b}, extra=tier)
    node = Node(["--config", str(cfg), "--workers", "1"])
    nodes.append(node)
    await node.start()
    await fill(node)
    pids = await node.worker_pids()

    # [origin] needs new workers (a new connection pool); b's path rule is cache-relevant.
    write(
        cfg,
        {"a": a, "b": b},
        extra=tier + "[origin]\nconnect_timeout_s = 4.0\n",
        site_b="case_sensitive_paths = true\n",
    )
    await reload(node, 1)
    assert await node.worker_pids() != pids  # replaced
    assert "; hit" in await cache_status(node, "a.test", "/x")  # from the node tier
    assert "fwd=miss" in await cache_status(node, "b.test", "/y")  # dropped there too
    assert (seen_a, seen_b) == (["/x"], ["/y", "/y"])


def test_the_plan_names_what_restarts_and_what_is_dropped() -> None:
    a = Site(name="a", hosts=["a.test"], origin="http://127.0.0.1:1")
    b = Site(name="b", hosts=["b.test"], origin="http://127.0.0.1:2")
    old = Config(sites=[a, b])

    def with_(**kw: object) -> Config:
        import msgspec

        return msgspec.structs.replace(old, **kw)  # type: ignore[arg-type]

    import msgspec

    same = plan(old, old)
    assert same.in_place and same.dropped_sites == ()
    neutral = plan(old, with_(sites=[a, msgspec.structs.replace(b, hsts_max_age_s=60)]))
    assert neutral.in_place and neutral.dropped_sites == ()
    moved = plan(old, with_(sites=[a, msgspec.structs.replace(b, hosts=["c.test"])]))
    assert moved.in_place and moved.dropped_sites == ("b",)
    assert plan(old, with_(sites=[b, a])).restart_for == ("sites (added, removed or reordered)",)
    assert plan(old, with_(sites=[a])).restart_for  # a site removed
    cache = plan(old, with_(cache=msgspec.structs.replace(old.cache, heuristic_fraction=0.2)))
    assert cache.restart_for == ("cache",) and cache.dropped_sites == ("a", "b")
    sized = plan(old, with_(cache=msgspec.structs.replace(old.cache, memory_cache_bytes=1 << 20)))
    assert sized.restart_for == ("cache",) and sized.dropped_sites == ()
    assert plan(old, with_(via_name="edge-2")).restart_for == ("via_name",)


async def test_a_larger_node_tier_at_reload_is_reserved_before_the_new_workers(
    origin_server, nodes, tmp_path: Path
) -> None:
    """The node reserves the tier's disk for its map at start (the default): a SIGHUP with a
    larger `node_tier_bytes` reserves the larger map before the new workers open it, so they
    write through the map too, and what the old workers stored is still served."""
    from proxy.cache.node import preallocated

    seen: list[str] = []
    a = await origin_server(origin_app(seen, tag="A"))
    cfg = tmp_path / "edge.toml"
    path = tmp_path / "tier"
    tier = f'[cache]\nnode_tier_path = "{path}"\nnode_tier_bytes = '
    write(cfg, {"a": a}, extra=tier + "16777216\n")
    node = Node(["--config", str(cfg), "--workers", "1"])
    nodes.append(node)
    await node.start()
    assert preallocated(path, 16 << 20) and not preallocated(path, 48 << 20)
    assert "fwd=miss" in await cache_status(node, "a.test", "/x")
    pids = await node.worker_pids()
    write(cfg, {"a": a}, extra=tier + "50331648\n")
    await reload(node, 1)
    assert await node.worker_pids() != pids  # a [cache] change: new workers
    assert preallocated(path, 48 << 20)
    assert "for the new bound" in "".join(node.output)
    assert "detail=node" in await cache_status(node, "a.test", "/x")
    assert "fwd=miss" in await cache_status(node, "a.test", "/new")
    assert seen == ["/x", "/new"]
