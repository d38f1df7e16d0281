"""route: what each request gets from the outcome of the fetch it led or followed, driven
through the worker (MemoryOrigin handlers hold the leader on an asyncio.Event). Asserted as a
client sees it (status, Cache-Status, body), as the origin saw it (how many requests, which
validators), and as `route` decided it (a spy on `Fetcher.route` records each Next)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from proxy.blocklist.snapshot import Snapshot
from proxy.context import Next
from proxy.metrics import R_INDEX, Result
from proxy.origin import OriginError, OriginFailure
from proxy.origin.memory import MemoryResponse
from proxy.phases.fetch import Fetcher
from proxy.rfc.dates import format_http_date
from tests.phases.client import Reply, fetch, send, until


@dataclass
class Route:
    step: Next
    leader: bool
    fwd: bytes


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> list[Route]:
    """Each decision of `Fetcher.route` (patched before a worker binds it)."""
    seen: list[Route] = []
    real = Fetcher.route

    def spy(self, ctx):  # type: ignore[no-untyped-def]
        step = real(self, ctx)
        seen.append(Route(step, ctx.leader, ctx.fwd))
        return step

    monkeypatch.setattr(Fetcher, "route", spy)
    return seen


def result_count(w, result: Result) -> int:  # type: ignore[no-untyped-def]
    """Exchanges of site 0 logged with `result` (any method)."""
    return sum(by_method[R_INDEX[result]] for by_method in w.parts.stats.requests[0])


def list_digest(w, body: bytes, entry_id: str = "d1") -> None:  # type: ignore[no-untyped-def]
    listed = BlockEntry(id=entry_id, type=EntryType.SHA256, value=hashlib.sha256(body).hexdigest())
    w.parts.pipeline.enforcer.apply(Snapshot.compile([listed], 1, 0.0))


async def gathered(exchanges) -> list[Reply]:  # type: ignore[no-untyped-def]
    return list(await asyncio.gather(*(x.reply() for x in exchanges)))


# -- coalescing ---------------------------------------------------------------------------------


async def test_concurrent_misses_make_one_origin_request(make_worker, routes) -> None:
    release = asyncio.Event()

    async def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        await release.wait()
        return MemoryResponse(200, [(b"Cache-Control", b"max-age=60")], b"hello")

    w = await make_worker(handler)
    n = 5
    clients = [send(w) for _ in range(n)]
    await until(lambda: w.parts.stats.coalesced == n - 1)  # the leader's request is held
    assert len(w.origin.requests) == 1
    release.set()
    replies = await gathered(clients)
    assert [(r.status, r.body) for r in replies] == [(200, b"hello")] * n
    statuses = sorted(r.cache_status for r in replies)
    leader = "edgeproxy; fwd=miss; fwd-status=200; stored; ttl=60"
    assert statuses == [leader] + [leader + "; collapsed"] * (n - 1)
    assert Counter((r.step, r.leader) for r in routes) == {
        (Next.DELIVER, True): 1,
        (Next.DELIVER, False): n - 1,
    }
    assert len(w.origin.requests) == 1


async def test_followers_of_an_unstored_answer_fetch_for_themselves(make_worker, routes) -> None:
    """The leader claims the open response and streams it; each follower gets PASS and its
    own origin request (fwd=uri-miss), answered while the leader's body is still coming."""
    release = asyncio.Event()
    rest = asyncio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        yield b"lead"
        await rest.wait()
        yield b"er"

    async def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        cc = [(b"Cache-Control", b"no-store")]
        if len(w.origin.requests) == 1:
            await release.wait()
            return MemoryResponse(200, cc, held_body())
        return MemoryResponse(200, cc, b"follower")

    w = await make_worker(handler)
    leader, *followers = [send(w) for _ in range(3)]
    await until(lambda: w.parts.stats.coalesced == 2)
    release.set()
    replies = await gathered(followers)
    assert not leader.done()  # still streaming its own body
    for r in replies:
        assert r.status == 200 and r.body == b"follower"
        assert r.cache_status == "edgeproxy; fwd=uri-miss; fwd-status=200"
    rest.set()
    first = await leader.reply()
    assert first.body == b"leader"
    assert first.cache_status == "edgeproxy; fwd=miss; fwd-status=200; detail=no-store"
    assert Counter((r.step, r.leader, r.fwd) for r in routes) == {
        (Next.STREAM, True, b"miss"): 1,
        (Next.PASS, False, b"uri-miss"): 2,
    }
    assert len(w.origin.requests) == 3
    assert w.parts.memory.stats().objects == 0


