"""A node configured for longer request targets (`limits.max_request_line_bytes` above its
default of 8192) serves, caches, reads back from its node tier and purges them by URL like any
other. The canonicaliser used to refuse every target over 8192 bytes wherever it ran: raising
the limit only moved the 414 from the front to admit, and the node tier's reads and the purge
API would have refused such URLs too. The limit may be raised to the ceiling the canonicaliser
keeps (64 KiB), not past it."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from proxy.rfc.target import MAX_TARGET_BYTES
from tests.integration.node import Node, metric

HOST = "long.test"
LONG = "/long/" + "a" * 12_000  # over the default limit, under the one configured here


def origin_app(seen: list[str]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(body=b"long body", headers={"Cache-Control": "max-age=300"})

    app = web.Application(handler_args={"max_line_size": 100_000})
    app.router.add_get("/{tail:.*}", handler)
    return app


@pytest.fixture
async def node(origin_server, tmp_path):
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[limits]\nmax_request_line_bytes = 20000\n\n[[sites]]\nname = "l"\nhosts = ["{HOST}"]\n'
        f'origin = "{origin}"\n'
    )
    n = Node(["--config", str(cfg), "--workers", "2", "--node-tier-bytes", str(64 << 20)])
    await n.start()
    n.seen = seen  # type: ignore[attr-defined]
    yield n
    await n.stop()


async def get(url: str) -> tuple[int, str]:
    """On a new connection each time: the workers take turns."""
    conn = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=conn, max_line_size=100_000) as s,
        s.get(url, headers={"Host": HOST}) as r,
    ):
        await r.read()
        return r.status, r.headers.get("Cache-Status", "")


async def test_a_long_target_is_cached_read_back_and_purged(node: Node) -> None:
    status, cs = await get(node.url + LONG)
    assert status == 200 and "fwd=miss" in cs, cs
    answers = [await get(node.url + LONG) for _ in range(6)]
    assert all(status == 200 for status, _ in answers), answers
    assert any("detail=node" in cs for _, cs in answers), answers  # the other worker's read
    assert node.seen == [LONG]  # type: ignore[attr-defined]
    assert await metric(node, "edgeproxy_node_tier_objects") == 1
    status, body = await node.admin_json("POST", "/purge", {"url": f"http://{HOST}{LONG}"})
    assert status == 200 and body["purged"] >= 1, body
    assert await metric(node, "edgeproxy_node_tier_objects") == 0
    status, cs = await get(node.url + LONG)
    assert status == 200 and "fwd=miss" in cs, cs


async def test_a_long_url_is_listed_by_its_exact_url_and_refused(node: Node) -> None:
    """A takedown can name any URL the edge serves: an exact-URL entry of 12,000+ characters
    is taken (it was refused over 8,192) and the URL answers 451 from then on, on every
    worker, while its neighbour does not."""
    assert (await get(node.url + LONG))[0] == 200
    status, body = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {
            "entries": [
                {
                    "id": "long-1",
                    "type": "url",
                    "value": f"http://{HOST}{LONG}",
                    "notice": "N-long",
                    "reason": "test",
                }
            ]
        },
    )
    assert status == 200, body
    answers = [await get(node.url + LONG) for _ in range(4)]  # both workers
    assert all(status == 451 for status, _ in answers), answers
    assert (await get(node.url + LONG + "b"))[0] == 200


async def test_over_the_configured_limit_is_414(node: Node) -> None:
    status, _ = await get(node.url + "/" + "b" * 21_000)
    assert status == 414


def test_the_limit_cannot_pass_the_canonicalisers_ceiling() -> None:
    from proxy.front.limits import FrontLimits

    FrontLimits(max_request_line_bytes=MAX_TARGET_BYTES)
    with pytest.raises(ValueError, match="max_request_line_bytes may be at most 65536"):
        FrontLimits(max_request_line_bytes=MAX_TARGET_BYTES + 1)
