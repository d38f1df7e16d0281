"""Issue 16 (cache-tests `headers-store-Content-Encoding`): a body in a content coding the edge
cannot remove is delivered and stored while the blocklist lists no body digest (it could match
none), and refused (502) the moment one is listed: stored copies leave the cache in the step
that swaps the list in, and a listed body never gets through. Issue 10's refusals of corrupt,
truncated and over-limit bodies hold whatever is listed (test_issue10_request_path.py)."""

from __future__ import annotations

import hashlib

import pytest

from proxy.blocklist.enforce import UNJUDGED_DIGEST
from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from proxy.cache.node import prepare
from tests.integration.helpers_cache import Canned, get, scripted_edge

ODD = b"\x1f\x9d\x90 a body in a coding this edge cannot remove"


def sha256_entry(body: bytes, id_: str = "d-1") -> BlockEntry:
    return BlockEntry(id=id_, type=EntryType.SHA256, value=hashlib.sha256(body).hexdigest())


async def odd_edge(origin_server, make_edge, cc: str = "max-age=600"):  # type: ignore[no-untyped-def]
    origin, edge = await scripted_edge(origin_server, make_edge)
    origin.on(
        "/odd", Canned(headers=[("Content-Encoding", "x-odd"), ("Cache-Control", cc)], body=ODD)
    )
    return origin, edge


async def test_unknown_coding_stored_while_no_digest_is_listed(origin_server, make_edge) -> None:
    origin, edge = await odd_edge(origin_server, make_edge)
    edge.block(BlockEntry(id="u-1", type=EntryType.URL, value="http://127.0.0.1/elsewhere"))
    r = await get(edge.url + "/odd")
    assert r.status == 200 and r.body == ODD and r.headers["Content-Encoding"] == "x-odd"
    r = await get(edge.url + "/odd")
    assert r.status == 200 and "hit" in r.cache_status and r.headers["Content-Encoding"] == "x-odd"
    assert origin.count("/odd") == 1
    assert edge.stats.undecodable_bodies == 0


@pytest.mark.parametrize("listed", ["other", "raw"], ids=["other-digest", "its-raw-digest"])
async def test_stored_unjudged_body_leaves_when_a_digest_is_listed(
    origin_server, make_edge, listed: str
) -> None:
    origin, edge = await odd_edge(origin_server, make_edge)
    assert (await get(edge.url + "/odd")).status == 200
    assert edge.pipeline.memory.stats().objects == 1
    before = edge.stats.purged_by_blocklist
    edge.block(sha256_entry(b"something else" if listed == "other" else ODD))
    # Gone in the swap's own step, before any request or purge task runs.
    assert edge.pipeline.memory.stats().objects == 0
    assert edge.stats.purged_by_blocklist == before + 1
    for _ in range(2):
        r = await get(edge.url + "/odd")
        assert r.status == (502 if listed == "other" else 451) and ODD not in r.body
    assert edge.pipeline.memory.stats().objects == 0


async def test_unjudged_entry_in_hand_is_not_delivered_after_the_swap(
    origin_server, make_edge
) -> None:
    """An entry found before the purge (here: put back by hand, as a purge step not yet run
    would leave it) is dropped at lookup and fetched anew: 502."""
    origin, edge = await odd_edge(origin_server, make_edge)
    assert (await get(edge.url + "/odd")).status == 200
    entry = next(iter(edge.pipeline.cache.entries()))
    assert entry.sha256 == UNJUDGED_DIGEST
    edge.block(sha256_entry(b"something else"))
    entry.alive = True
    edge.pipeline.memory.put(entry)
    r = await get(edge.url + "/odd")
    assert r.status == 502 and ODD not in r.body
    assert origin.count("/odd") == 2


async def test_unknown_coding_pass_through_follows_the_same_rule(origin_server, make_edge) -> None:
    origin, edge = await odd_edge(origin_server, make_edge, cc="no-store")
    r = await get(edge.url + "/odd")
    assert r.status == 200 and r.body == ODD
    edge.block(sha256_entry(b"something else"))
    r = await get(edge.url + "/odd")
    assert r.status == 502 and ODD not in r.body
    assert edge.stats.undecodable_bodies == 1


async def test_the_node_tier_copy_leaves_too(origin_server, make_edge, tmp_path) -> None:
    """The node tier (shared by a node's workers) is purged by the same digest in the swap's
    step; a copy another worker still on the old list stores after that is dropped when it is
    found, never delivered. (Its records prove their body against their sha256 too, which
    an unjudged one cannot: belt and braces.)"""
    prepare(tmp_path / "node", 64 << 20)  # as the supervisor does before workers start
    origin, edge = await scripted_edge(
        origin_server,
        make_edge,
        cache__node_tier_bytes=64 << 20,
        cache__node_tier_path=str(tmp_path / "node"),
    )
    origin.on(
        "/odd",
        Canned(headers=[("Content-Encoding", "x-odd"), ("Cache-Control", "max-age=600")], body=ODD),
    )
    assert (await get(edge.url + "/odd")).status == 200
    cache = edge.pipeline.cache
    node = cache.node
    assert node is not None
    entry = next(iter(cache.entries()))
    edge.pipeline.memory.remove(entry)  # as a worker that has it in the node tier only
    edge.block(sha256_entry(b"something else"))
    r = await get(edge.url + "/odd")
    assert r.status == 502 and ODD not in r.body
    assert origin.count("/odd") == 2
    node.put(entry)  # stored by a worker still on the old list
    r = await get(edge.url + "/odd")
    assert r.status == 502 and ODD not in r.body
    assert origin.count("/odd") == 3
