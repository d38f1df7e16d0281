"""The phase walk: admit → block → lookup → fetch → upstream_response → store → deliver → log.

This is the only place control flow between phases lives. Each phase returns a `Next`
(proxy/context.py) and `_walk` runs the step it names, as Varnish's request state machine does.
Up to and including lookup all is synchronous: a fresh hit is answered from `__call__` (no
task, no coroutine); a request that needs the origin continues in `_walk`. In front sits the
memo of hot answers (proxy/phases/memo.py): it repeats these phases' decisions, makes none.
A plain GET that lookup sends to the origin alone (hit-for-miss) is fetched and relayed by the
pass-through lane (proxy/phases/lane.py) in one step when the answer's head is one the full
way already found not storable; any other answer continues the walk from ROUTE. The lane's
request is written from `__call__` when the origin client can, and answered from the origin
head's callback (`_Relay`): the walk's task starts only when the answer needs it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from proxy.blocklist.digest import DecodeLimits
from proxy.blocklist.enforce import Enforcer
from proxy.blocklist.snapshot import Snapshot
from proxy.cache.coalesce import Coalescer
from proxy.cache.memory import MemoryTier
from proxy.cache.shared import SharedTier
from proxy.cache.tiered import TieredCache
from proxy.config import Config
from proxy.context import FetchOutcome, Next, RequestCtx, RequestFields
from proxy.front.api import ClientGone, FrontRequest, Responder
from proxy.front.wire import Wire
from proxy.gate import Gate, hold
from proxy.metrics import B_INDEX, Result, WorkerStats
from proxy.origin import Origin, OriginError
from proxy.phases import admit, block, deliver, lookup
from proxy.phases import log as log_phase
from proxy.phases.fetch import Fetcher
from proxy.phases.lane import Sent, lane_takes
from proxy.phases.memo import HotMemo, Remembered451
from proxy.phases.spool import OverBudget
from proxy.phases.upstream_response import BodyBlocked
from proxy.sites import SiteTable

if TYPE_CHECKING:
    from proxy.node.accesslog import AccessLog

Step = Callable[[RequestCtx], Awaitable[Next] | Next]


def _no_step(ctx: RequestCtx) -> Next:
    raise KeyError("no step for this Next")  # LOOKUP and DONE are never walked to


class _Relay:
    """A request the pass-through lane sent with no coroutine (`Fetcher.express_send`): the
    front waits on `done`; the origin head's future settles it. A known head whose body is
    in is relayed in that callback (no task, no coroutine); anything else (the body still to
    come, an unknown head, a failure) goes on in a task of the walk's. A client gone before
    the answer ends the origin exchange as an awaited one would (`abandon`)."""

    __slots__ = ("pipeline", "ctx", "sent", "done", "task")

    def __init__(self, pipeline: Pipeline, ctx: RequestCtx, sent: Sent) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        self.sent = sent
        self.task: asyncio.Task[None] | None = None
        done: asyncio.Future[None] = sent.head.get_loop().create_future()
        self.done = done
        sent.head.add_done_callback(self.answered)
        done.add_done_callback(self.ended)

    def answered(self, head: asyncio.Future[Any]) -> None:
        done = self.done
        if done.done():
            return  # the front gave up on it: `ended` closed the exchange
        pipeline = self.pipeline
        ctx = self.ctx
        failure: Exception | None = None
        try:
            try:
                step = pipeline.fetcher.express_answered(ctx, self.sent)
            except Exception as e:  # as the walk answers a step's failure
                step = Next.DONE
                if not pipeline._failed(ctx, e):
                    failure = e
            if step is not Next.DONE:
                task = asyncio.get_running_loop().create_task(pipeline._walk(ctx, step))
                self.task = task
                task.add_done_callback(self.walked)
                return
            pipeline._log(ctx)
        except Exception as e:  # a fault in the answer or the log: the front answers it
            failure = e
        self._settle(failure)

    def walked(self, task: asyncio.Task[None]) -> None:
        done = self.done
        if done.done():
            return
        if task.cancelled():
            done.remove_done_callback(self.ended)
            done.cancel()
        else:
            self._settle(task.exception())

    def _settle(self, failure: BaseException | None) -> None:
        """The front's request is over: failed with `failure` (the front answers it), or
        done. `ended` is for a front that gives up first, so it goes."""
        done = self.done
        done.remove_done_callback(self.ended)
        if failure is not None:
            done.set_exception(failure)
        else:
            done.set_result(None)

    def ended(self, done: asyncio.Future[None]) -> None:
        """`done` settled before the answer: the front cancelled it (it aborted the
        connection: a drain's deadline, a write stall). The origin exchange ends too."""
        if self.task is not None:
            self.task.cancel()
        else:
            self.sent.conn.abandon(self.sent.head)


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
        self.shared = shared
        # The one cache facade: nothing below asks which tiers exist.
        self.cache = TieredCache(
            memory, shared, adopt_bytes_per_read=cfg.cache.node_adopt_bytes_per_read
        )
        self.stats = stats
        self.access_log = access_log
        clock = clock or time.time
        self.memo = HotMemo(
            cfg.cache.hot_memo_max_entries,
            clock,
            self.cache.touch,
            node=self.cache,  # node-tier answers too, refused as lookup would refuse them
            refused=lambda entry: lookup.stored_refused(self.enforcer, entry),
            max_bytes=cfg.cache.hot_memo_max_bytes,
        )
        self.enforcer = Enforcer(
            self.cache, stats, on_swap=self.memo.clear, purge_slice_s=cfg.blocklist.purge_slice_s
        )
        self.fetcher = fetcher = Fetcher(cfg, origin, self.cache, stats, self.enforcer, clock=clock)
        self.coalescer: Coalescer[FetchOutcome] = fetcher.coalescer
        self.cache_name = fetcher.cache_name
        self._hit_status = fetcher.hit_status
        self._take_hit = self.memo.take_hit  # bound once: the front's fast answer calls it
        # The raw target of the request the fast answer just found no remembered hit for: the
        # front hands that request to `__call__` next, which then does not ask the memo again
        # (a wrong match, another request's target object, only costs it the memo's shortcut:
        # the phases decide what the memo would have repeated).
        self._declined: bytes | None = None
        self._unknown_site = len(sites.sites)
        self._lane_on = cfg.cache.pass_lane_max_entries > 0
        # The go-live gate (proxy/gate.py), set by the worker when [gate] is on: hosts the
        # signed site roster does not name are held before anything else is decided.
        self.gate: Gate | None = None
        # RFC 7725 §3: identify the entity implementing the block (configurable per site).
        self.default_blocked_by = (
            cfg.blocklist.default_blocked_by_url or f"urn:edgeproxy:node:{cfg.via_name}"
        )
        steps: dict[Next, Step] = {
            Next.HIT: self._deliver_hit,
            Next.STALE_WHILE_REVALIDATE: self._deliver_and_refresh,
            Next.ONLY_IF_CACHED: lambda ctx: deliver.only_if_cached(ctx, cfg.via_name),
            Next.MISS: fetcher.miss,
            Next.FETCH_ALONE: fetcher.fetch_alone,
            Next.EXPRESS: fetcher.express,
            Next.PRIVATE: fetcher.fetch_private,
            Next.HEAD_THROUGH: fetcher.head_through,
            Next.ROUTE: fetcher.route,
            Next.DELIVER: self._deliver,
            Next.STREAM: fetcher.stream,
            Next.PASS: fetcher.pass_through,
            Next.BLOCKED: self._blocked,
            Next.ORIGIN_ERROR: self._raise_origin_error,
        }
        self._steps = steps
        # The same by each Next's value, for the walk: an Enum member's hash is a Python call.
        self._by_value: list[Step] = [_no_step] * (max(n.value for n in Next) + 1)
        for n, run in steps.items():
            self._by_value[n.value] = run

    @property
    def clock(self) -> Callable[[], float]:
        """The data plane's one clock (the fetcher's: freshness, storing, the memo)."""
        return self.fetcher.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.fetcher.clock = self.memo.clock = clock

    @property
    def blocklist(self) -> Snapshot:
        """The snapshot every request of this worker is checked against."""
        return self.enforcer.snapshot

    # -- the front's handlers -----------------------------------------------------------------

    def __call__(self, request: FrontRequest, responder: Responder) -> Awaitable[None] | None:
        started = time.perf_counter()
        plain = not request.flagged and not request.has_body
        declined = self._declined
        self._declined = None
        if plain and request.raw_target is not declined:
            hot = self._take_hit(request.method, request.raw_target, request.host)
            if hot is not None:
                entry, now = hot
                sent = deliver.hit(request, responder, entry, now, self._hit_status)
                log_phase.hit(self.stats, self.access_log, request, entry, started, sent)
                return None
        fields = RequestFields(request.headers)
        ctx = RequestCtx(request, responder, started, fields, request.method)
        if self._admit(ctx) is Next.DONE:
            return None
        step = lookup.lookup(ctx, self.cache, self.enforcer, self.coalescer, self.clock())
        if step is Next.FETCH_ALONE and self._lane_on and lane_takes(ctx, plain, ctx.entry):
            # The same fetch, by the pass-through lane (phases/lane.py): sent now when the
            # origin client can, and then answered from its callbacks, with no coroutine.
            written = self.fetcher.express_send(ctx)
            if written is not None:
                return _Relay(self, ctx, written).done
            step = Next.EXPRESS
        elif step is Next.HIT or step is Next.BLOCKED:
            # Answered synchronously: a fresh hit costs no task and no coroutine.
            self._steps[step](ctx)
            entry = ctx.entry
            if plain and ctx.result is Result.HIT and entry is not None and not entry.vary_fields:
                self.memo.remember_hit(request.raw_target, request.host, entry)
            self._log(ctx)
            return None
        return self._walk(ctx, step)

    def fast_answer(
        self,
        method: str,
        raw_target: bytes,
        host: bytes | None,
        keep_alive: bool,
        version: str,
        fields: bytes = b"",
        request: FrontRequest | None = None,
    ) -> Wire | None:
        """The front's fast answer (FrontServer(fast_answer=…)): a remembered hit or 451, as
        bytes, before any request object exists; None sends the request the usual way.
        `fields`: the request id line the front assigned, for the answer. With an access log
        the front hands over the request (`fast_answer_logs`) and a hit is logged from it; a
        remembered 451 then goes the usual way, which logs what blocked it."""
        started = time.perf_counter()
        hot = self._take_hit(method, raw_target, host)
        if hot is not None:
            entry, now = hot
            data = deliver.hit_bytes(
                method, keep_alive, version, entry, now, self._hit_status, fields
            )
            sent = 0 if method == "HEAD" else len(entry.body)
            log_phase.hit(self.stats, self.access_log, request, entry, started, sent)
            return data
        self._declined = raw_target  # no remembered hit: `__call__` need not ask again
        if self.access_log is not None:
            return None  # a remembered 451 goes the usual way, which logs what blocked it
        blocked = self.memo.blocked(raw_target, host)
        if blocked is None:
            return None
        head, body, site, typ = blocked
        log_phase.blocked_fast(
            self.stats, site, typ, method, 0 if method == "HEAD" else len(body), started
        )
        return block.render_451(head, body, method, keep_alive, version, fields)

    # -- the walk -----------------------------------------------------------------------------

    async def _walk(self, ctx: RequestCtx, step: Next | Awaitable[Next]) -> None:
        steps = self._by_value
        try:
            if not isinstance(step, Next):
                step = await step  # a step under way (the lane's, `_Relay`)
            while step is not Next.DONE:
                result = steps[step._value_](ctx)
                step = result if isinstance(result, Next) else await result
        except Exception as e:
            if not self._failed(ctx, e):
                raise
        finally:
            self._log(ctx)

    def _failed(self, ctx: RequestCtx, e: Exception) -> bool:
        """The answers a step's failure gets: True when `e` was answered (or the client is
        gone); False when the walk must fail (the answer was under way, or `e` is a fault)."""
        if isinstance(e, ClientGone):
            ctx.result = Result.ERROR if not ctx.status else ctx.result
            return True
        if ctx.responder.started:
            return False
        if isinstance(e, BodyBlocked):
            ctx.blocked_by = e.entry
            self._blocked(ctx)
        elif isinstance(e, OriginError):
            self._origin_error(ctx, e)
        elif isinstance(e, OverBudget):
            ctx.result = Result.ERROR
            self.stats.inflight_refused += 1
            deliver.over_budget(ctx, self.cfg.via_name, self.cfg.cache.inflight_retry_after_s)
        else:
            return False
        return True

    def _admit(self, ctx: RequestCtx) -> Next:
        """admit, the answers this hop gives itself (Max-Forwards 0), then block: LOOKUP, or
        DONE when one of them answered (and logged) the request."""
        refused = admit.admit(ctx, self.sites)
        if (
            refused is None
            and self.gate is not None
            and self.gate.holds(ctx.target.host, ctx.target.path)
        ):
            ctx.result = Result.ERROR
            hold(ctx, self.gate, self.cfg.via_name)
        elif refused is not None:
            ctx.result = Result.ERROR
            deliver.refused(ctx, refused.status, refused.reason, self.cfg.via_name)
        elif admit.answers_here(ctx):
            ctx.result = Result.PASS
            deliver.max_forwards_reached(ctx, self.fetcher.via, self.fetcher.cache_name)
        else:
            listed = block.block(ctx, self.blocklist)
            if listed is None:
                return Next.LOOKUP  # admitted, and not listed
            head, body = block.answer_451(ctx, listed, self.default_blocked_by, self.cache_name)
            req = ctx.request
            if not req.flagged and not req.has_body:
                # The same raw target and Host get the same answer until the next snapshot.
                answer = Remembered451(head, body, ctx.site_index, B_INDEX[ctx.blocked_type])
                self.memo.remember_blocked(req.raw_target, req.host, answer)
        self._log(ctx)
        return Next.DONE

    # -- the steps the pipeline runs itself (the others are the fetcher's) ---------------------

    def _deliver_hit(self, ctx: RequestCtx) -> Next:
        assert ctx.entry is not None
        now = self.clock()
        status = deliver.hit_cache_status(self.fetcher.hit_status, ctx.entry, now)
        deliver.from_entry(ctx, ctx.entry, now, status + ctx.hit_detail)
        return Next.DONE

    def _deliver_and_refresh(self, ctx: RequestCtx) -> Next:
        self._deliver_hit(ctx)
        assert ctx.entry is not None
        self.fetcher.revalidate_behind(ctx, ctx.entry)
        return Next.DONE

    def _deliver(self, ctx: RequestCtx) -> Next:
        assert ctx.entry is not None and ctx.outcome is not None  # DELIVER comes from route
        deliver.from_entry(ctx, ctx.entry, self.clock(), ctx.cache_status, ctx.outcome.relay_head)
        return Next.DONE

    def _blocked(self, ctx: RequestCtx) -> Next:
        assert ctx.blocked_by is not None
        block.answer_451(ctx, ctx.blocked_by, self.default_blocked_by, self.cache_name)
        return Next.DONE

    def _raise_origin_error(self, ctx: RequestCtx) -> Next:
        assert ctx.outcome is not None and ctx.outcome.error is not None
        raise ctx.outcome.error

    def _origin_error(self, ctx: RequestCtx, e: OriginError) -> None:
        ctx.result = Result.ERROR
        ctx.origin_failure = e.kind
        deliver.origin_error(ctx, e, self.cfg.via_name, self.fetcher.via)

    def _log(self, ctx: RequestCtx) -> None:
        log_phase.exchange(self.stats, self.access_log, ctx, self._unknown_site)

    # -- lifecycle (blocklist application and purges: `self.enforcer`, `self.cache`) ---------

    def reconfigure(self, cfg: Config, sites: SiteTable) -> None:
        """A reload applied in place (proxy/node/reload.py): new sites and blocklist settings,
        the same cache, origin client, enforcer and counters. Only for configs whose `[cache]`,
        `[origin]`, `via_name` and site names are unchanged (the supervisor restarts the worker
        otherwise). Requests under way finish on the settings they started with."""
        if sites.names != self.sites.names:
            raise ValueError("the sites' names or order changed: the worker must restart")
        self.cfg = cfg
        self.sites = sites
        fetcher = self.fetcher
        fetcher.cfg = cfg
        fetcher.decode_limits = DecodeLimits.from_config(cfg.blocklist)
        fetcher.forget_upstream_headers()  # built under the old sites
        fetcher.forget_heads()  # relayed with the old names, judged by the old storing rules
        self._lane_on = cfg.cache.pass_lane_max_entries > 0
        self.default_blocked_by = (
            cfg.blocklist.default_blocked_by_url or f"urn:edgeproxy:node:{cfg.via_name}"
        )
        self.enforcer.purge_slice_s = cfg.blocklist.purge_slice_s
        self.memo.clear()  # remembered answers were decided under the old sites

    async def close(self) -> None:
        """Stop background work owned by the pipeline (the shared tier's writer)."""
        await self.cache.close()
