"""spool: origin bodies held before delivery within the worker's byte budget. `BodyBudget` and
`spool` over MemoryOrigin responses (what is taken, in which steps, what is given back), then
through the worker: 503 + Retry-After when the budget is spent, and the budget whole again after
every kind of exchange."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from proxy.blocklist.snapshot import Snapshot
from proxy.origin import OriginError, OriginFailure
from proxy.origin.memory import MemoryResponse, MemoryUpstreamResponse
from proxy.phases.spool import FIRST_STEP_BYTES, BodyBudget, OverBudget, spool
from tests.phases.client import fetch, send, until


class Recorded(BodyBudget):
    """A budget that remembers every reservation it granted."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.takes: list[int] = []

    def take(self, n: int) -> None:
        super().take(n)
        self.takes.append(n)


async def in_chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def response(body: bytes, *, known: bool, chunk: int = 64 << 10) -> MemoryUpstreamResponse:
    """An origin response: Content-Length framed (`known`), or chunks of unknown total."""
    if known:
        return MemoryUpstreamResponse(
            MemoryResponse(200, [(b"Content-Length", str(len(body)).encode())], body)
        )
    return MemoryUpstreamResponse(MemoryResponse(200, [], in_chunks(body, chunk)))


BIG = bytes(range(256)) * 4096  # 1 MiB


class Arrived(MemoryUpstreamResponse):
    """A response whose whole body has arrived, as an llhttp client's small answer has:
    `body_if_whole` hands it over at once (spool's shortcut)."""

    def body_if_whole(self, limit_bytes: int) -> bytes | None:
        body = self._body
        if not isinstance(body, bytes) or len(body) > limit_bytes:
            return None
        self._body = None
        return body


# -- BodyBudget and spool ----------------------------------------------------------------------


def test_the_budget_refuses_what_it_cannot_cover_and_takes_nothing() -> None:
    budget = BodyBudget(10)
    budget.take(6)
    with pytest.raises(OverBudget):
        budget.take(5)
    assert budget.used == 6
    budget.take(4)
    budget.give_back(10)
    assert budget.used == 0


async def test_a_known_length_is_reserved_once_and_held_exactly() -> None:
    budget = Recorded(1 << 30)
    spooled = await spool(response(BIG, known=True), 8 << 20, budget)
    assert spooled.complete and spooled.body == BIG
    assert len(budget.takes) == 1  # one reservation for the whole declared length
    assert spooled.held == budget.used == len(BIG)
    spooled.release()
    assert budget.used == 0


async def test_an_unknown_length_is_read_in_doubling_steps() -> None:
    body = BIG + b"!"  # 1 MiB + 1: the third step finds the end
    budget = Recorded(1 << 30)
    spooled = await spool(response(body, known=False), 8 << 20, budget)
    assert spooled.complete and spooled.body == body
    assert budget.takes == [FIRST_STEP_BYTES, 2 * FIRST_STEP_BYTES, 4 * FIRST_STEP_BYTES]
    assert spooled.held == budget.used == len(body)  # what did not arrive was given back
    spooled.release()
    assert budget.used == 0


async def test_a_step_never_reserves_past_the_limit() -> None:
    body = b"x" * (300 << 10)
    budget = Recorded(1 << 30)
    spooled = await spool(response(body, known=False), 400 << 10, budget)
    assert spooled.complete and spooled.body == body
    assert budget.takes == [FIRST_STEP_BYTES, (400 << 10) - FIRST_STEP_BYTES]
    assert budget.used == len(body)
    spooled.release()


@pytest.mark.parametrize("known", [True, False], ids=["known-length", "unknown-length"])
async def test_over_the_budget_raises_and_gives_back_what_it_took(known: bool) -> None:
    budget = Recorded(300 << 10)
    budget.take(10)  # someone else's bytes stay taken
    up = response(BIG, known=known)
    with pytest.raises(OverBudget):
        await spool(up, 8 << 20, budget)
    assert budget.used == 10
    # Known length: refused before a byte is read; unknown: after the first step was read.
    assert budget.takes[1:] == ([] if known else [FIRST_STEP_BYTES])


async def test_a_spooled_released_twice_gives_back_once() -> None:
    budget = BodyBudget(1 << 20)
    budget.take(7)
    spooled = await spool(response(b"hello", known=True), 1 << 20, budget)
    assert budget.used == 12
    spooled.release()
    spooled.release()
    assert budget.used == 7 and spooled.held == 0


async def test_a_prefix_is_the_callers_and_the_rest_is_read_after_it() -> None:
    """deliver's spool goes on from what upstream_response read (`prefix`, held by the
    caller): the body is the whole, the Spooled holds only the new bytes."""
    for known in (True, False):
        budget = BodyBudget(1 << 20)
        up = response(b"hello world", known=known)
        head, complete = await up.read_up_to(5)
        assert (head, complete) == (b"hello", False)
        budget.take(len(head))  # the caller's
        spooled = await spool(up, 1 << 20, budget, prefix=head)
        assert spooled.complete and spooled.body == b"hello world"
        assert spooled.held == 6 and budget.used == 11
        spooled.release()
        assert budget.used == 5


async def test_a_prefix_past_the_limit_reads_nothing_more() -> None:
    budget = Recorded(1 << 20)
    up = response(b"hello world", known=False, chunk=3)
    head, _ = await up.read_up_to(6)
    spooled = await spool(up, 4, budget, prefix=head)
    assert not spooled.complete and spooled.body == b"hello " and spooled.held == 0
    assert budget.takes == [0] and budget.used == 0
    assert b"".join([c async for c in up.chunks()]) == b"world"  # the rest is still there


# -- through the worker ------------------------------------------------------------------------


