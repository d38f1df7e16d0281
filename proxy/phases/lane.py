"""The pass-through express lane (issue 18): one step for a plain GET whose answer is known not
to be storable, in place of fetch → upstream_response → route → deliver's stream.

Which requests take it is decided by the phases themselves, on every request: admit and block
run as for any request (the canonical target, its match keys, the current snapshot: a list
change is enforced on the next request), and `lookup` must have said FETCH_ALONE for a plain
GET with nothing stored (the key is marked hit-for-miss: recently uncacheable, within
`cache.hit_for_miss_s`; a stored answer or a lapsed mark sends the request the usual way).
The pipeline then runs `express` instead of `fetch_alone` (Next.EXPRESS).

With no coroutine where the origin client allows it: `express_send` writes the request at
once on an idle pooled connection of an http origin (`H1OriginPool.send_now`), and the
pipeline (`_Relay`) settles the request from the head's future: a known head whose body came
with it is relayed in that callback (`express_answered`), with no task, no coroutine and one
loop turn fewer. Everything else goes on in the walk's task from the same point: a body still
arriving (`_spool_known`), an unknown head (`_full_way`), a failure (ROUTE), and a pooled
connection the origin had closed unseen (`express` sends it again, as `request` would). With
no idle connection, an https origin or fields without a rendering, the walk's `express` does
it all. A client gone meanwhile changes nothing: as in the walk, the answer is read to its
end, logged, and the connection goes back to the pool.

What the lane remembers is not a resource but an answer's head: `(status, reason, fields)` as
the origin sent them, mapped to what upstream_response and deliver made of it (the relayed
field lines, our Cache-Status member, the reason it was not stored). That is a pure function
of the head and the config for a plain GET, remembered only for answers whose not-storing
reason the head alone decides (`HEAD_DECIDED`: no-store, private, Vary: *, Set-Cookie), with
a 200 status, no content coding, no Transfer-Encoding and a Content-Length the hash spool
holds. Any other head (a new Date once a second, an answer become storable, a coded body, an
error) goes the full way from the same point: `answered` (upstream_response), then the walk
routes and streams it, and what it made of the head may be remembered for the next one.

The body is judged as deliver would judge it: with no content coding and no sha256 entry in
the snapshot (`Enforcer.digests_listed`, read when the body is in), no digest could be listed
and none is taken; with digests listed the request does not use the remembered head at all,
and a list that gains its first digest while the body is read has the body judged here
(BodyBlocked: the walk answers 451). Remembered heads are forgotten on reload (they hold the
config's Via and Cache-Status names and its storing rules), and when `cache.pass_lane_max_entries`
are held (emptied whole; 0 turns the lane off).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from proxy.blocklist.enforce import Enforcer
from proxy.blocklist.model import Entry as BlockEntry
from proxy.cache.coalesce import Coalescer
from proxy.cache.entry import Entry
from proxy.config import Config
from proxy.context import FetchOutcome, ItemKey, Next, RequestCtx
from proxy.metrics import Result, WorkerStats
from proxy.origin import OriginError, UpstreamResponse
from proxy.phases.deliver import interim_relay
from proxy.phases.spool import BodyBudget, Spooled, spool, spool_whole
from proxy.phases.upstream_response import RESPONSE_DRIVEN, BodyBlocked
from proxy.rfc.hopbyhop import strip_hop_by_hop
from proxy.rfc.response import content_type_of
from proxy.rfc.storable import NoStoreReason

# Not-storing reasons that a plain GET's answer head decides alone (with the config): the
# request's directives, Authorization and Cookie play no part for a plain request, and no
# freshness lifetime (a function of the time) is read to reach them.
HEAD_DECIDED = frozenset(
    {
        NoStoreReason.NO_STORE,
        NoStoreReason.PRIVATE,
        NoStoreReason.VARY_STAR,
        NoStoreReason.SET_COOKIE,
    }
)
HeadKey = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]  # status, reason, fields as sent


class Sent(NamedTuple):
    """An origin request `express_send` wrote: the head's future, whose waiter, should it
    stop waiting, gives it to the connection's `abandon`."""

    conn: Any  # the origin connection (its `abandon(head)`)
    head: asyncio.Future[Any]  # settles with the final head (`answer` reads it)
    started: float  # time.monotonic() when it went: the origin's time
    request_time: float  # the clock's (RFC 9111 §4.2.3's request_time)


