"""Issue 10, upstream hygiene: "Origin response heads over configurable limits (total size, field
count, field size) give 502, never a cached or relayed response." What a client and an operator
see, through an edge in front of a raw origin on 127.0.0.1: the 502 and its Cache-Status, no
byte of the refused head, a fresh fetch once the origin is fixed, and the failure counted by
kind on the admin /metrics page of a running node."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from proxy.metrics import ORIGIN_FAILURES
from tests.admin.test_metrics import scrape
from tests.integration.conftest import raw_request
from tests.integration.helpers_cache import RawOrigin, get
from tests.integration.node import Node

PAD = b"X-Pad-Secret: leaked-if-you-see-this\r\n"
CACHEABLE = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"


class FixableOrigin(RawOrigin):
    """Answers with a head over the edge's limits until `fixed`; then with a small one."""

    def __init__(self, bad: list[bytes | float] | Iterator[bytes]) -> None:
        super().__init__(self._answer)
        self.bad = bad
        self.fixed = False

    def _answer(self, head: bytes) -> list[bytes | float] | Iterator[bytes]:
        if self.fixed:
            return [CACHEABLE + b"Content-Length: 4\r\n\r\ngood"]
        return self.bad


def too_many_fields(count: int) -> list[bytes | float]:
    return [CACHEABLE + PAD * count + b"Content-Length: 3\r\n\r\nbad"]


def one_large_field(size: int) -> list[bytes | float]:
    return [CACHEABLE + b"X-Pad-Large: " + b"s" * size + b"\r\nContent-Length: 3\r\n\r\nbad"]


def endless_head() -> Iterator[bytes]:
    yield CACHEABLE
    for i in itertools.count():
        yield b"X-Pad-%d: %b\r\n" % (i, b"p" * 64)


async def assert_refused_then_fresh(edge_url: str, port: int, origin: FixableOrigin) -> None:
    r = await get(edge_url + "/page")
    assert r.status == 502, r
    assert r.cache_status == "edgeproxy; fwd=miss; detail=origin-protocol"
    assert r.headers["Cache-Control"] == "no-store"
    assert b"bad" not in r.body and not any(k.startswith("X-Pad") for k in r.headers)
    # The exact bytes the client gets hold nothing of the refused head either.
    answer = await raw_request(
        port, b"GET /page HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 502 ") and b"X-Pad" not in answer, answer
    asked = len(origin.heads)
    origin.fixed = True
    r = await get(edge_url + "/page")
    assert (r.status, r.body) == (200, b"good")
    assert "fwd=miss" in r.cache_status and "stored" in r.cache_status, r.cache_status
    assert len(origin.heads) == asked + 1  # fetched fresh: nothing was kept of the bad answer
    r = await get(edge_url + "/page")
    assert r.cache_status.startswith("edgeproxy; hit") and len(origin.heads) == asked + 1


@pytest.mark.parametrize(
    ("bad", "limit"),
    [
        (too_many_fields(40), {"origin__max_response_header_count": 32}),
        (one_large_field(2000), {"origin__max_response_header_field_bytes": 1024}),
        (too_many_fields(60), {"origin__max_response_header_bytes": 1024}),  # 34 bytes a field
    ],
    ids=["field-count", "field-size", "total"],
)
async def test_head_over_a_limit_is_502_never_stored_or_relayed(
    make_edge, bad: list[bytes | float], limit: dict[str, int]
) -> None:
    origin = FixableOrigin(bad)
    edge = await make_edge(await origin.start(), **limit)
    try:
        await assert_refused_then_fresh(edge.url, edge.server.port, origin)
        protocol = ORIGIN_FAILURES.index("protocol")
        assert edge.stats.origin_failures[0][protocol] == 2
        assert edge.pipeline.memory.stats().objects == 1  # the good answer only
    finally:
        await origin.close()


async def test_endless_head_is_502_not_a_first_byte_timeout(make_edge) -> None:
    origin = FixableOrigin(endless_head())
    edge = await make_edge(await origin.start(), origin__first_byte_timeout_s=30.0)
    try:
        r = await get(edge.url + "/page")
        assert r.status == 502 and r.cache_status.endswith("detail=origin-protocol")
        origin.fixed = True
        r = await get(edge.url + "/page")
        assert (r.status, r.body) == (200, b"good")
    finally:
        await origin.close()


async def test_node_counts_refused_heads_as_protocol_failures(tmp_path: Path) -> None:
    origin = FixableOrigin(too_many_fields(40))
    url = await origin.start()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[[sites]]\nname = "a"\nhosts = ["a.test"]\norigin = "{url}"\n\n'
        "[origin]\nmax_response_header_count = 32\n"
    )
    node = Node(["--config", str(cfg), "--workers", "1"])
    try:
        await node.start()
        before = await scrape(node)
        async with aiohttp.ClientSession() as s:
            async with s.get(node.url + "/page", headers={"Host": "a.test"}) as r:
                assert r.status == 502
                assert r.headers["Cache-Status"].endswith("detail=origin-protocol")
        after = await scrape(node)
        delta = after.value("edgeproxy_origin_errors_total", site="a", kind="protocol")
        delta -= before.value("edgeproxy_origin_errors_total", site="a", kind="protocol")
        assert delta == 1
        other = after.value("edgeproxy_origin_errors_total", site="a") - before.value(
            "edgeproxy_origin_errors_total", site="a"
        )
        assert other == 1  # counted once, as protocol and nothing else
    finally:
        await node.stop()
        await origin.close()
