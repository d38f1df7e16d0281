"""spool at its edges (found by the phase tests): a known length that exactly fits the budget
is spooled, and a body past the limit ends the spool whether the origin client returns past
the limit (sockets) or exactly at it (in memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proxy.origin.memory import MemoryResponse, MemoryUpstreamResponse
from proxy.phases.spool import BodyBudget, spool
from tests.phases.client import fetch


async def test_a_known_length_that_exactly_fits_the_budget_is_spooled() -> None:
    budget = BodyBudget(5)
    up = MemoryUpstreamResponse(MemoryResponse(200, [(b"Content-Length", b"5")], b"hello"))
    spooled = await spool(up, 1 << 20, budget)  # raises OverBudget: take(6)
    assert spooled.complete and spooled.body == b"hello" and budget.used == 5


async def test_a_body_that_exactly_fits_the_budget_is_served(make_worker) -> None:
    def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        return MemoryResponse(
            200, [(b"Content-Length", b"5"), (b"Cache-Control", b"max-age=60")], b"hello"
        )

    w = await make_worker(handler, cache__inflight_body_bytes=5)
    r = await fetch(w)
    assert r.status == 200 and r.body == b"hello", (r.status, r.cache_status)


async def chunks(data: bytes, n: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i : i + n]


@pytest.mark.timeout(5)
async def test_a_memory_body_longer_than_the_limit_ends_the_spool() -> None:
    budget = BodyBudget(1 << 20)
    up = MemoryUpstreamResponse(MemoryResponse(200, [], chunks(b"x" * 1000, 100)))
    spooled = await spool(up, 300, budget)  # never returns: take(0)/read_up_to(0) forever
    assert not spooled.complete and len(spooled.body) >= 300


@pytest.mark.timeout(5)
async def test_a_storable_body_past_max_object_bytes_streams_through(make_worker) -> None:
    def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        return MemoryResponse(200, [(b"Cache-Control", b"max-age=60")], chunks(b"x" * 4000, 500))

    w = await make_worker(handler, cache__max_object_bytes=1000)
    r = await fetch(w)  # the worker's loop spins in spool (_keep), the test times out
    assert r.status == 200 and r.body == b"x" * 4000 and "detail=too-large" in r.cache_status