class KnownHead(NamedTuple):
    """What the full path made of one answer head."""

    fields: bytes  # the relayed field lines (deliver's `_stream_head`)
    member: bytes  # our Cache-Status member (for the log)
    reason: NoStoreReason
    content_type: bytes  # for the access log, as it reads it from the relayed fields


class ExpressLane:
    """The lane, as a method of the Fetcher that composes the phases (proxy/phases/fetch.py)."""

    # Provided by Fetcher (proxy/phases/fetch.py), which composes the phases.
    cfg: Config
    enforcer: Enforcer
    coalescer: Coalescer[FetchOutcome]
    budget: BodyBudget
    stats: WorkerStats
    clock: Callable[[], float]
    upstream_request: Callable[..., tuple[object, bytes | None]]
    _send: Callable[..., Awaitable[UpstreamResponse]]
    answered: Callable[..., Awaitable[FetchOutcome]]
    note_cacheability: Callable[[ItemKey, FetchOutcome, bool], None]
    judge_coded: Callable[[list[bytes], bytes], tuple[bytes, BlockEntry | None]]
    _stream_head: Callable[[FetchOutcome, int, bytes], tuple[bytes, bytes]]
    upstream_fields: Callable[[RequestCtx], bytes | None]
    origin_answered: Callable[[RequestCtx, UpstreamResponse, float], None]
    _send_now: Callable[..., tuple[Any, asyncio.Future[Any]] | None] | None
    _answer: Callable[[asyncio.Future[Any]], UpstreamResponse | None] | None

    _heads: dict[HeadKey, KnownHead]

    async def express(self, ctx: RequestCtx) -> Next:
        """The walk's EXPRESS step (a plain GET, nothing stored, its key hit-for-miss): the
        one origin request, then the known head relayed with its body, or the full way."""
        ctx.leader = True
        headers, fields = self.upstream_request(ctx, for_cache=True)
        request_time = self.clock()
        try:
            up = await self._send(ctx, "GET", headers, body=False, fields=fields)
        except OriginError as e:
            ctx.outcome = FetchOutcome(error=e)
            return Next.ROUTE
        step = self.express_answer(ctx, up, request_time)
        return step if isinstance(step, Next) else await step

    def express_send(self, ctx: RequestCtx) -> Sent | None:
        """EXPRESS's origin request written now, with no coroutine, when the origin client can
        (`send_now`: an http origin with an idle pooled connection): the pipeline then settles
        the request from the head's future (`express_answered`). None: the walk's `express`
        sends it (a new connection, https, fields with no rendering)."""
        send_now = self._send_now
        if send_now is None:
            return None
        fields = self.upstream_fields(ctx)
        if fields is None:
            return None
        request_time = self.clock()
        started = time.monotonic()
        interim = interim_relay(ctx.responder)
        sent = send_now(ctx.site.origin, "GET", ctx.target.raw_path_query, fields, interim)
        if sent is None:
            return None
        ctx.leader = True
        conn, head = sent
        return Sent(conn, head, started, request_time)

    def express_answered(self, ctx: RequestCtx, sent: Sent) -> Next | Awaitable[Next]:
        """`express` from the origin's head on, for a request `express_send` sent: DONE when
        it was relayed here and now; a step or a coroutine for the walk otherwise."""
        assert self._answer is not None
        try:
            up = self._answer(sent.head)
            if up is None:
                return self.express(ctx)  # a pooled connection the origin had closed: anew
            self.origin_answered(ctx, up, sent.started)
        except OriginError as e:
            ctx.outcome = FetchOutcome(error=e)
            return Next.ROUTE
        return self.express_answer(ctx, up, sent.request_time)

    def express_answer(
        self, ctx: RequestCtx, up: UpstreamResponse, request_time: float
    ) -> Next | Awaitable[Next]:
        """The origin's answer head: relayed with its body when the head is known (DONE, or
        a coroutine when the body is still to come), else the full way (a coroutine)."""
        key = ctx.key
        assert key is not None
        head = (up.status, up.reason, tuple(up.headers))
        known = self._heads.get(head)
        if known is None or self.enforcer.digests_listed:
            return self._full_way(ctx, key, up, head, request_time)
        self.coalescer.mark_uncacheable(key)  # as fetch_keyed does for the same answer
        self.stats.pass_lane += 1
        ctx.no_store = known.reason
        ctx.result = Result.PASS
        ctx.fwd = b"miss"
        try:
            spooled = spool_whole(up, self.cfg.blocklist.hash_spool_max_bytes, self.budget)
        except BaseException:
            up.close()
            raise
        if spooled is None:
            return self._spool_known(ctx, up, known)
        return self._relay_known(ctx, up, known, spooled)

    async def _spool_known(self, ctx: RequestCtx, up: UpstreamResponse, known: KnownHead) -> Next:
        """A known head whose body is still arriving: read it, then relay it."""
        try:
            spooled = await spool(up, self.cfg.blocklist.hash_spool_max_bytes, self.budget)
        except BaseException:
            up.close()
            raise
        return self._relay_known(ctx, up, known, spooled)

    def _relay_known(
        self, ctx: RequestCtx, up: UpstreamResponse, known: KnownHead, spooled: Spooled
    ) -> Next:
        """The known head and the spooled body, to the client (DONE); a body the origin broke
        off goes to deliver's stream (STREAM)."""
        if not spooled.complete:
            # Its Content-Length fits the spool, so the origin broke off: deliver's stream
            # takes it from what was read, as it does for any answer read ahead.
            outcome = self._outcome(up, known.reason)
            outcome.spooled = spooled
            outcome.claim()
            ctx.outcome = outcome
            return Next.STREAM
        try:
            body = spooled.body
            if self.enforcer.digests_listed:  # the snapshot gained digests meanwhile
                _digest, listed = self.judge_coded([], body)
                if listed is not None:
                    raise BodyBlocked(listed)
            ctx.status = 200
            ctx.cache_status = known.member
            ctx.content_type = known.content_type
            responder = ctx.responder
            responder.start(
                200,
                up.reason or b"OK",
                [],
                content_length=len(body),
                first=body,
                fields=known.fields,
            )
            ctx.bytes_sent = len(body)
            responder.end()
        finally:
            up.close()
            spooled.release()
        return Next.DONE

    async def _full_way(
        self,
        ctx: RequestCtx,
        key: ItemKey,
        up: UpstreamResponse,
        head: HeadKey,
        request_time: float,
    ) -> Next:
        """An answer head the lane does not know: what fetch_alone would have done with it
        (upstream_response, the hit-for-miss bookkeeping), then the walk routes it; and what
        was made of the head is remembered when the head alone decided it."""
        outcome = await self.answered(ctx, up, None, request_time, self.clock())
        reason = outcome.not_stored
        self.note_cacheability(key, outcome, not outcome.stored and reason in RESPONSE_DRIVEN)
        if reason in HEAD_DECIDED and self._learnable(up, outcome):
            assert reason is not None
            fields, member = self._stream_head(outcome, up.status, b"miss")
            heads = self._heads
            if len(heads) >= self.cfg.cache.pass_lane_max_entries:
                heads.clear()
            heads[head] = KnownHead(fields, member, reason, content_type_of(outcome.headers))
        ctx.outcome = outcome
        return Next.ROUTE

    def _learnable(self, up: UpstreamResponse, outcome: FetchOutcome) -> bool:
        """An answer the lane can relay exactly as deliver's stream would: a whole 200 body of
        a known length the hash spool holds, without content coding, nothing read ahead."""
        length = up.content_length
        return (
            up.status == 200
            and outcome.entry is None
            and outcome.error is None
            and outcome.blocked is None
            and outcome.upstream is up
            and outcome.spooled is None
            and not outcome.codings
            and length is not None
            and length <= self.cfg.blocklist.hash_spool_max_bytes
            and not any(n.lower() == b"transfer-encoding" for n, _v in up.headers)
        )

    @staticmethod
    def _outcome(up: UpstreamResponse, reason: NoStoreReason) -> FetchOutcome:
        """The outcome upstream_response makes of a known head (no content coding)."""
        return FetchOutcome(
            upstream=up,
            headers=strip_hop_by_hop(up.headers),
            codings=[],
            fwd_status=up.status,
            not_stored=reason,
        )

    def forget_heads(self) -> None:
        """A reload: the relayed heads hold the old config's names and storing rules."""
        self._heads.clear()


def lane_takes(ctx: RequestCtx, plain: bool, entry: Entry | None) -> bool:
    """Whether lookup's FETCH_ALONE for this request may be run by the lane: a plain GET
    (no body, no flagged field: no directives, conditionals, ranges or Authorization) with
    nothing stored to validate."""
    return plain and entry is None and ctx.method == "GET" and ctx.hit_for_miss
