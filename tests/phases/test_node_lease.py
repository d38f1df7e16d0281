"""Coalescing across a node's workers (issue 11): a worker that takes a key's lease reads the
node tier once more before it fetches. Another worker may have stored the key and given its
lease back between this request's lookup and its lease: a client's next request, on a new
connection that the balanced accept hands to the other worker, can arrive before the first
worker's commit. Seen in CI as a second origin request for a key already stored."""

from __future__ import annotations

from pathlib import Path

from proxy.cache.node import prepare
from proxy.origin.memory import MemoryResponse
from tests.phases.client import fetch

FRESH = [(b"Cache-Control", b"max-age=60")]
MiB = 1 << 20


async def two_workers(make_worker, tmp_path: Path):  # type: ignore[no-untyped-def]
    def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        return MemoryResponse(200, FRESH, b"stored once")

    path = tmp_path / "node-cache"
    prepare(path, 64 * MiB)
    tier = {"cache__node_tier_bytes": 64 * MiB, "cache__node_tier_path": str(path)}
    return await make_worker(handler, **tier), await make_worker(handler, **tier)


async def test_a_key_stored_between_the_lookup_and_the_lease_is_not_fetched_again(
    make_worker, tmp_path: Path
) -> None:
    a, b = await two_workers(make_worker, tmp_path)
    a_node, b_node = a.parts.node, b.parts.node
    assert a_node is not None and b_node is not None
    a_node._schedule = lambda: None  # A's store and lease release wait: nothing commits yet
    first = await fetch(a, target="/q")
    assert first.status == 200 and a_node._puts and a_node._releases
    take_lease = b_node.lease

    def lease_after_a_commits(primary):  # type: ignore[no-untyped-def]
        a_node.flush()  # A commits and gives its lease back after B's lookup missed
        return take_lease(primary)

    b_node.lease = lease_after_a_commits  # type: ignore[method-assign]
    second = await fetch(b, target="/q")
    assert (second.status, second.body) == (200, b"stored once")
    assert len(a.origin.requests) + len(b.origin.requests) == 1  # one origin request
    assert b.parts.stats.node_coalesced == 1
