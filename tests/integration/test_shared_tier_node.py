"""Issue 13, the shared tier on a real server: whole edge nodes (`edgeproxy serve`) sharing one
real redis-server. What node A fetched, node B serves as `detail=shared`; purges on one node
reach what the others stored; a listed object is never served from the tier; and when Redis is
down at start, killed, stopped (SIGSTOP) or restarted empty, every node keeps serving from the
origin and enforcing its blocklist, counts the failures, and uses the tier again once it is
back."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web

from proxy.cache.shared import primary_key
from tests.integration.node import Node, eventually, metric
from tests.redis_server import RedisServer

HOST = "fleet.test"
# Long enough for a loaded test machine, far shorter than the client's patience (CLIENT_S):
# a request that waited on a stopped Redis instead of skipping it would hit the latter.
LOOKUP_S = 2.0
CLIENT_S = 60.0


def origin_app(seen: list[str]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        body = (
            b"infringing bytes"
            if request.path.startswith("/bad")
            else b"body of " + request.path.encode()
        )
        return web.Response(body=body, headers={"Cache-Control": "max-age=300"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


@pytest.fixture
async def fleet(
    origin_server: Callable[[web.Application], Awaitable[str]], tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """Start nodes on the shared tier at `url`; each stopped after the test."""
    started: list[Node] = []

    async def start(origin: str, url: str, *, ready: bool = True, **cache: Any) -> Node:
        settings = {"shared_tier_url": url, "shared_tier_timeout_s": LOOKUP_S,
                    "shared_tier_retry_after_s": 0.2, **cache}  # fmt: skip
        lines = [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
        config = tmp_path / f"node{len(started)}.toml"
        config.write_text(
            "[cache]\n" + "\n".join(lines) + "\n\n[[sites]]\n"
            f'name = "fleet"\nhosts = ["{HOST}"]\norigin = "{origin}"\n'
        )
        node = Node(["--config", str(config), "--workers", "1"])
        started.append(node)
        await node.start(expect_ready=ready)
        return node

    yield start
    for n in started:
        await n.stop()


async def get(node: Node, path: str) -> tuple[int, bytes, str]:
    timeout = aiohttp.ClientTimeout(total=CLIENT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(node.url + path, headers={"Host": HOST}) as r,
    ):
        return r.status, await r.read(), r.headers.get("Cache-Status", "")


async def stored(node: Node, n: int) -> None:
    """Until `node` has written `n` responses to the shared tier."""

    async def done() -> bool:
        return await metric(node, "edgeproxy_shared_tier_stores") >= n

    await eventually(done, timeout_s=40.0)


def in_redis(server: RedisServer, path: str) -> bool:
    with redis.Redis(host="127.0.0.1", port=server.port) as r:
        return bool(r.exists(primary_key((HOST, path.encode()))))


async def gone(server: RedisServer, *paths: str) -> None:
    async def check() -> bool:
        return not any(in_redis(server, p) for p in paths)

    await eventually(check, timeout_s=40.0)


async def test_a_miss_on_node_a_is_a_shared_hit_on_node_b(origin_server, fleet, redis_server):
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    a = await fleet(origin, redis_server.url)
    b = await fleet(origin, redis_server.url)
    status, body, cs = await get(a, "/doc?v=1")
    assert status == 200 and "fwd=miss" in cs
    await stored(a, 1)
    status, got, cs = await get(b, "/doc?v=1")
    assert status == 200 and got == body == b"body of /doc"
    assert cs.startswith("edgeproxy; hit") and cs.endswith("detail=shared")
    assert seen == ["/doc?v=1"]
    assert await metric(b, "edgeproxy_shared_tier_hits") == 1
    assert await metric(b, "edgeproxy_shared_tier_errors") == 0


@pytest.mark.parametrize("kind", ["url", "prefix", "host"])
async def test_a_purge_on_one_node_reaches_what_another_stored(
    origin_server, fleet, redis_server, kind: str
):
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    a = await fleet(origin, redis_server.url)
    b = await fleet(origin, redis_server.url)
    assert (await get(a, "/p/1"))[0] == 200  # stored by A
    assert (await get(b, "/p/2"))[0] == 200  # stored by B, never held by A
    assert (await get(b, "/other"))[0] == 200
    await stored(a, 1)
    await stored(b, 2)
    body = {"url": f"http://{HOST}/p/2", "prefix": f"http://{HOST}/p", "host": HOST}[kind]
    status, _ = await a.admin_json("POST", "/purge", {kind: body})
    assert status == 200
    purged = {"url": ["/p/2"], "prefix": ["/p/1", "/p/2"], "host": ["/p/1", "/p/2", "/other"]}
    await gone(redis_server, *purged[kind])
    c = await fleet(origin, redis_server.url)  # a node with nothing in memory
    for path in ("/p/1", "/p/2", "/other"):
        status, _, cs = await get(c, path)
        assert status == 200
        assert ("fwd=miss" in cs) == (path in purged[kind]), (path, cs)
        assert ("detail=shared" in cs) == (path not in purged[kind]), (path, cs)


async def test_a_listed_digest_is_never_served_from_the_tier(origin_server, fleet, redis_server):
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    a = await fleet(origin, redis_server.url)
    b = await fleet(origin, redis_server.url)
    assert (await get(a, "/bad/1"))[0] == 200
    await stored(a, 1)
    digest = hashlib.sha256(b"infringing bytes").hexdigest()
    entries = [{"id": "d1", "type": "sha256", "value": digest},
               {"id": "p1", "type": "prefix", "value": f"http://{HOST}/listed/"}]  # fmt: skip
    status, _ = await b.admin_json("POST", "/blocklist/entries", {"entries": entries})
    assert status == 200
    status, body, cs = await get(b, "/bad/1")
    assert status == 451 and b"d1" in body and "detail=blocked" in cs
    assert seen == ["/bad/1"]  # refused from the shared copy, not fetched again
    await gone(redis_server, "/bad/1")  # and deleted from the tier for every node
    assert await metric(b, "edgeproxy_shared_tier_hits") == 1
    # Nothing is stored now: the origin's copy is hashed and refused the same way.
    status, body, _ = await get(b, "/bad/1")
    assert status == 451 and b"d1" in body and not in_redis(redis_server, "/bad/1")
    # A prefix entry: what A stores under it is never served by B.
    assert (await get(a, "/listed/x"))[0] == 200
    await stored(a, 2)
    assert (await get(b, "/listed/x"))[0] == 451
    assert seen == ["/bad/1", "/bad/1", "/listed/x"]


async def serves_and_enforces(node: Node, paths: list[str], entry_id: str) -> None:
    """Every path answers 200 (from the origin) and a newly pushed entry is enforced at once."""
    for path in paths:
        status, body, _ = await get(node, path)
        assert status == 200 and body == b"body of " + path.encode()
    listed = paths[0]
    entry = {"id": entry_id, "type": "url", "value": f"http://{HOST}{listed}"}
    status, _ = await node.admin_json("POST", "/blocklist/entries", {"entries": [entry]})
    assert status == 200
    status, body, _ = await get(node, listed)
    assert status == 451 and entry_id.encode() in body


async def recovers(a: Node, b: Node, server: RedisServer, path: str) -> None:
    """The tier is used again: a new object A fetches reaches Redis and B answers it from
    there. A fresh path each try: within `shared_tier_retry_after_s` of its last failure a node
    still skips the tier, and B then keeps its own copy of that path."""
    for i in range(100):
        p = f"{path}/{i}"
        assert (await get(a, p))[0] == 200

        async def there(p: str = p) -> bool:
            return in_redis(server, p)

        try:
            await eventually(there, timeout_s=2.0)
        except TimeoutError:
            continue
        status, _, cs = await get(b, p)
        assert status == 200
        if "detail=shared" in cs:
            return
    raise AssertionError("the shared tier was never used again")


@pytest.mark.parametrize("fault", ["killed", "stopped", "restarted-empty"])
async def test_redis_faults_degrade_service_never_enforcement(
    origin_server, fleet, redis_server, fault: str
):
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    a = await fleet(origin, redis_server.url)
    b = await fleet(origin, redis_server.url)
    assert (await get(a, "/before"))[0] == 200
    await stored(a, 1)
    errors = await metric(a, "edgeproxy_shared_tier_errors")
    pid = redis_server.proc.pid
    if fault == "killed":
        redis_server.kill()
    elif fault == "stopped":
        os.kill(pid, signal.SIGSTOP)
    else:
        redis_server.restart(empty=True)
    try:
        await serves_and_enforces(a, ["/during/1", "/during/2", "/during/3"], "u1")
        if fault == "restarted-empty":
            # B's idle connection died with the old server: B asks again on a new one and
            # misses; never the object the empty server no longer has.
            status, body, cs = await get(b, "/before")
            assert status == 200 and body == b"body of /before" and "detail=shared" not in cs
        else:
            assert await metric(a, "edgeproxy_shared_tier_errors") > errors
            status, _, cs = await get(b, "/before")
            assert status == 200 and "fwd=miss" in cs
    finally:
        if fault == "stopped":
            os.kill(pid, signal.SIGCONT)
    if fault == "killed":
        redis_server.start()
    await recovers(a, b, redis_server, "/after")
    assert (await get(a, "/during/1"))[0] == 451  # still enforced after the reconnection


async def test_redis_down_at_start(origin_server, fleet, tmp_path):
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    server = RedisServer(tmp_path / "later")  # not started yet
    try:
        a = await fleet(origin, server.url)
        b = await fleet(origin, server.url)
        await serves_and_enforces(a, ["/early/1", "/early/2"], "u2")
        assert await metric(a, "edgeproxy_shared_tier_errors") >= 1
        server.start()
        await recovers(a, b, server, "/late")
    finally:
        server.stop()


async def test_password_auth_on_a_real_server(origin_server, fleet, tmp_path):
    """requirepass: the password from `shared_tier_password_file` (or the URL) is sent; a
    node without it serves from the origin and counts the refusal."""
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    server = RedisServer(tmp_path / "auth", password="s3cret-pw").start()
    try:
        secret = tmp_path / "redis-password"
        secret.write_text("s3cret-pw\n")
        bare = f"redis://127.0.0.1:{server.port}/0"
        a = await fleet(origin, bare, shared_tier_password_file=str(secret))
        b = await fleet(origin, server.url)  # the password in the URL's userinfo
        wrong = await fleet(origin, bare)
        assert (await get(a, "/auth"))[0] == 200
        await stored(a, 1)
        assert "detail=shared" in (await get(b, "/auth"))[2]
        status, _, cs = await get(wrong, "/auth")
        assert status == 200 and "fwd=miss" in cs
        assert await metric(wrong, "edgeproxy_shared_tier_errors") >= 1
        assert seen == ["/auth", "/auth"]
    finally:
        server.stop()
