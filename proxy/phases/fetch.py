"""fetch: the one (coalesced) origin request per key.

fetch builds the one upstream request from the canonical target (never the raw bytes):
hop-by-hop fields and URL/method override fields dropped, `Via` added, `X-Forwarded-For`
appended, `Forwarded` replaced, `Max-Forwards` decremented; with a stored entry, a conditional
request with its validators. Concurrent misses for one key make one request (the leader's);
followers share its outcome. The tier behind memory is asked inside that one fetch.

What the origin answers goes to upstream_response (proxy/phases/upstream_response.py), what is
kept to store (proxy/phases/store.py), what is streamed unstored to deliver
(proxy/phases/deliver.py); `Fetcher` composes the three, and the pass-through lane
(proxy/phases/lane.py) that fuses them for an answer head known not storable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from multidict import CIMultiDict

from proxy.blocklist.digest import DecodeLimits
from proxy.blocklist.enforce import Enforcer
from proxy.cache.coalesce import Coalescer
from proxy.cache.entry import Entry
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import FetchOutcome, ItemKey, Next, RequestCtx, RequestFields
from proxy.metrics import Result, WorkerStats
from proxy.origin import Origin, OriginError, OriginFailure, UpstreamResponse, render_fields
from proxy.phases.deliver import StreamDelivery, interim_relay
from proxy.phases.lane import ExpressLane
from proxy.phases.lookup import decide
from proxy.phases.spool import BodyBudget
from proxy.phases.store import StorePhase
from proxy.phases.upstream_response import RESPONSE_DRIVEN, UpstreamResponsePhase
from proxy.rfc.cache_status import Members, cache_status_bytes
from proxy.rfc.freshness import Reuse
from proxy.rfc.hopbyhop import strip_hop_by_hop
from proxy.rfc.storable import NoStoreReason
from proxy.rfc.vary import vary_key

log = logging.getLogger("edgeproxy.fetch")

# Never forwarded upstream: they would let a client change what the origin serves apart from
# what the edge checked (the canonical-target rule), or they are ours to set.
DROP_UPSTREAM = frozenset(
    {
        b"host",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-for",
        b"forwarded",  # RFC 7239: replaced by ours, a client's for=/host=/proto= are unchecked
        b"max-forwards",  # RFC 9110 §7.6.2: decremented below, never passed on as received
        b"via",
        b"content-length",
        b"expect",
        # Never a partial request: the edge takes whole representations, so every byte it
        # delivers was judged against the blocklist's digests (a part cannot be); ranges are
        # cut at the edge from the whole (issue 10).
        b"range",
        b"if-range",
    }
)
FORWARDED_MEMO_ENTRIES = 4096
UPSTREAM_MEMO_ENTRIES = 4096  # distinct (client fields, address, authority, …) remembered
UPSTREAM_MEMO_OVERHEAD_BYTES = 1000  # a memo entry's tuples, multidict and dict slot


def item_key_bytes(key: ItemKey) -> int:
    """What a cache key holds: its authority, raw path and query, and Vary values."""
    (authority, raw_path_query), variant = key
    return len(authority) + len(raw_path_query) + sum(map(len, variant))


CONDITIONAL = frozenset(
    {
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)


class Fetcher(UpstreamResponsePhase, StorePhase, StreamDelivery, ExpressLane):
    """fetch, composed with upstream_response, store, the streamed part of deliver and the
    pass-through lane: one object per worker holding what they share (config, cache facade,
    counters, the enforcer and its snapshot, the origin, the coalescer)."""

    def __init__(
        self,
        cfg: Config,
        origin: Origin,
        cache: TieredCache,
        stats: WorkerStats,
        enforcer: Enforcer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.origin = origin
        self.cache = cache
        self.stats = stats
        self.enforcer = enforcer
        self.via = f"1.1 {cfg.via_name}".encode()
        self.via_str = self.via.decode()
        self.cache_name = cache_status_bytes(cfg.via_name, hit=False)
        self.hit_status = cache_status_bytes(cfg.via_name, hit=True)
        self.members = Members(cfg.via_name)  # our Cache-Status members of fetched answers
        self.decode_limits = DecodeLimits.from_config(cfg.blocklist)
        # The request id goes upstream under the same name (the front assigned it; a client's
        # own under that name is dropped below unless the front kept it).
        self.request_id_name = cfg.log.request_id_header
        self._request_id_lname = cfg.log.request_id_header.lower().encode("ascii")
        self._request_id_prefix = cfg.log.request_id_header.encode("ascii") + b": "
        self.clock = clock
        # This hop's Forwarded element by (client address, authority, scheme): the same few
        # for every request of a connection, so formatted once (bounded, FORWARDED_MEMO_ENTRIES).
        self._forwarded: dict[tuple[str, str, str], str] = {}
        # The upstream fields by what they derive from (`upstream_headers`), and about what
        # that holds: a key is the request's whole header list, which a client can make new
        # with every request (4,096 of 32 KiB ones held ~400 MB), so it is bounded in bytes too.
        self._upstream: dict[tuple[object, ...], tuple[CIMultiDict[str], bytes | None]] = {}
        self._upstream_bytes = 0
        self._upstream_max_bytes = cfg.origin.request_fields_memo_max_bytes
        self.coalescer: Coalescer[FetchOutcome] = Coalescer(
            hit_for_miss_s=cfg.cache.hit_for_miss_s,
            clock=time.monotonic,
            max_marks=cfg.cache.hit_for_miss_max_entries,
            max_mark_bytes=cfg.cache.hit_for_miss_max_bytes,
            key_bytes=item_key_bytes,
        )
        self.background: set[asyncio.Task[None]] = set()  # stale-while-revalidate refreshes
        # This worker's share of the node's in-flight body budget (proxy/phases/spool.py).
        self.budget = BodyBudget(max(1, cfg.cache.inflight_body_bytes // cfg.worker_count()))
        self._heads = {}  # the lane's known answer heads (proxy/phases/lane.py)
        # The origin client's sending with no coroutine, when it has one (the lane's).
        self._send_now = getattr(origin, "send_now", None)
        self._answer = getattr(origin, "answer", None)

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def variant(fields: tuple[str, ...], req: RequestFields) -> tuple[str, ...]:
        return vary_key(fields, req.values)

    # -- the coalesced fetch ------------------------------------------------------------------

    async def miss(self, ctx: RequestCtx) -> Next:
        """One origin request per key: the first request leads (fetches, in its own task),
        later ones follow its outcome (a follower that waits longer than
        `cache.coalesce_wait_s` goes alone, uncached)."""
        key = ctx.key
        assert key is not None
        coalescer = self.coalescer
        shared = coalescer.inflight(key)
        if shared is None:
            ctx.outcome = await self._lead(ctx, key)
            ctx.leader = True
            return Next.ROUTE
        ctx.collapsed = True
        self.stats.coalesced += 1
        try:
            ctx.outcome = await coalescer.follow(shared, self.cfg.cache.coalesce_wait_s)
        except TimeoutError:
            ctx.fwd = b"miss"
            return Next.PASS
        ctx.leader = False
        return Next.ROUTE

    async def _lead(self, ctx: RequestCtx, key: ItemKey) -> FetchOutcome:
        """The coalesced fetch, run by its leader ("Coalescing" in proxy/cache/coalesce.py).
        Cancelled mid-fetch, the leader hands the key over: followers waiting get the outcome
        of a new fetch of their own (as a background refresh: no lease, no 1xx relay to the
        leader's client), never a cancellation."""
        coalescer = self.coalescer
        entry = ctx.entry
        lead = coalescer.begin(key)
        try:
            outcome = await self.fetch_keyed(ctx, key, entry)
        except asyncio.CancelledError:
            task = coalescer.hand_over(
                key, lead, lambda: self.fetch_keyed(ctx, key, entry, background=True)
            )
            if task is not None:
                task.add_done_callback(_close_unclaimed)  # followers never claim an open answer
            raise
        except BaseException as e:
            coalescer.settle(key, lead, e)
            raise
        coalescer.settle(key, lead, outcome)
        return outcome

    async def fetch_alone(self, ctx: RequestCtx) -> Next:
        """A fetch for `ctx.key` that waits for no other (hit-for-miss, or a follower whose
        own directives need a validation of what the leader brought)."""
        assert ctx.key is not None
        ctx.outcome = await self.fetch_keyed(ctx, ctx.key, ctx.entry)
        ctx.leader = True
        return Next.ROUTE

    async def head_through(self, ctx: RequestCtx) -> Next:
        """A HEAD for which a stored GET response needs validating: sent on as HEAD, alone
        (its answer is no GET's outcome to share), and the answer updates or invalidates the
        stored response (RFC 9111 §4.3.5, upstream_response.head_response). A HEAD with
        nothing stored is fetched as a GET instead (`miss`): that fills the cache, and the
        body is judged before it is stored."""
        entry = ctx.entry
        assert entry is not None
        ctx.leader = True
        headers = self.upstream_headers(ctx, for_cache=True)
        request_time = self.clock()
        try:
            up = await self._send(ctx, "HEAD", headers, body=False)
        except OriginError as e:
            ctx.outcome = FetchOutcome(error=e, stale_candidate=entry, method="HEAD")
            return Next.ROUTE
        ctx.outcome = self.head_response(ctx, up, entry, request_time, self.clock())
        return Next.ROUTE

    async def fetch_private(self, ctx: RequestCtx) -> Next:
        """Authorization (RFC 9111 §3.5): no stored response is read, nothing is shared."""
        ctx.outcome = await self.fetch_for_cache(ctx, None)
        ctx.leader = True
        return Next.ROUTE

    async def fetch_keyed(
        self, ctx: RequestCtx, key: ItemKey, entry: Entry | None, *, background: bool = False
    ) -> FetchOutcome:
        """fetch_for_cache, then remember (by the lookup key) whether the response was
        uncacheable, so the next requests for it go to the origin in parallel (hit-for-miss).

        On a memory miss the tier behind is asked first, inside this (coalesced) fetch: one
        lookup for all the requests waiting on the key. A usable entry is the outcome; a stale
        one is the validator source of the conditional request. Not asked for hit-for-miss
        keys (recently uncacheable: nothing to find), nor without a shared tier (the node
        tier is read below, under its lease)."""
        if entry is None and not ctx.hit_for_miss and self.cache.shared is not None:
            found = await self._from_behind(ctx)
            if isinstance(found, FetchOutcome):
                return found
            entry = found
        node = self.cache.node
        leased = False
        if node is not None and entry is None and not ctx.hit_for_miss and not background:
            waited = await self._lease_or_wait(ctx)
            if isinstance(waited, FetchOutcome):
                return waited
            if isinstance(waited, Entry):
                entry = waited
            else:
                leased = waited
        uncacheable = False
        try:
            outcome = await self.fetch_for_cache(ctx, entry, background=background)
            uncacheable = not outcome.stored and outcome.not_stored in RESPONSE_DRIVEN
        finally:
            if leased:
                assert node is not None
                node.release(ctx.primary, uncacheable=uncacheable)
        if entry is not None and outcome.stale_candidate is None:
            outcome.stale_candidate = entry  # a stored response existed (fwd=stale)
        self.note_cacheability(key, outcome, uncacheable)
        return outcome

    def note_cacheability(self, key: ItemKey, outcome: FetchOutcome, uncacheable: bool) -> None:
        """Hit-for-miss bookkeeping after a fetch for `key`: a stored answer ends the mark,
        an answer the response itself made unstorable (re)starts it."""
        if outcome.stored:
            self.coalescer.clear_uncacheable(key)
        elif uncacheable:
            self.coalescer.mark_uncacheable(key)

    async def _lease_or_wait(self, ctx: RequestCtx) -> bool | Entry | FetchOutcome:
        """Coalescing across the node's workers ("Coalescing" in proxy/cache/node.py). True:
        this worker holds the key's lease and fetches. Else another worker is fetching it:
        wait, re-reading the node tier, for its entry (an outcome, or a stored response this
        request must validate), or until it stored nothing and this worker takes the lease,
        or for `cache.coalesce_wait_s` (False: fetch without the lease, counted).

        A lease taken is followed by one more read of the tier: another worker may have
        stored the key and given its lease back between this request's lookup and its lease
        (a client's next request, on a new connection to another worker, can arrive before
        the first worker's commit), and that entry is answered instead of a second fetch."""
        node = self.cache.node
        assert node is not None
        primary = ctx.primary
        if node.lease(primary):
            return self._stored_meanwhile(ctx, leased=True)
        stats, cfg = self.stats, self.cfg.cache
        stats.node_lease_waits += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.coalesce_wait_s
        delay = 0.001
        while True:
            await asyncio.sleep(delay)  # another process's commit raises no event to wait on
            gone = not node.leased_elsewhere(primary)
            found = self._stored_meanwhile(ctx, leased=False)
            if found is not False:
                return found
            if gone and node.lease(primary):
                return self._stored_meanwhile(ctx, leased=True)
            if loop.time() >= deadline:
                stats.node_lease_timeouts += 1
                return False
            delay = min(delay * 2, cfg.node_lease_poll_max_s)

    def _stored_meanwhile(self, ctx: RequestCtx, *, leased: bool) -> bool | Entry | FetchOutcome:
        """What another worker stored for the request's key, read from the node tier: an
        outcome to answer with, or an entry this request must validate (fetched without the
        lease: a lease `leased` here is given back); else `leased` (True: fetch under it)."""
        primary = ctx.primary
        fields = self.cache.vary_fields(primary)
        found = None
        if fields is not None:
            found = self.cache.get((primary, self.variant(fields, ctx.fields)))
        if found is None:
            return leased
        if leased:
            node = self.cache.node
            assert node is not None
            node.release(primary)
        if decide(found, self.clock(), ctx.req_cc) is Reuse.VALIDATE:
            return found
        self.stats.node_coalesced += 1
        return FetchOutcome(entry=found, stored=True, fwd_status=found.status, shared=True)

    async def _from_behind(self, ctx: RequestCtx) -> FetchOutcome | Entry | None:
        """The tier behind memory: a usable entry as an outcome, a stale one as a validator."""
        fields = ctx.fields
        variant = self.variant
        found = await self.cache.get_behind(ctx.primary, lambda f: variant(f, fields) if f else ())
        if found is None:
            return None
        if self.enforcer.unservable(found):
            return None
        self.adopt_shared(ctx, found)
        listed = self.enforcer.listed_digest(found.sha256)
        if listed is not None:
            # Never into memory; gone from the shared tier for every node that looks next.
            self.cache.forget_behind(found.primary)
            self.stats.purged_by_blocklist += 1
            return FetchOutcome(blocked=listed, not_stored=NoStoreReason.BLOCKED)
        if decide(found, self.clock(), ctx.req_cc) is Reuse.VALIDATE:
            return found
        stored = self.cache.adopt(found)
        return FetchOutcome(entry=found, stored=stored, fwd_status=found.status, shared=True)

    def revalidate_behind(self, ctx: RequestCtx, entry: Entry) -> None:
        """RFC 5861 §3: refresh a stale entry in the background, once."""
        if entry.revalidating:
            return
        entry.revalidating = True
        key = (entry.primary, entry.variant)
        if self.coalescer.inflight(key) is not None:
            return

        async def run() -> None:
            try:
                fetch = self.fetch_keyed(ctx, key, entry, background=True)
                outcome = await self.coalescer.lead(key, fetch)
                if outcome.claim():
                    outcome.drop()
            except Exception:  # noqa: BLE001 - a failed background refresh leaves the stale entry
                log.debug("background revalidation failed", exc_info=True)
            finally:
                entry.revalidating = False

        t = asyncio.ensure_future(run())
        self.background.add(t)
        t.add_done_callback(self.background.discard)

    # -- fetch --------------------------------------------------------------------------------

    def upstream_headers(self, ctx: RequestCtx, *, for_cache: bool) -> CIMultiDict[str]:
        """The upstream request's fields: the client's, less hop-by-hop and DROP_UPSTREAM
        (and validators and ranges `for_cache`), then ours; a fresh CIMultiDict each time
        (callers add validators to it)."""
        return self.upstream_request(ctx, for_cache=for_cache)[0]

    def upstream_request(
        self, ctx: RequestCtx, *, for_cache: bool
    ) -> tuple[CIMultiDict[str], bytes | None]:
        """`upstream_headers`, and the same rendered as field lines for the llhttp client
        (`Origin.request`'s `fields`) when known: a client sends the same fields on every
        request of a connection, so those of a request without a body are built and rendered
        once per (fields, client address, authority, scheme, site, for_cache) and copied
        (bounded, UPSTREAM_MEMO_ENTRIES; cleared on reload); only the request id is set per
        request, its field line (the front's, well formed) appended to the rendered ones.
        The rendering holds only while nothing is added to the fields."""
        req = ctx.request
        if req.has_body:
            out = self._upstream_headers(ctx, for_cache)
            rendered = None
        else:
            built, rendered = self._upstream_memo(ctx, for_cache)
            out = built.copy()
        id_field = req.id_field
        if id_field:  # set, not added: the configured name may be any field's
            name_len = len(self.request_id_name)
            out[self.request_id_name] = id_field[name_len + 2 : -2].decode()
            if rendered is not None:
                rendered = self._with_id(rendered, id_field)
        return out, rendered

    def upstream_fields(self, ctx: RequestCtx) -> bytes | None:
        """`upstream_request(ctx, for_cache=True)`'s field lines alone, for a request without
        a body (the lane's: the llhttp client writes them as they are); None when there are
        none rendered, and the request goes with `upstream_request`."""
        _built, rendered = self._upstream_memo(ctx, True)
        id_field = ctx.request.id_field
        if id_field and rendered is not None:
            rendered = self._with_id(rendered, id_field)
        return rendered

    def _upstream_memo(
        self, ctx: RequestCtx, for_cache: bool
    ) -> tuple[CIMultiDict[str], bytes | None]:
        """The upstream fields of a request without a body, and their rendering, as built
        for the last request like it (without the request id)."""
        req = ctx.request
        target = ctx.target
        memo_key = (
            tuple(req.headers),
            req.client_ip,
            target.authority,
            target.scheme,
            ctx.site.index,
            for_cache,
        )
        memo = self._upstream.get(memo_key)
        if memo is None:
            built = self._upstream_headers(ctx, for_cache)
            try:
                fields: bytes | None = render_fields(built)
            except OriginError:
                fields = None  # refused when sent, as any request's fields would be
            # The header list, its built copy and their rendering: about three times its bytes.
            size = 3 * sum(len(n) + len(v) for n, v in req.headers) + UPSTREAM_MEMO_OVERHEAD_BYTES
            if (
                len(self._upstream) >= UPSTREAM_MEMO_ENTRIES
                or self._upstream_bytes + size > self._upstream_max_bytes
            ):
                self._upstream.clear()
                self._upstream_bytes = 0
            self._upstream_bytes += size
            memo = self._upstream[memo_key] = (built, fields)
        return memo

    def _with_id(self, rendered: bytes, id_field: bytes) -> bytes | None:
        """The rendered fields with the front's request id line, unless the front names it
        otherwise (a reload renamed it): then None, and the fields are rendered anew."""
        return rendered + id_field if id_field.startswith(self._request_id_prefix) else None

    def forget_upstream_headers(self) -> None:
        """A reload may change what a site forwards (its origin host): build anew."""
        self._upstream.clear()

    def _upstream_headers(self, ctx: RequestCtx, for_cache: bool) -> CIMultiDict[str]:
        """`upstream_headers` without the request id. Built as a list and made a CIMultiDict
        once (ours are never among the client's kept, so appending is setting)."""
        site = ctx.site
        target = ctx.target
        req = ctx.request
        pairs: list[tuple[str, str]] = []
        xff: list[str] | None = None
        via: list[str] | None = None
        max_forwards: list[bytes] = []
        request_id_lname = self._request_id_lname
        for name, value in strip_hop_by_hop(req.headers):
            n = name.lower()
            if n in DROP_UPSTREAM:
                if n == b"x-forwarded-for":
                    if xff is None:
                        xff = []
                    xff.append(value.decode("latin-1"))
                elif n == b"via":
                    if via is None:
                        via = []
                    via.append(value.decode("latin-1"))
                elif n == b"max-forwards":
                    max_forwards.append(value.strip())
                continue
            if for_cache and n in CONDITIONAL:
                continue
            if n == request_id_lname:
                continue  # ours is set by upstream_headers
            pairs.append((name.decode("latin-1"), value.decode("latin-1")))
        authority = target.authority
        client_ip = req.client_ip
        scheme = target.scheme
        pairs.append(("Host", authority if site.forward_host else site.origin_host))
        pairs.append(("Via", self.via_str if via is None else ", ".join([*via, self.via_str])))
        pairs.append(
            ("X-Forwarded-For", client_ip if xff is None else ", ".join([*xff, client_ip]))
        )
        pairs.append(("X-Forwarded-Proto", scheme))
        pairs.append(("X-Forwarded-Host", authority))
        forwarded = self._forwarded.get((client_ip, authority, scheme))
        if forwarded is None:
            if len(self._forwarded) >= FORWARDED_MEMO_ENTRIES:
                self._forwarded.clear()
            forwarded = forwarded_element(client_ip, authority, scheme)
            self._forwarded[(client_ip, authority, scheme)] = forwarded
        pairs.append(("Forwarded", forwarded))
        if len(max_forwards) == 1 and max_forwards[0].isdigit():
            pairs.append(("Max-Forwards", str(max(0, int(max_forwards[0]) - 1))))
        if req.has_body and req.content_length is not None and not for_cache:
            pairs.append(("Content-Length", str(req.content_length)))
        return CIMultiDict(pairs)

    async def _send(
        self,
        ctx: RequestCtx,
        method: str,
        headers: CIMultiDict[str],
        body: bool,
        *,
        relay_interim: bool = True,
        fields: bytes | None = None,
    ) -> UpstreamResponse:
        """Send the upstream request; the origin's 1xx heads go to this request's client
        (the leader's, for a coalesced fetch: followers joined a request already sent), not
        to anyone for a background refresh."""
        site = ctx.site
        target = ctx.target
        started = time.monotonic()
        stream = _body(ctx) if body else None
        interim = interim_relay(ctx.responder) if relay_interim else None
        up = await self.origin.request(
            site.origin, method, target.raw_path_query, headers, stream, interim, fields
        )
        self.origin_answered(ctx, up, started)
        return up

    def origin_answered(self, ctx: RequestCtx, up: UpstreamResponse, started: float) -> None:
        """Count the origin's final head, which came `started` (time.monotonic()) after the
        request went; a 206 never asked for is refused (OriginError) and closed."""
        elapsed = time.monotonic() - started
        ctx.origin_s += elapsed
        stats = self.stats
        site = ctx.site
        stats.observe_origin(site.index, elapsed)
        stats.origin_responses[site.index][min(up.status // 100, 5) - 1] += 1
        if up.status == 206:
            # Asked for no range (DROP_UPSTREAM): a part cannot be judged, so none is relayed.
            up.close()
            raise OriginError(OriginFailure.PROTOCOL, "partial content (206) never asked for")

    async def fetch_for_cache(
        self, ctx: RequestCtx, entry: Entry | None, *, background: bool = False
    ) -> FetchOutcome:
        """One GET for the cache (HEAD misses fill the cache too). With a stored entry, a
        conditional request with its validators (RFC 9111 §4.3.1)."""
        headers, fields = self.upstream_request(ctx, for_cache=True)
        if entry is not None:
            fields = None  # validators added below
            if entry.etag:
                headers["If-None-Match"] = entry.etag
            lm = entry.header(b"last-modified")
            if lm:
                headers["If-Modified-Since"] = lm.decode("latin-1")
        request_time = self.clock()
        try:
            up = await self._send(
                ctx, "GET", headers, body=False, relay_interim=not background, fields=fields
            )
        except OriginError as e:
            return FetchOutcome(error=e, stale_candidate=entry)
        return await self.answered(ctx, up, entry, request_time, self.clock())

    async def answered(
        self,
        ctx: RequestCtx,
        up: UpstreamResponse,
        entry: Entry | None,
        request_time: float,
        response_time: float,
    ) -> FetchOutcome:
        """upstream_response for the answer to `fetch_for_cache`'s GET: an origin failure
        while it is read is the outcome's error, and `up` is closed on any failure."""
        try:
            return await self.upstream_response(ctx, up, entry, request_time, response_time)
        except OriginError as e:
            up.close()
            return FetchOutcome(error=e, stale_candidate=entry)
        except BaseException:
            up.close()
            raise

    async def fetch_pass(self, ctx: RequestCtx) -> FetchOutcome:
        headers, fields = self.upstream_request(ctx, for_cache=False)
        try:
            up = await self._send(
                ctx, ctx.method, headers, body=ctx.request.has_body, fields=fields
            )
        except OriginError as e:
            return FetchOutcome(error=e)
        hdrs = strip_hop_by_hop(up.headers)
        return FetchOutcome(
            upstream=up,
            headers=hdrs,
            fwd_status=up.status,
            not_stored=NoStoreReason.BYPASS,
            method=ctx.method,
        )

    async def pass_through(self, ctx: RequestCtx) -> Next:
        """Forward as-is (unsafe methods, bodies, hit-for-miss overflow); stream back."""
        ctx.result = Result.PASS
        request_time = self.clock()
        outcome = await self.fetch_pass(ctx)
        if outcome.error is not None:
            raise outcome.error
        if ctx.invalidate:
            self.invalidate(ctx, outcome)
        if ctx.method == "POST" and self.post_answer_reusable(ctx, outcome.headers):
            up = outcome.upstream
            assert up is not None
            try:
                kept = await self.upstream_response(ctx, up, None, request_time, self.clock())
            except BaseException:
                up.close()
                raise
            ctx.outcome = kept
            ctx.leader = True
            return Next.ROUTE  # delivered from what was stored, or streamed if it was not
        outcome.claim()
        ctx.outcome = outcome
        return Next.STREAM


def forwarded_element(client_ip: str, authority: str, scheme: str) -> str:
    """RFC 7239 §4: this hop's element; IPv6 addresses are bracketed and quoted (§6)."""
    node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
    host = authority if _TOKEN_CHARS.issuperset(authority) else f'"{authority}"'
    return f"for={node};host={host};proto={scheme}"


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _close_unclaimed(task: asyncio.Task[FetchOutcome]) -> None:
    """A fetch handed over by a cancelled leader: only followers get its outcome, and they
    never claim an open upstream response, so nobody may be left holding it."""
    if task.cancelled() or task.exception() is not None:
        return
    outcome = task.result()
    if outcome.claim():
        outcome.drop()


async def _body(ctx: RequestCtx) -> AsyncIterator[bytes]:
    async for chunk in ctx.request.body:
        yield chunk
    await asyncio.sleep(0)