async def test_a_spent_budget_is_503_with_retry_after(make_worker) -> None:
    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"first "
        await release.wait()
        yield b"answer"

    def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        cc = [(b"Cache-Control", b"no-store")]
        if path_query == b"/one":
            return MemoryResponse(200, cc, held())
        return MemoryResponse(200, cc, b"second answer")

    w = await make_worker(handler, cache__inflight_body_bytes=300 << 10)
    budget = w.parts.pipeline.fetcher.budget
    first = send(w, target="/one")
    await until(lambda: budget.used >= FIRST_STEP_BYTES)  # its first step is reserved
    r = await fetch(w, target="/two")
    assert r.status == 503 and r.header("retry-after") == "5"
    assert r.cache_status == "edgeproxy; fwd=miss; detail=over-budget"
    assert b"second answer" not in r.body
    assert w.parts.stats.inflight_refused == 1
    release.set()
    one = await first.reply()
    assert one.status == 200 and one.body == b"first answer"
    assert budget.used == 0
    again = await fetch(w, target="/two")
    assert again.status == 200 and again.body == b"second answer"
    assert budget.used == 0 and len(w.origin.requests) == 3


@pytest.mark.parametrize("cc", [b"max-age=60", b"no-store"], ids=["storable", "not-stored"])
async def test_one_body_larger_than_the_budget_is_503(make_worker, cc: bytes) -> None:
    body = b"x" * 1000

    def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        fields = [(b"Cache-Control", cc), (b"Content-Length", b"1000")]
        return MemoryResponse(200, fields, body)

    w = await make_worker(handler, cache__inflight_body_bytes=600)
    r = await fetch(w)
    assert r.status == 503 and "detail=over-budget" in r.cache_status and body not in r.body
    assert w.parts.pipeline.fetcher.budget.used == 0 and w.parts.memory.stats().objects == 0


LISTED = b"listed bytes"


def every_kind(method, path_query, headers, data):  # type: ignore[no-untyped-def]
    stored = [(b"Cache-Control", b"max-age=60")]
    if path_query == b"/down":
        raise OriginError(OriginFailure.CONNECT, "refused")
    if path_query == b"/listed":
        return MemoryResponse(200, stored, LISTED)
    if path_query == b"/listed-unstored":
        return MemoryResponse(200, [(b"Cache-Control", b"no-store")], in_chunks(LISTED, 4))
    if path_query == b"/error":
        return MemoryResponse(500, [], b"oops")
    if method == "POST":
        return MemoryResponse(201, [], b"created")
    return MemoryResponse(200, stored, in_chunks(b"hello" * 1000, 1000))


@pytest.mark.parametrize(
    ("requests", "status", "member"),
    [
        ([("GET", "/a")], 200, "fwd=miss"),
        ([("GET", "/a"), ("GET", "/a")], 200, "hit"),
        ([("POST", "/a")], 201, "fwd=bypass"),
        ([("GET", "/blocked")], 451, ""),
        ([("GET", "/listed")], 451, ""),
        ([("GET", "/listed-unstored")], 451, ""),
        ([("GET", "/down")], 502, "detail=origin-connect"),
        ([("GET", "/error")], 500, "fwd=miss; fwd-status=500"),
    ],
    ids=["miss", "hit", "pass", "451-url", "451-digest", "451-digest-streamed", "502", "500"],
)
async def test_the_budget_is_whole_after_every_kind_of_exchange(
    make_worker, requests: list[tuple[str, str]], status: int, member: str
) -> None:
    w = await make_worker(every_kind, cache__inflight_body_bytes=4 << 20)
    entries = [
        BlockEntry(id="u1", type=EntryType.URL, value="http://edge.test/blocked"),
        BlockEntry(id="d1", type=EntryType.SHA256, value=hashlib.sha256(LISTED).hexdigest()),
    ]
    w.parts.pipeline.enforcer.apply(Snapshot.compile(entries, 1, 0.0))
    budget = w.parts.pipeline.fetcher.budget
    for method, target in requests:
        r = await fetch(w, method, target, body=b"form" if method == "POST" else b"")
        assert budget.used == 0, (method, target)
    assert r.status == status and member in r.cache_status, r.cache_status
    if status == 451:
        assert LISTED not in r.body


async def test_a_body_that_arrived_whole_is_held_as_the_steps_would_hold_it() -> None:
    """Issue 18: no read coroutine for a body all arrived; the budget holds what it holds
    (given back by release), a prefix comes first, and over the limit the steps read it."""
    budget = BodyBudget(10_000)
    up = Arrived(MemoryResponse(200, [(b"Content-Length", b"1000")], bytes(1000)))
    spooled = await spool(up, 4096, budget)
    assert spooled.complete and spooled.body == bytes(1000)
    assert spooled.held == budget.used == 1000
    spooled.release()
    assert budget.used == 0
    up = Arrived(MemoryResponse(200, [], b"rest"))
    spooled = await spool(up, 4096, budget, prefix=b"pre-")
    assert spooled.complete and spooled.body == b"pre-rest" and spooled.held == 4
    spooled.release()
    up = Arrived(MemoryResponse(200, [], bytes(5000)))
    spooled = await spool(up, 4096, budget)  # over the limit: read in steps, not complete
    assert not spooled.complete and len(spooled.body) >= 4096
    spooled.release()
    assert budget.used == 0


async def test_a_body_that_arrived_whole_over_the_budget_ends_the_answer() -> None:
    budget = BodyBudget(100)
    up = Arrived(MemoryResponse(200, [], bytes(1000)))
    with pytest.raises(OverBudget):
        await spool(up, 4096, budget)
    assert budget.used == 0
