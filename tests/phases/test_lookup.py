"""lookup: every `Next` it returns, for a RequestCtx the pipeline built itself (each request is
driven through the worker; a spy on `proxy.phases.lookup.lookup` records the decision and what
lookup wrote into the context), with what the client saw and what the origin was asked."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.model import EntryType
from proxy.blocklist.snapshot import Snapshot
from proxy.cache.entry import Entry
from proxy.context import Next, RequestCtx
from proxy.metrics import Result
from proxy.origin.memory import MemoryResponse
from proxy.phases import lookup as lookup_phase
from proxy.rfc.dates import format_http_date
from tests.integration.helpers_cache import FakeClock
from tests.phases.client import fetch, until


@dataclass
class Decision:
    step: Next
    result: Result
    invalidate: bool
    hit_for_miss: bool
    entry: Entry | None
    blocked_by: BlockEntry | None
    ctx: RequestCtx


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[Decision]:
    """Each lookup the pipeline makes, as it returned (later phases change the context)."""
    seen: list[Decision] = []
    real = lookup_phase.lookup

    def spy(ctx, cache, enforcer, coalescer, now):  # type: ignore[no-untyped-def]
        step = real(ctx, cache, enforcer, coalescer, now)
        seen.append(
            Decision(
                step,
                ctx.result,
                ctx.invalidate,
                ctx.hit_for_miss,
                ctx.entry,
                ctx.blocked_by,
                ctx,
            )
        )
        return step

    monkeypatch.setattr(lookup_phase, "lookup", spy)
    return seen


class Origin:
    """Every GET gets `body` with `cc` and a Date from the worker's clock (a 304 for its own
    ETag); other methods get 201."""

    def __init__(self, cc: str = "max-age=60", body: bytes = b"hello", etag: str = '"v1"'):
        self.cc, self.body, self.etag = cc.encode(), body, etag
        self.clock: FakeClock | None = None

    def __call__(self, method, path_query, headers, data):  # type: ignore[no-untyped-def]
        if method != "GET":
            return MemoryResponse(201, [(b"Content-Length", b"7")], b"created")
        assert self.clock is not None
        fields = [(b"Cache-Control", self.cc), (b"ETag", self.etag.encode())]
        fields.append((b"Date", format_http_date(self.clock.now).encode()))
        if headers.get("If-None-Match") == self.etag:
            return MemoryResponse(304, fields)
        return MemoryResponse(200, fields, self.body)


async def worker(make_worker, cc: str = "max-age=60", **overrides):  # type: ignore[no-untyped-def]
    o = Origin(cc)
    w = await make_worker(o, **overrides)
    w.clock.now = 1_000_000.0  # whole seconds, as Date has them
    o.clock = w.clock
    return w


async def stored(make_worker, cc: str = "max-age=60", **overrides):  # type: ignore[no-untyped-def]
    """A worker with /a stored (one origin request)."""
    w = await worker(make_worker, cc, **overrides)
    r = await fetch(w)
    assert r.status == 200 and "stored" in r.cache_status, r.cache_status
    assert len(w.origin.requests) == 1
    return w


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_unsafe_methods_pass_and_invalidate(make_worker, decisions, method: str) -> None:
    w = await stored(make_worker)
    r = await fetch(w, method, body=b"form")
    assert decisions[-1].step is Next.PASS and decisions[-1].invalidate
    assert r.status == 201 and r.body == b"created"
    assert "fwd=bypass; fwd-status=201" in r.cache_status
    assert [(q.method, q.body) for q in w.origin.requests[1:]] == [(method, b"form")]
    # RFC 9111 §4.4: the stored /a is gone, the next GET goes to the origin.
    again = await fetch(w)
    assert decisions[-1].step is Next.MISS and "fwd=miss" in again.cache_status
    assert len(w.origin.requests) == 3


async def test_get_with_a_body_passes_without_invalidating(make_worker, decisions) -> None:
    w = await stored(make_worker)
    r = await fetch(w, "GET", body=b"query")
    assert decisions[-1].step is Next.PASS and not decisions[-1].invalidate
    assert r.status == 200 and r.body == b"hello" and "fwd=bypass" in r.cache_status
    assert w.origin.requests[-1].body == b"query"
    hit = await fetch(w)  # /a is still stored
    assert decisions[-1].step is Next.HIT and "hit" in hit.cache_status
    assert len(w.origin.requests) == 2


async def test_authorization_is_fetched_privately_never_from_the_cache(
    make_worker, decisions
) -> None:
    w = await stored(make_worker)
    r = await fetch(w, headers=[("Authorization", "Bearer x")])
    assert decisions[-1].step is Next.PRIVATE and decisions[-1].entry is None
    assert r.status == 200 and r.body == b"hello" and "hit" not in r.cache_status.split("; ")
    sent = w.origin.requests[-1]
    assert len(w.origin.requests) == 2 and sent.headers.get("Authorization") == "Bearer x"
    assert "If-None-Match" not in sent.headers  # nothing stored was read to validate


async def test_a_fresh_entry_is_a_hit(make_worker, decisions) -> None:
    w = await stored(make_worker)
    w.clock.advance(10)
    r = await fetch(w)
    d = decisions[-1]
    assert d.step is Next.HIT and d.result is Result.HIT and d.entry is not None
    assert r.status == 200 and r.body == b"hello"
    assert r.cache_status.endswith("hit; ttl=50") and r.header("age") == "10"
    assert len(w.origin.requests) == 1


async def test_a_stale_entry_within_max_stale_is_a_stale_hit(make_worker, decisions) -> None:
    w = await stored(make_worker)
    w.clock.advance(70)
    r = await fetch(w, headers=[("Cache-Control", "max-stale=30")])
    d = decisions[-1]
    assert d.step is Next.HIT and d.result is Result.STALE
    assert r.status == 200 and r.body == b"hello" and r.cache_status.endswith("hit; ttl=-10")
    assert len(w.origin.requests) == 1
    # Beyond what the client allows: validated (the stored entry's ETag goes with it).
    r = await fetch(w, headers=[("Cache-Control", "max-stale=5")])
    assert decisions[-1].step is Next.MISS and decisions[-1].entry is not None
    assert "fwd=stale; fwd-status=304" in r.cache_status and r.body == b"hello"
    assert w.origin.requests[-1].headers.get("If-None-Match") == '"v1"'


async def test_stale_while_revalidate_serves_and_refreshes_once(make_worker, decisions) -> None:
    w = await stored(make_worker, cc="max-age=60, stale-while-revalidate=30")
    w.clock.advance(70)
    r = await fetch(w)
    d = decisions[-1]
    assert d.step is Next.STALE_WHILE_REVALIDATE and d.result is Result.STALE
    assert r.status == 200 and r.body == b"hello" and r.cache_status.endswith("hit; ttl=-10")
    # The refresh runs behind the answer: one conditional request.
    await until(lambda: not w.parts.pipeline.fetcher.background)
    assert len(w.origin.requests) == 2
    assert w.origin.requests[-1].headers.get("If-None-Match") == '"v1"'
    fresh = await fetch(w)
    assert decisions[-1].step is Next.HIT and fresh.cache_status.endswith("hit; ttl=60")


@pytest.mark.parametrize("directive", ["no-cache", "max-age=0", "max-age=100"])
async def test_no_stale_while_revalidate_when_the_request_asks_for_fresh(
    make_worker, decisions, directive: str
) -> None:
    w = await stored(make_worker, cc="max-age=60, stale-while-revalidate=30")
    w.clock.advance(70)
    r = await fetch(w, headers=[("Cache-Control", directive)])
    d = decisions[-1]
    assert d.step is Next.MISS and d.entry is not None  # validates what is stored
    assert r.status == 200 and r.body == b"hello"
    assert "fwd=stale; fwd-status=304" in r.cache_status
    assert w.origin.requests[-1].headers.get("If-None-Match") == '"v1"'


async def test_stale_while_revalidate_ends_with_its_window(make_worker, decisions) -> None:
    w = await stored(make_worker, cc="max-age=60, stale-while-revalidate=30")
    w.clock.advance(91)
    r = await fetch(w)
    assert decisions[-1].step is Next.MISS and "fwd=stale" in r.cache_status


async def test_only_if_cached_with_nothing_usable_is_504(make_worker, decisions) -> None:
    w = await worker(make_worker)
    r = await fetch(w, headers=[("Cache-Control", "only-if-cached")])
    assert decisions[-1].step is Next.ONLY_IF_CACHED and decisions[-1].result is Result.MISS
    assert r.status == 504 and "detail=only-if-cached" in r.cache_status
    assert w.origin.requests == []
    # A stale entry the request does not accept is not usable either.
    await fetch(w)
    w.clock.advance(70)
    r = await fetch(w, headers=[("Cache-Control", "only-if-cached")])
    assert decisions[-1].step is Next.ONLY_IF_CACHED and r.status == 504
    assert len(w.origin.requests) == 1
    # One it accepts is a hit.
    r = await fetch(w, headers=[("Cache-Control", "only-if-cached, max-stale")])
    assert decisions[-1].step is Next.HIT and r.status == 200 and r.body == b"hello"


async def test_nothing_stored_is_a_miss(make_worker, decisions) -> None:
    w = await worker(make_worker)
    r = await fetch(w, target="/a?x=1")
    d = decisions[-1]
    assert d.step is Next.MISS and d.entry is None and not d.hit_for_miss
    assert d.ctx.key == (("edge.test", b"/a?x=1"), ())
    assert r.status == 200 and "fwd=miss; fwd-status=200; stored" in r.cache_status
    assert [q.path_query for q in w.origin.requests] == [b"/a?x=1"]


async def test_after_an_uncacheable_answer_the_key_is_fetched_alone(make_worker, decisions) -> None:
    w = await worker(make_worker, "no-store")
    first = await fetch(w)
    assert decisions[-1].step is Next.MISS and "detail=no-store" in first.cache_status
    r = await fetch(w)
    d = decisions[-1]
    assert d.step is Next.FETCH_ALONE and d.hit_for_miss
    assert r.status == 200 and r.body == b"hello" and "fwd=miss" in r.cache_status
    assert len(w.origin.requests) == 2


async def test_a_stored_body_whose_digest_is_listed_is_451_and_leaves_the_cache(
    make_worker, decisions
) -> None:
    w = await stored(make_worker)
    pipeline = w.parts.pipeline
    digest = hashlib.sha256(b"hello").hexdigest()
    listed = BlockEntry(id="d1", type=EntryType.SHA256, value=digest, reason="test")
    pipeline.enforcer.apply(Snapshot.compile([listed], 1, 0.0))
    assert w.parts.memory.stats().objects == 1  # applied, not yet purged
    r = await fetch(w)
    d = decisions[-1]
    assert d.step is Next.BLOCKED and d.blocked_by is not None and d.blocked_by.id == "d1"
    assert r.status == 451 and b"d1" in r.body and b"hello" not in r.body
    assert w.parts.memory.stats().objects == 0
    assert w.parts.stats.purged_by_blocklist == 1
    assert len(w.origin.requests) == 1
