"""Issue 11, the node tier, through a real node (`edgeproxy serve`, two workers): an object is
fetched once per node, a restart serves from the tier, a torn record or a corrupt tier file
is never served, and purges and blocklist pushes reach the tier."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import lmdb
import pytest
from aiohttp import web

from tests.integration.node import Node, eventually, metric

MiB = 1 << 20


def origin_app(seen: list[str]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        body = b"same body" if request.path.startswith("/dup") else f"body of {request.path}"
        return web.Response(
            body=body if isinstance(body, bytes) else body.encode(),
            headers={"Cache-Control": "max-age=300"},
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    yield started
    for n in started:
        await n.stop()


def tier_node(origin: str, nodes: list[Node], state_dir: str | None = None) -> Node:
    node = Node(["--origin", origin, "--workers", "2", "--node-tier-bytes", str(64 * MiB)])
    if state_dir is not None:
        node.state_dir = state_dir
    nodes.append(node)
    return node


HOST = "cache.test"  # the same authority (cache key) whichever port a restarted node has


async def get(url: str) -> tuple[int, bytes, str]:
    """On a new connection each time: the kernel hands it to either worker."""
    conn = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=conn) as s,
        s.get(url, headers={"Host": HOST}) as r,
    ):
        return r.status, await r.read(), r.headers.get("Cache-Status", "")


async def test_an_object_is_fetched_once_per_node(origin_server, nodes) -> None:
    seen: list[str] = []
    node = tier_node(await origin_server(origin_app(seen)), nodes)
    await node.start()
    status, body, cs = await get(node.url + "/a")
    assert status == 200 and "fwd=miss" in cs
    # New connections until the worker that did not fetch answers: from the node tier.
    for _ in range(200):
        status, got, cs = await get(node.url + "/a")
        assert status == 200 and got == body
        if "detail=node" in cs:
            break
    else:
        raise AssertionError("no answer from the node tier: " + cs)
    assert seen == ["/a"]
    assert await metric(node, "edgeproxy_node_tier_hits") == 1
    assert await metric(node, "edgeproxy_node_tier_objects") == 1


async def test_a_restart_serves_the_first_request_from_the_tier(origin_server, nodes) -> None:
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    node = tier_node(origin, nodes)
    await node.start()
    assert (await get(node.url + "/r"))[0] == 200
    assert await node.stop() == 0
    again = tier_node(origin, nodes, node.state_dir)
    await again.start()
    status, body, cs = await get(again.url + "/r")
    assert status == 200 and body == b"body of /r" and "detail=node" in cs
    assert seen == ["/r"]
    # --cache-clear: the next start begins empty.
    assert await again.stop() == 0
    cleared = tier_node(origin, nodes, node.state_dir)
    cleared.args.append("--cache-clear")
    await cleared.start()
    assert (await get(cleared.url + "/r"))[2].count("fwd=miss") == 1
    assert seen == ["/r", "/r"]


def _tier_dir(node: Node) -> Path:
    return Path(node.state_dir) / "node-cache"


async def test_a_torn_record_is_never_served(origin_server, nodes) -> None:
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    node = tier_node(origin, nodes)
    await node.start()
    await get(node.url + "/t")
    assert await node.stop() == 0
    # Tear every stored record (what a torn write would leave, past LMDB's own atomicity).
    env = lmdb.open(str(_tier_dir(node)), max_dbs=8, map_size=256 * MiB)
    with env.begin(write=True) as txn:
        items = env.open_db(b"items", txn=txn)
        torn = [(k, v[: len(v) // 2]) for k, v in txn.cursor(db=items)]
        for k, v in torn:
            txn.put(k, v, db=items)
    env.close()
    assert len(torn) == 1
    again = tier_node(origin, nodes, node.state_dir)
    await again.start()
    status, body, cs = await get(again.url + "/t")
    assert status == 200 and body == b"body of /t" and "detail=node" not in cs
    assert seen == ["/t", "/t"]
    assert await metric(again, "edgeproxy_node_tier_rejected") == 1


async def test_a_content_coded_body_is_served_from_the_tier(origin_server, nodes) -> None:
    """A gzip body is indexed by the digest of its decoded form (the blocklist's identity
    digest), not of its stored bytes: a read that re-hashed the stored bytes rejected it, so a
    coded response was fetched again by every worker and after every restart."""
    seen: list[str] = []
    identity = b"a body sent gzip-coded " * 200

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(
            body=gzip.compress(identity),
            headers={"Cache-Control": "max-age=300", "Content-Encoding": "gzip"},
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    origin = await origin_server(app)
    node = tier_node(origin, nodes)
    await node.start()
    status, body, _ = await get(node.url + "/gz")  # the client decodes the gzip
    assert status == 200 and body == identity
    assert await node.stop() == 0
    again = tier_node(origin, nodes, node.state_dir)
    await again.start()
    status, body, cs = await get(again.url + "/gz")
    assert status == 200 and body == identity and "detail=node" in cs
    assert seen == ["/gz"] and await metric(again, "edgeproxy_node_tier_rejected") == 0


async def test_a_corrupt_tier_file_at_start_is_rebuilt(origin_server, nodes) -> None:
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    node = tier_node(origin, nodes)
    await node.start()
    await get(node.url + "/c")
    assert await node.stop() == 0
    (_tier_dir(node) / "data.mdb").write_bytes(b"not an lmdb file" * 4096)
    again = tier_node(origin, nodes, node.state_dir)
    await again.start()
    assert (
        "moved to" in "".join(again.output) and (Path(node.state_dir) / "node-cache.aside").is_dir()
    )
    status, body, _ = await get(again.url + "/c")
    assert status == 200 and body == b"body of /c" and seen == ["/c", "/c"]
    assert await metric(again, "edgeproxy_node_tier_objects") == 1


async def test_a_tier_of_an_older_format_at_start_is_rebuilt(origin_server, nodes) -> None:
    """The issue's "tier from an older format version": a node upgraded onto a tier that a
    node of format 3 left (its eleven databases, one record) logs it, moves it aside, and
    serves from an empty tier of its own format, which then keeps what it stores."""
    import shutil

    from tests.cache.test_node import format_3_tier
    from tests.cache.test_shared import entry

    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    node = tier_node(origin, nodes)
    await node.start()
    assert await node.stop() == 0
    shutil.rmtree(_tier_dir(node))
    format_3_tier(_tier_dir(node), entry("/o", b"stored by format 3"))
    again = tier_node(origin, nodes, node.state_dir)
    await again.start()
    out = "".join(again.output)
    assert "format b'3'" in out and "moved to" in out
    assert (Path(node.state_dir) / "node-cache.aside").is_dir()
    status, body, _ = await get(again.url + "/o")
    assert status == 200 and body == b"body of /o" and seen == ["/o"]

    async def a_hit() -> bool:
        status, body, cs = await get(again.url + "/o")
        return status == 200 and body == b"body of /o" and "fwd=miss" not in cs

    await eventually(a_hit, what="a hit on either worker")
    assert seen == ["/o"]
    assert await metric(again, "edgeproxy_node_tier_objects") == 1


async def test_purges_reach_the_tier(origin_server, nodes) -> None:
    seen: list[str] = []
    node = tier_node(await origin_server(origin_app(seen)), nodes)
    await node.start()
    for path in ("/p/1", "/p/2", "/q", "/u"):
        await get(node.url + path)
    assert await metric(node, "edgeproxy_node_tier_objects") == 4
    status, body = await node.admin_json("POST", "/purge", {"prefix": f"http://{HOST}/p"})
    assert status == 200 and body["purged"] >= 2
    assert await metric(node, "edgeproxy_node_tier_objects") == 2
    status, _ = await node.admin_json("POST", "/purge", {"url": f"http://{HOST}/u"})
    assert await metric(node, "edgeproxy_node_tier_objects") == 1
    status, _ = await node.admin_json("POST", "/purge", {"host": HOST})
    assert status == 200 and await metric(node, "edgeproxy_node_tier_objects") == 0
    for _ in range(4):  # whichever worker answers, nothing stale is left to find
        await get(node.url + "/q")
    assert seen.count("/q") == 2


async def test_a_blocklist_push_purges_the_tier(origin_server, nodes) -> None:
    seen: list[str] = []
    node = tier_node(await origin_server(origin_app(seen)), nodes)
    await node.start()
    for path in ("/listed/x", "/dup1", "/free"):
        assert (await get(node.url + path))[0] == 200
    digest = hashlib.sha256(b"same body").hexdigest()
    status, _ = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {
            "entries": [
                {"id": "p1", "type": "prefix", "value": f"http://{HOST}/listed/"},
                {"id": "d1", "type": "sha256", "value": digest},
            ]
        },
    )
    assert status == 200  # acknowledged: every worker enforces it from here on
    for _ in range(10):
        assert (await get(node.url + "/listed/x"))[0] == 451
        assert (await get(node.url + "/dup1"))[0] == 451
        assert (await get(node.url + "/free"))[0] == 200
    deadline = asyncio.get_running_loop().time() + 10
    while await metric(node, "edgeproxy_node_tier_objects") != 1:
        assert asyncio.get_running_loop().time() < deadline, "listed objects left in the tier"
        await asyncio.sleep(0.05)
    assert seen.count("/free") == 1


async def test_concurrent_misses_on_both_workers_make_one_origin_request(
    origin_server, nodes
) -> None:
    """Coalescing across workers: while one worker's fetch of a key is at the origin, the
    other worker's misses for it wait and are answered from the node tier it stores into."""
    seen: list[str] = []
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        await gate.wait()
        return web.Response(
            body=f"body of {request.path}".encode(), headers={"Cache-Control": "max-age=300"}
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    node = tier_node(await origin_server(app), nodes)
    await node.start()
    paths = [f"/together/{i}" for i in range(4)]
    tasks: list[tuple[str, asyncio.Future[tuple[int, bytes, str]]]] = []

    async def waiting() -> bool:
        # New connections per path, wave after wave, while the origin holds the first fetch:
        # one worker may accept a whole burst, a later wave reaches the other.
        if len(tasks) < 200:
            tasks.extend((p, asyncio.ensure_future(get(node.url + p))) for p in paths)
        return await metric(node, "edgeproxy_node_tier_lease_waits") >= 1

    await eventually(waiting, timeout_s=20.0)  # a worker waits on the other's fetch
    gate.set()
    answers = await asyncio.gather(*(t for _p, t in tasks))
    for (path, _t), (status, body, _cs) in zip(tasks, answers, strict=True):
        assert status == 200 and body == f"body of {path}".encode()
    assert sorted(seen) == paths  # one origin request per key, for the whole node
    assert await metric(node, "edgeproxy_node_tier_coalesced") >= 1
    assert any("detail=node" in cs for _s, _b, cs in answers)
    assert await metric(node, "edgeproxy_node_tier_lease_timeouts") == 0


async def test_an_uncacheable_answer_lets_the_waiting_worker_fetch(origin_server, nodes) -> None:
    """The lease holder's answer could not be stored: the waiting worker's requests are not
    left waiting for coalesce_wait_s; each gets its own answer from the origin."""
    seen: list[str] = []
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        await gate.wait()
        return web.Response(body=b"private", headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    node = tier_node(await origin_server(app), nodes)
    await node.start()
    tasks: list[asyncio.Future[tuple[int, bytes, str]]] = []

    async def waiting() -> bool:
        if len(tasks) < 200:
            tasks.extend(asyncio.ensure_future(get(node.url + "/ns")) for _ in range(4))
        return await metric(node, "edgeproxy_node_tier_lease_waits") >= 1

    await eventually(waiting, timeout_s=20.0)  # a worker waits on the other's fetch
    gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert all(status == 200 and body == b"private" for status, body, _cs in answers)
    assert len(seen) >= 2  # each worker asked the origin itself
    assert await metric(node, "edgeproxy_node_tier_lease_timeouts") == 0


async def test_answers_memory_cannot_hold_are_purged_and_blocked(
    origin_server, nodes, tmp_path: Path
) -> None:
    """Issue 11: an object the node tier holds but no worker's memory can (its body within a
    worker's share, the bound on what is stored, but not with its head and overhead) is
    answered from the node tier, the memo's repeats included (a reference to the node tier's
    item, never a live entry no purge of memory would find), and a purge or a listed digest
    reaches those answers."""
    seen: list[str] = []
    big = b"B" * 32_600

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=big, headers={"Cache-Control": "max-age=300"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    origin = await origin_server(app)
    config = tmp_path / "small-memory.toml"
    config.write_text(  # 32 KiB of memory per worker
        "[cache]\nmemory_cache_bytes = 65536\nmax_object_bytes = 65536\n\n"
        f'[[sites]]\nname = "t"\nhosts = ["{HOST}"]\norigin = "{origin}"\n'
    )
    node = Node(["--config", str(config), "--workers", "2", "--node-tier-bytes", str(64 * MiB)])
    nodes.append(node)
    await node.start()
    for _ in range(12):  # new connections: both workers, each more than once
        status, body, _cs = await get(node.url + "/big")
        assert status == 200 and body == big
    assert seen == ["/big"] and await metric(node, "edgeproxy_node_tier_hits") >= 2
    status, _ = await node.admin_json("POST", "/purge", {"url": f"http://{HOST}/big"})
    assert status == 200
    for _ in range(12):
        status, body, _cs = await get(node.url + "/big")
        assert status == 200 and body == big
    assert seen == ["/big", "/big"]  # fetched anew once, for the node
    status, _ = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {"entries": [{"id": "b1", "type": "sha256", "value": hashlib.sha256(big).hexdigest()}]},
    )
    assert status == 200
    for _ in range(12):
        assert (await get(node.url + "/big"))[0] == 451


async def test_a_node_writes_its_tier_through_the_map_by_default(origin_server, nodes) -> None:
    """`cache.node_tier_preallocate` is on by default: on this filesystem (ext4 or tmpfs)
    with room on the disk the node reserves the map's blocks at start, its workers store
    through the map, and what they stored is served after a restart; with
    `--no-node-tier-preallocate` the tier is written with pwrite() and serves the same."""
    from proxy.cache.node import map_size, preallocated

    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    node = tier_node(origin, nodes)
    await node.start()
    assert "preallocated" in "".join(node.output)
    assert preallocated(_tier_dir(node), 64 * MiB)
    assert (await get(node.url + "/m"))[0] == 200
    assert await node.stop() == 0
    again = tier_node(origin, nodes, node.state_dir)
    await again.start()
    status, body, cs = await get(again.url + "/m")
    assert status == 200 and body == b"body of /m" and "detail=node" in cs
    assert seen == ["/m"]
    assert await again.stop() == 0
    plain = Node(
        ["--origin", origin, "--workers", "2", "--node-tier-bytes", str(64 * MiB)]
        + ["--no-node-tier-preallocate"]
    )
    nodes.append(plain)
    await plain.start()
    assert (await get(plain.url + "/p"))[0] == 200
    assert (_tier_dir(plain) / "data.mdb").stat().st_blocks * 512 < map_size(64 * MiB)
    status, body, cs = await get(plain.url + "/p")
    assert status == 200 and body == b"body of /p"
    assert seen == ["/m", "/p"]