def by_language(release: asyncio.Event, vary: list[bytes]):  # type: ignore[no-untyped-def]
    """Answers in the request's Accept-Language; the first request waits for `release`. The
    n-th response varies on `vary[n]` (the last one thereafter)."""
    count = 0

    async def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        nonlocal count
        this = vary[min(count, len(vary) - 1)]
        count += 1
        if count == 1:
            await release.wait()
        lang = headers.get("Accept-Language", "none")
        enc = headers.get("Accept-Encoding", "none")
        fields = [(b"Cache-Control", b"max-age=60"), (b"Vary", this)]
        return MemoryResponse(200, fields, f"{lang}/{enc}".encode())

    return handler


async def test_a_follower_differing_in_a_varied_field_fetches_its_own_variant(
    make_worker, routes
) -> None:
    release = asyncio.Event()
    w = await make_worker(by_language(release, [b"Accept-Language"]))
    langs = ["en", "de", "en", "de"]
    clients = [send(w, headers=[("Accept-Language", lang)]) for lang in langs]
    await until(lambda: w.parts.stats.coalesced == 3)
    release.set()
    replies = await gathered(clients)
    assert [r.body for r in replies] == [b"en/none", b"de/none", b"en/none", b"de/none"]
    assert [q.headers.get("Accept-Language") for q in w.origin.requests] == ["en", "de"]
    # Both de followers asked for their own variant: one fetch, which they share.
    steps = [r.step for r in routes]
    assert steps.count(Next.MISS) == 2 and steps.count(Next.DELIVER) == 4
    assert all("fwd=miss; fwd-status=200; stored" in r.cache_status for r in replies)
    for lang in ("en", "de"):
        hit = await fetch(w, headers=[("Accept-Language", lang)])
        assert hit.body == f"{lang}/none".encode() and "hit" in hit.cache_status
    assert len(w.origin.requests) == 2


async def test_a_follower_fetches_its_own_variant_once_then_passes(make_worker, routes) -> None:
    """Its own variant's response varies on one more field it differs in: no third round of
    coalescing, the request passes (fwd=miss) and gets an answer of its own."""
    release = asyncio.Event()
    both = b"Accept-Language, Accept-Encoding"
    w = await make_worker(by_language(release, [b"Accept-Language", both]))
    heads = [("en", "gzip"), ("de", "gzip"), ("de", "br")]
    clients = [
        send(w, headers=[("Accept-Language", lang), ("Accept-Encoding", enc)])
        for lang, enc in heads
    ]
    await until(lambda: w.parts.stats.coalesced == 2)
    release.set()
    replies = await gathered(clients)
    assert [r.body for r in replies] == [b"en/gzip", b"de/gzip", b"de/br"]
    assert len(w.origin.requests) == 3
    passed = [r for r in routes if r.step is Next.PASS]
    assert [(r.leader, r.fwd) for r in passed] == [(False, b"miss")]
    assert sum("fwd=miss; fwd-status=200" in r.cache_status for r in replies) == 3
    # The one that passed: not stored, not collapsed.
    assert sum(r.cache_status == "edgeproxy; fwd=miss; fwd-status=200" for r in replies) == 1


# -- errors, stale-if-error ---------------------------------------------------------------------


class Failing:
    """200 + ETag with `cc` until `fail` is set; then `fail` (an OriginError raised, or a
    status answered). `during` runs as the failing answer is made."""

    def __init__(self, cc: bytes = b"max-age=60, stale-if-error=300") -> None:
        self.cc = cc
        self.fail: OriginError | int | None = None
        self.during = lambda: None
        self.clock = None

    def __call__(self, method, path_query, headers, data):  # type: ignore[no-untyped-def]
        fields = [(b"Cache-Control", self.cc), (b"ETag", b'"v1"')]
        assert self.clock is not None
        fields.append((b"Date", format_http_date(self.clock.now).encode()))
        if self.fail is None:
            return MemoryResponse(200, fields, b"hello")
        self.during()
        if isinstance(self.fail, OriginError):
            raise self.fail
        return MemoryResponse(self.fail, [(b"Content-Length", b"4")], b"oops")


async def failing_worker(make_worker, cc: bytes = b"max-age=60, stale-if-error=300"):  # type: ignore[no-untyped-def]
    origin = Failing(cc)
    w = await make_worker(origin)
    w.clock.now = 1_000_000.0
    origin.clock = w.clock
    assert "stored" in (await fetch(w)).cache_status
    return w, origin


FAILURES = [
    OriginError(OriginFailure.CONNECT, "refused"),
    OriginError(OriginFailure.TIMEOUT, "slow"),
    500,
    503,
]


