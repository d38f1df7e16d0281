"""A 304 without Date freshens the revalidated entry (RFC 9110 §6.6.1), found by the phase tests."""

from __future__ import annotations

from proxy.origin.memory import MemoryResponse
from tests.phases.client import fetch


async def test_a_304_without_date_freshens_the_stored_entry(make_worker) -> None:
    def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        fields = [(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"')]  # no Date
        if headers.get("If-None-Match") == '"v1"':
            return MemoryResponse(304, fields)
        return MemoryResponse(200, fields, b"hello")

    w = await make_worker(handler)
    w.clock.now = 1_000_000.0
    assert "stored; ttl=60" in (await fetch(w)).cache_status
    w.clock.advance(70)
    revalidated = await fetch(w)
    assert "fwd=stale; fwd-status=304; stored; ttl=60" in revalidated.cache_status, (
        revalidated.cache_status
    )
    hit = await fetch(w)
    assert hit.cache_status.endswith("hit; ttl=60") and len(w.origin.requests) == 2, (
        hit.cache_status,
        len(w.origin.requests),
    )
