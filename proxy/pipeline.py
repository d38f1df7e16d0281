"""The phase walk: admit → block → lookup → fetch → upstream_response → store → deliver → log.

This is the only place control flow between phases lives. A fresh cache hit is answered
synchronously from `__call__` (no task, no coroutine); everything else continues in `_walk`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from proxy.blocklist.enforce import Enforcer
from proxy.blocklist.model import Entry as BlockEntry
from proxy.blocklist.snapshot import Snapshot
from proxy.cache.coalesce import Coalescer
from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryTier
from proxy.cache.shared import SharedTier
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import FetchOutcome, RequestCtx, RequestFields
from proxy.front.api import ClientGone, FrontRequest, Responder
from proxy.metrics import (
    B_INDEX,
    R_INDEX,
    Result,
    WorkerStats,
)
from proxy.origin import Origin, OriginError
from proxy.phases import admit, block, deliver, lookup
from proxy.phases import log as log_phase
from proxy.phases.fetch import Fetcher
from proxy.phases.memo import HotMemo, Remembered451
from proxy.phases.upstream_response import RESPONSE_DRIVEN, BodyBlocked
from proxy.rfc.cache_status import cache_status_bytes
from proxy.rfc.cachecontrol import EMPTY_CC
from proxy.rfc.freshness import (
    Reuse,
    within_stale_while_revalidate,
)
from proxy.rfc.storable import NoStoreReason
from proxy.rfc.target import Target
from proxy.sites import SiteRuntime, SiteTable

if TYPE_CHECKING:
    from proxy.node.accesslog import AccessLog

log = logging.getLogger("edgeproxy.pipeline")

READ_METHODS = frozenset({"GET", "HEAD"})
_R_HIT = R_INDEX[Result.HIT]
_R_BLOCKED = R_INDEX[Result.BLOCKED]


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        sites: SiteTable,
        memory: MemoryTier,
        origin: Origin,
        stats: WorkerStats,
        *,
        clock: Callable[[], float] | None = None,
        access_log: AccessLog | None = None,
        shared: SharedTier | None = None,
    ) -> None:
        self.cfg = cfg
        self.sites = sites
        self.memory = memory
        # The optional shared tier behind memory (the worker builds it; embedders that pass
        # none get one from the config).
        if shared is None and cfg.cache.shared_tier_url:
            shared = SharedTier.from_config(cfg.cache, stats)
        self.shared = shared
        # The one cache facade: callers below never ask which tiers exist.
        self.cache = TieredCache(memory, shared)
        self.stats = stats
        self.clock = clock or time.time
        self.enforcer = Enforcer(self.cache, stats, on_swap=self._forget_memos)
        self.coalescer: Coalescer[FetchOutcome] = Coalescer(
            hit_for_miss_s=cfg.cache.hit_for_miss_s, clock=time.monotonic
        )
        self.via = f"1.1 {cfg.via_name}".encode()
        self.cache_name = cache_status_bytes(cfg.via_name, hit=False)
        self.fetcher = Fetcher(
            cfg,
            origin,
            self.cache,
            stats,
            self.via,
            blocklist=lambda: self.enforcer.snapshot,
            clock=self.clock,
        )
        self.access_log = access_log
        self._unknown_site = len(sites.sites)
        self._background: set[asyncio.Task[None]] = set()
        self._hit_status = cache_status_bytes(cfg.via_name, hit=True)
        self.memo = HotMemo(cfg.cache.hot_memo_max_entries)
        # RFC 7725 §3: identify the entity implementing the block (configurable per site).
        self.default_blocked_by = (
            cfg.blocklist.default_blocked_by_url or f"urn:edgeproxy:node:{cfg.via_name}"
        )

    @property
    def blocklist(self) -> Snapshot:
        """The snapshot every request of this worker is checked against."""
        return self.enforcer.snapshot

    # -- the front's handler ------------------------------------------------------------------

    def __call__(self, request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        started = time.perf_counter()
        plain = (
            not request.flagged
            and (request.method == "GET" or request.method == "HEAD")
            and not request.has_body
        )
        if plain:
            hot = self._take_hot(request.method, request.raw_target, request.host)
            if hot is not None:
                hot_entry, now = hot
                sent = deliver.hit(request, responder, hot_entry, now, self._hit_status)
                self._log_hit(hot_entry, request, started, sent)
                return None
        fields = RequestFields(request.headers)
        ctx = RequestCtx(request, responder, started, fields, request.method)
        if not self._admit(ctx) or not self._block(ctx):
            self._log(ctx)
            return None
        if plain:
            # A plain lookup that is fresh answers here, synchronously.
            target = ctx.target
            assert target is not None
            primary = (target.authority, target.raw_path_query)
            vary = self.cache.vary_fields(primary)
            if vary is not None:
                entry = self.cache.get(
                    (primary, self.fetcher.variant(vary, fields) if vary else ())
                )
                if entry is not None:
                    now = self.clock()
                    fresh = lookup.decide(entry, now, EMPTY_CC) is Reuse.FRESH
                    if fresh and self._entry_allowed(ctx, entry):
                        if not vary:
                            self.memo.remember_hit(request.raw_target, fields.host, entry)
                        ctx.bytes_sent = deliver.hit(
                            request, responder, entry, now, self._hit_status
                        )
                        ctx.status = entry.status
                        ctx.result = Result.HIT
                        self._log(ctx)
                        return None
                    if ctx.status:  # blocked by digest
                        self._log(ctx)
                        return None
        return self._walk(ctx)

    def _remember_blocked(
        self, raw_target: bytes, host: bytes | None, ctx: RequestCtx, hit: BlockEntry
    ) -> None:
        head, body = self._blocked_parts(ctx.site, hit)
        answer = Remembered451(head, body, ctx.site_index, B_INDEX[str(hit.type)])
        self.memo.remember_blocked(raw_target, host, answer)

    def fast_answer(
        self, method: str, raw_target: bytes, host: bytes | None, keep_alive: bool, version: str
    ) -> bytes | None:
        """The front's fast answer (FrontServer(fast_answer=…)): a hot hit, as bytes, before
        any request object exists; None sends the request the usual way (`__call__`)."""
        started = time.perf_counter()
        hot = self._take_hot(method, raw_target, host)
        if hot is None:
            blocked = self.memo.blocked(raw_target, host)
            if blocked is None:
                return None
            return self._fast_blocked(method, keep_alive, version, blocked, started)
        entry, now = hot
        data = deliver.hit_bytes(method, keep_alive, version, entry, now, self._hit_status)
        self._log_hit(entry, None, started, 0 if method == "HEAD" else len(entry.body))
        return data

    def _take_hot(
        self, method: str, raw_target: bytes, host: bytes | None
    ) -> tuple[Entry, float] | None:
        """The hot path: this raw target and Host answered a fresh hit before, under the
        current blocklist snapshot (the map is emptied whenever a new one is applied, and an
        entry leaving the memory tier is no longer `alive`), so admit, block and lookup would
        decide exactly as they did then. Only for plain (unflagged, body-less) requests."""
        entry = self.memo.hit(method, raw_target, host)
        if entry is None:
            return None
        now = self.clock()
        if lookup.decide(entry, now, EMPTY_CC) is not Reuse.FRESH:
            return None
        entry.hits += 1
        if not entry.hits & 7:
            self.cache.touch(entry)  # LRU order, refreshed every 8th hit
        return entry, now

    def _fast_blocked(
        self,
        method: str,
        keep_alive: bool,
        version: str,
        blocked: Remembered451,
        started: float,
    ) -> bytes:
        head, body, site, typ = blocked
        sent = 0 if method == "HEAD" else len(body)
        data = block.render_451(head, body, method, keep_alive, version)
        log_phase.blocked_fast(self.stats, site, typ, method, sent, started)
        return data

    def _log_hit(
        self, entry: Entry, request: FrontRequest | None, started: float, sent: int
    ) -> None:
        log_phase.hit(self.stats, self.access_log, request, entry, started, sent)

    async def _walk(self, ctx: RequestCtx) -> None:
        try:
            await self._lookup_and_fetch(ctx)
        except ClientGone:
            ctx.result = Result.ERROR if not ctx.status else ctx.result
        except BodyBlocked as e:
            if ctx.responder.started:
                raise
            self._blocked(ctx, e.entry)
        except OriginError as e:
            if not ctx.responder.started:
                self._origin_error(ctx, e)
            else:
                raise
        finally:
            self._log(ctx)

    # -- admit --------------------------------------------------------------------------------

    def _admit(self, ctx: RequestCtx) -> bool:
        """admit, then the answers this hop gives itself (Max-Forwards 0)."""
        refused = admit.admit(ctx, self.sites)
        if refused is not None:
            return self._refuse(ctx, refused.status, refused.reason)
        if admit.answers_here(ctx):
            ctx.result = Result.PASS
            deliver.max_forwards_reached(ctx, self.via, self.cache_name)
            return False
        return True

    def _refuse(self, ctx: RequestCtx, status: int, why: str) -> bool:
        ctx.result = Result.ERROR
        deliver.generated(
            ctx,
            status,
            f"{status} {deliver.REASONS.get(status, b'').decode()}: {why}\n".encode(),
            cache_status=cache_status_bytes(
                self.cfg.via_name, hit=False, detail=why.encode("ascii", "replace").decode()
            ),
            close=status == 400,
        )
        return False

    # -- block --------------------------------------------------------------------------------

    def _block(self, ctx: RequestCtx) -> bool:
        hit = block.block(ctx, self.blocklist)
        if hit is None:
            return True
        self._blocked(ctx, hit)
        req = ctx.request
        if not req.flagged and not req.has_body:
            # The same raw target and Host get the same answer until the next snapshot.
            self._remember_blocked(req.raw_target, req.host, ctx, hit)
        return False

    def _entry_allowed(self, ctx: RequestCtx, entry: Entry) -> bool:
        """Every reuse of a stored body is checked against the current snapshot's digests."""
        hit = self.enforcer.refuse_stored(entry)
        if hit is None:
            return True
        self._blocked(ctx, hit)
        return False

    def _blocked(self, ctx: RequestCtx, hit: BlockEntry) -> None:
        ctx.result = Result.BLOCKED
        ctx.blocked_id = hit.id
        ctx.blocked_type = str(hit.type)
        site = ctx.site_index if ctx.site else self._unknown_site
        self.stats.blocked[site][B_INDEX[str(hit.type)]] += 1
        head, body = self._blocked_parts(ctx.site, hit)
        req = ctx.request
        data = block.render_451(head, body, ctx.method, req.keep_alive, req.http_version)
        if ctx.method != "HEAD":
            ctx.bytes_sent = len(body)
        ctx.status = 451
        ctx.cache_status = self.cache_name + b"; detail=blocked"
        ctx.responder.send_bytes(data, close=not req.keep_alive)

    def _blocked_parts(self, site: SiteRuntime | None, hit: BlockEntry) -> tuple[bytes, bytes]:
        return block.parts_451(site, hit, self.default_blocked_by, self.cache_name)

    # -- lookup -------------------------------------------------------------------------------

    async def _lookup_and_fetch(self, ctx: RequestCtx) -> None:
        target = ctx.target
        assert target is not None
        fields = ctx.fields
        req = ctx.request
        ctx.req_cc = req_cc = lookup.request_cache_control(fields)
        if ctx.method not in READ_METHODS or req.has_body:
            await self._pass(ctx, invalidate=ctx.method not in READ_METHODS)
            return
        primary = (target.authority, target.raw_path_query)
        if fields.first(b"authorization") is not None:
            # RFC 9111 §3.5: never answered from the cache nor coalesced (the answer may be
            # this user's), but stored when the response says it may be shared.
            outcome = await self.fetcher.fetch_for_cache(ctx, None)
            await self._after_fetch(ctx, outcome, True, None)
            return
        vary = self.cache.vary_fields(primary)
        variant = self.fetcher.variant(vary, fields) if vary else ()
        entry = self.cache.get((primary, variant)) if vary is not None else None
        now = self.clock()
        if entry is not None:
            if not self._entry_allowed(ctx, entry):
                return
            age = entry.age(now)
            decision = lookup.decide(entry, now, req_cc)
            if decision is not Reuse.VALIDATE:
                ctx.result = Result.HIT if decision is Reuse.FRESH else Result.STALE
                ttl = int(entry.lifetime - age)
                deliver.from_entry(ctx, entry, now, self._status_hit(entry, ttl))
                return
            if within_stale_while_revalidate(entry.lifetime, age, entry.cc) and not (
                req_cc.no_cache or req_cc.max_age is not None
            ):
                ctx.result = Result.STALE
                deliver.from_entry(
                    ctx, entry, now, self._status_hit(entry, int(entry.lifetime - age))
                )
                self._revalidate_behind(ctx, entry)
                return
        if req_cc.only_if_cached:
            ctx.result = Result.MISS
            deliver.generated(
                ctx,
                504,
                b"504 Gateway Timeout: not in cache (only-if-cached)\n",
                cache_status=cache_status_bytes(
                    self.cfg.via_name, hit=False, fwd="miss", detail="only-if-cached"
                ),
            )
            return
        key = (primary, variant)
        await self._miss(ctx, key, entry, coalesce=not self.coalescer.is_hit_for_miss(key))

    def _status_hit(self, entry: Entry, ttl: int) -> bytes:
        status = self._hit_status + b"; ttl=%d" % ttl
        if entry.upstream_cache_status:
            status = entry.upstream_cache_status + b", " + status
        return status

    # -- fetch (coalesced) and what follows it ------------------------------------------------

    async def _miss(
        self, ctx: RequestCtx, key: tuple[object, ...], entry: Entry | None, *, coalesce: bool
    ) -> None:
        if not coalesce:
            # hit-for-miss: recently uncacheable, so no queueing behind a shared fetch; the
            # response may still be stored if it has become cacheable.
            ctx.hit_for_miss = True
            outcome = await self._fetch_keyed(ctx, key, entry)
            await self._after_fetch(ctx, outcome, True, entry)
            return
        coalescer = self.coalescer
        task = coalescer.inflight(key)
        leader = task is None
        if task is None:
            task = coalescer.lead(key, self._fetch_keyed(ctx, key, entry))
        else:
            ctx.collapsed = True
            self.stats.coalesced += 1
        try:
            outcome = (
                await coalescer.follow(task, self.cfg.cache.coalesce_wait_s)
                if not leader
                else await asyncio.shield(task)
            )
        except TimeoutError:
            await self._pass(ctx, invalidate=False, fwd=b"miss")
            return
        except asyncio.CancelledError:
            if leader:
                task.add_done_callback(_close_unclaimed)
            raise
        await self._after_fetch(ctx, outcome, leader, entry)

    async def _fetch_keyed(
        self, ctx: RequestCtx, key: tuple[object, ...], entry: Entry | None, **kw: bool
    ) -> FetchOutcome:
        """fetch_for_cache, then remember (by the lookup key) whether the response was
        uncacheable, so the next requests for it go to the origin in parallel (hit-for-miss).

        On a memory miss the shared tier is asked first, inside this (coalesced) fetch: one
        lookup for all the requests waiting on the key. A usable entry is the outcome; a stale
        one is the validator source of the conditional request. Not asked for hit-for-miss
        keys (recently uncacheable: nothing to find)."""
        if entry is None and not ctx.hit_for_miss:
            found = await self._from_shared(ctx)
            if isinstance(found, FetchOutcome):
                return found
            entry = found
        outcome = await self.fetcher.fetch_for_cache(ctx, entry, **kw)
        if entry is not None and outcome.stale_candidate is None:
            outcome.stale_candidate = entry  # a stored response existed (fwd=stale)
        if outcome.stored:
            self.coalescer.clear_uncacheable(key)
        elif outcome.not_stored in RESPONSE_DRIVEN:
            self.coalescer.mark_uncacheable(key)
        return outcome

    async def _from_shared(self, ctx: RequestCtx) -> FetchOutcome | Entry | None:
        target = ctx.target
        assert target is not None
        fields = ctx.fields
        variant = self.fetcher.variant
        found = await self.cache.get_behind(
            (target.authority, target.raw_path_query), lambda f: variant(f, fields) if f else ()
        )
        if found is None:
            return None
        self.fetcher.adopt_shared(ctx, found)
        listed = self.blocklist.check_digest(found.sha256)
        if listed is not None:
            # Never into memory; gone from the shared tier for every node that looks next.
            self.cache.forget_behind(found.primary)
            self.stats.purged_by_blocklist += 1
            return FetchOutcome(blocked=listed, not_stored=NoStoreReason.BLOCKED)
        if self._shared_decision(ctx, found) is Reuse.VALIDATE:
            return found
        stored = self.cache.adopt(found)
        return FetchOutcome(entry=found, stored=stored, fwd_status=found.status, shared=True)

    def _shared_decision(self, ctx: RequestCtx, entry: Entry) -> Reuse:
        return lookup.decide(entry, self.clock(), ctx.req_cc or EMPTY_CC)

    async def _after_shared(self, ctx: RequestCtx, entry: Entry, now: float) -> None:
        """Deliver a shared-tier entry, unless this request (a follower of the lookup) asks
        for more than it gives: then a conditional request of its own, with it as validator."""
        decision = self._shared_decision(ctx, entry)
        if decision is Reuse.VALIDATE:
            outcome = await self._fetch_keyed(ctx, (entry.primary, entry.variant), entry)
            await self._after_fetch(ctx, outcome, True, entry)
            return
        ctx.result = Result.HIT if decision is Reuse.FRESH else Result.STALE
        ttl = int(entry.lifetime - entry.age(now))
        deliver.from_entry(ctx, entry, now, self._status_hit(entry, ttl) + b"; detail=shared")

    async def _after_fetch(
        self, ctx: RequestCtx, outcome: FetchOutcome, leader: bool, entry: Entry | None
    ) -> None:
        now = self.clock()
        if outcome.error is not None:
            stale = outcome.stale_candidate or entry
            if stale is not None and self._may_serve_stale_on_error(ctx, stale, now):
                if outcome.upstream is not None and outcome.claim():
                    outcome.upstream.close()
                ctx.result = Result.STALE
                deliver.from_entry(
                    ctx,
                    stale,
                    now,
                    self._status_hit(stale, int(stale.lifetime - stale.age(now)))
                    + b"; detail=stale-if-error",
                )
                return
            if outcome.upstream is None:
                raise outcome.error
            if not (leader and outcome.claim()):
                await self._pass(ctx, invalidate=False, fwd=b"miss")
                return
            ctx.result = Result.MISS
            await self.fetcher.stream(ctx, outcome, fwd=b"stale")
            return
        if outcome.blocked is not None:
            self._blocked(ctx, outcome.blocked)
            return
        if outcome.entry is not None:
            stored = outcome.entry
            if (
                stored.vary_fields
                and self.fetcher.variant(stored.vary_fields, ctx.fields) != stored.variant
            ):
                # The leader's response varies on a field this request differs in: fetch (and
                # store) this request's own variant, coalesced with others that share it.
                if ctx.vary_refetch:
                    await self._pass(ctx, invalidate=False, fwd=b"miss")
                    return
                ctx.vary_refetch = True
                ctx.collapsed = False
                own = (stored.primary, self.fetcher.variant(stored.vary_fields, ctx.fields))
                await self._miss(ctx, own, None, coalesce=not self.coalescer.is_hit_for_miss(own))
                return
            if not self._entry_allowed(ctx, stored):
                return
            if outcome.shared:
                await self._after_shared(ctx, stored, now)
                return
            ctx.result = Result.REVALIDATED if outcome.revalidated else Result.MISS
            # RFC 9211 §2.2: "stale" whenever a stored response existed but could not be used.
            fwd = "stale" if entry is not None or outcome.stale_candidate else "miss"
            status = cache_status_bytes(
                self.cfg.via_name,
                hit=False,
                fwd=fwd,
                fwd_status=outcome.fwd_status,
                stored=True if outcome.stored else None,
                ttl=int(stored.lifetime - stored.age(now)) if outcome.stored else None,
                collapsed=ctx.collapsed,
                detail=None
                if outcome.stored or outcome.not_stored is None
                else outcome.not_stored.value,
            )
            if stored.upstream_cache_status:
                status = stored.upstream_cache_status + b", " + status
            deliver.from_entry(ctx, stored, now, status)
            return
        # Not stored: the leader streams what it fetched; followers fetch for themselves.
        if leader and outcome.claim():
            ctx.result = Result.PASS if outcome.not_stored else Result.MISS
            await self.fetcher.stream(ctx, outcome, fwd=b"miss")
            return
        await self._pass(ctx, invalidate=False, fwd=b"uri-miss")

    def _may_serve_stale_on_error(self, ctx: RequestCtx, entry: Entry, now: float) -> bool:
        if self.enforcer.listed_digest(entry.sha256) is not None:
            return False
        grace = self.cfg.cache.max_stale_serve_s
        return lookup.stale_on_error(entry, now, ctx.req_cc or EMPTY_CC, grace)

    async def _pass(self, ctx: RequestCtx, *, invalidate: bool, fwd: bytes = b"bypass") -> None:
        """Forward as-is (unsafe methods, bodies, Authorization, hit-for-miss); stream back."""
        ctx.result = Result.PASS
        outcome = await self.fetcher.fetch_pass(ctx)
        if outcome.error is not None:
            raise outcome.error
        if outcome.blocked is not None:
            self._blocked(ctx, outcome.blocked)
            return
        if invalidate:
            self.fetcher.invalidate(ctx, outcome)
        outcome.claim()
        await self.fetcher.stream(ctx, outcome, fwd=fwd)

    def _revalidate_behind(self, ctx: RequestCtx, entry: Entry) -> None:
        """RFC 5861 §3: refresh a stale entry in the background, once."""
        if entry.revalidating:
            return
        entry.revalidating = True
        key = (entry.primary, entry.variant)
        if self.coalescer.inflight(key) is not None:
            return

        async def run() -> None:
            try:
                task = self.coalescer.lead(key, self._fetch_keyed(ctx, key, entry, background=True))
                outcome = await task
                if outcome.upstream is not None and outcome.claim():
                    outcome.upstream.close()
            except Exception:  # noqa: BLE001 - a failed background refresh leaves the stale entry
                log.debug("background revalidation failed", exc_info=True)
            finally:
                entry.revalidating = False

        t = asyncio.ensure_future(run())
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    # -- errors and log -----------------------------------------------------------------------

    def _origin_error(self, ctx: RequestCtx, e: OriginError) -> None:
        ctx.result = Result.ERROR
        site = ctx.site_index if ctx.site else self._unknown_site
        self.stats.origin_failures[site][
            ["connect", "timeout", "reset", "protocol"].index(e.kind)
        ] += 1
        deliver.generated(
            ctx,
            e.status,
            f"{e.status} {deliver.REASONS[e.status].decode()}: origin {e.kind}\n".encode(),
            cache_status=cache_status_bytes(
                self.cfg.via_name, hit=False, fwd="miss", detail=f"origin-{e.kind.value}"
            ),
            via=self.via,
        )

    def _log(self, ctx: RequestCtx) -> None:
        log_phase.exchange(self.stats, self.access_log, ctx, self._unknown_site)

    # -- blocklist application and purges ----------------------------------------------------

    def apply_blocklist(self, snapshot: Snapshot) -> None:
        """Swap in a new snapshot (one assignment): enforcement starts here."""
        self.enforcer.apply(snapshot)

    def _forget_memos(self) -> None:
        self.memo.clear()

    async def purge_listed(self, snapshot: Snapshot, step: int = 2000) -> int:
        return await self.enforcer.purge_listed(snapshot, step)

    async def purge_added(self, adds: list[BlockEntry], snapshot: Snapshot) -> int:
        return await self.enforcer.purge_added(adds, snapshot)

    def purge(
        self, *, url: Target | None = None, prefix: Target | None = None, host: str = ""
    ) -> int:
        """Operator purge, through every tier (the shared tier loses the keys this worker
        can name; others expire on their TTL)."""
        if url is not None:
            return self.cache.purge_primary((url.authority, url.raw_path_query))
        if prefix is not None:
            return self.cache.purge_prefix(prefix.host, prefix.path)
        if host:
            return self.cache.purge_host(host)
        return 0

    async def close(self) -> None:
        """Stop background work owned by the pipeline (the shared tier's writer)."""
        await self.cache.close()


def _close_unclaimed(task: asyncio.Task[FetchOutcome]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    outcome = task.result()
    if outcome.upstream is not None and outcome.claim():
        outcome.upstream.close()


def sample(rate: float) -> bool:
    return rate >= 1.0 or random.random() < rate