@pytest.mark.parametrize("failure", FAILURES, ids=["connect", "timeout", "500", "503"])
async def test_stale_if_error_serves_the_stale_entry(make_worker, routes, failure) -> None:
    w, origin = await failing_worker(make_worker)
    w.clock.advance(70)
    origin.fail = failure
    r = await fetch(w)
    assert r.status == 200 and r.body == b"hello"
    assert r.cache_status == "edgeproxy; hit; ttl=-10; detail=stale-if-error"
    assert routes[-1].step is Next.HIT and result_count(w, Result.STALE) == 1
    assert w.origin.requests[-1].headers.get("If-None-Match") == '"v1"'
    assert len(w.origin.requests) == 2
    # Past the window: the error itself.
    w.clock.advance(300)
    r = await fetch(w)
    expected = failure if isinstance(failure, int) else failure.status
    assert r.status == expected and b"hello" not in r.body and routes[-1].leader


@pytest.mark.parametrize(
    "failure", [OriginError(OriginFailure.CONNECT, "refused"), 500], ids=["connect", "500"]
)
async def test_stale_if_error_never_serves_a_listed_body(make_worker, routes, failure) -> None:
    """The digest is listed while the validation is in flight (after lookup checked the
    entry): the stale body may not stand in for the error."""
    w, origin = await failing_worker(make_worker)
    w.clock.advance(70)
    origin.fail = failure
    origin.during = lambda: list_digest(w, b"hello")
    r = await fetch(w)
    assert b"hello" not in r.body and "stale-if-error" not in r.cache_status
    if isinstance(failure, OriginError):
        assert routes[-1].step is Next.ORIGIN_ERROR
        assert r.status == 502 and "detail=origin-connect" in r.cache_status
    else:
        assert (routes[-1].step, routes[-1].fwd) == (Next.STREAM, b"stale")
        assert r.status == 500 and r.body == b"oops"
        assert r.cache_status == "edgeproxy; fwd=stale; fwd-status=500; detail=upstream-error"
    # The next request finds the listed entry in lookup: 451, and it leaves the cache.
    blocked = await fetch(w)
    assert blocked.status == 451 and w.parts.memory.stats().objects == 0


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (OriginFailure.CONNECT, 502),
        (OriginFailure.RESET, 502),
        (OriginFailure.PROTOCOL, 502),
        (OriginFailure.TIMEOUT, 504),
    ],
)
async def test_an_origin_failure_with_nothing_stored_is_the_error(
    make_worker, routes, kind: OriginFailure, status: int
) -> None:
    def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        raise OriginError(kind, "broken")

    w = await make_worker(handler)
    r = await fetch(w)
    assert routes[-1].step is Next.ORIGIN_ERROR
    assert r.status == status and b"hello" not in r.body
    assert r.cache_status == f"edgeproxy; fwd=miss; detail=origin-{kind.value}"
    assert result_count(w, Result.ERROR) == 1 and len(w.origin.requests) == 1


async def test_an_origin_failure_past_every_stale_window_is_the_error(make_worker, routes) -> None:
    w, origin = await failing_worker(make_worker, cc=b"max-age=60")
    w.clock.advance(60 + 61)  # past the lifetime and cache.stale_if_unreachable_s (60)
    origin.fail = OriginError(OriginFailure.RESET, "reset")
    r = await fetch(w)
    assert routes[-1].step is Next.ORIGIN_ERROR
    assert r.status == 502 and r.cache_status == "edgeproxy; fwd=miss; detail=origin-reset"


# -- revalidation -------------------------------------------------------------------------------


async def test_a_304_merges_into_the_stored_entry(make_worker, routes) -> None:
    state = {"validated": False}
    w = None

    def handler(method, path_query, headers, data):  # type: ignore[no-untyped-def]
        date = (b"Date", format_http_date(w.clock.now).encode())
        if headers.get("If-None-Match") == '"v1"':
            state["validated"] = True
            fields = [(b"Cache-Control", b"max-age=120"), (b"ETag", b'"v1"'), (b"X-Rev", b"2")]
            return MemoryResponse(304, [*fields, date])
        fields = [(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"'), (b"X-Rev", b"1")]
        return MemoryResponse(200, [*fields, date, (b"Content-Type", b"text/plain")], b"hello")

    w = await make_worker(handler)
    w.clock.now = 1_000_000.0
    await fetch(w)
    w.clock.advance(70)
    r = await fetch(w)
    assert state["validated"] and routes[-1].step is Next.DELIVER
    assert r.status == 200 and r.body == b"hello"
    assert r.cache_status == "edgeproxy; fwd=stale; fwd-status=304; stored; ttl=120"
    assert r.header("x-rev") == "2" and r.header("content-type") == "text/plain"
    assert result_count(w, Result.REVALIDATED) == 1
    assert w.origin.requests[-1].headers.get("If-None-Match") == '"v1"'
    # The merged entry is what is stored now.
    w.clock.advance(100)
    hit = await fetch(w)
    assert hit.cache_status == "edgeproxy; hit; ttl=20" and hit.header("x-rev") == "2"
    assert len(w.origin.requests) == 2
