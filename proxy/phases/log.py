"""log: counters and the structured access record, for every answer: hits from the memo,
exchanges that walked the phases, 451s, errors. Counts go into the worker's plain per-site
lists (the admin listener gathers them at scrape time); nothing here formats or allocates
per request beyond the access log's row."""

from __future__ import annotations

import time

from proxy.cache.entry import Entry
from proxy.context import RequestCtx
from proxy.front.api import FrontRequest
from proxy.metrics import (
    B_INDEX,
    NS_INDEX,
    OF_INDEX,
    R_INDEX,
    Result,
    WorkerStats,
    method_class,
)
from proxy.node.accesslog import AccessLog

_R_HIT = R_INDEX[Result.HIT]
_R_BLOCKED = R_INDEX[Result.BLOCKED]


def exchange(
    stats: WorkerStats, access_log: AccessLog | None, ctx: RequestCtx, unknown_site: int
) -> None:
    """Any answer a RequestCtx went through."""
    elapsed = time.perf_counter() - ctx.started
    site = ctx.site_index if ctx.routed else unknown_site
    stats.observe(site, method_class(ctx.method), R_INDEX[ctx.result], ctx.bytes_sent, elapsed)
    if ctx.result is Result.BLOCKED:
        stats.blocked[site][B_INDEX[ctx.blocked_type]] += 1
    elif ctx.origin_failure is not None:
        stats.origin_failures[site][OF_INDEX[ctx.origin_failure]] += 1
    if ctx.no_store is not None:
        stats.not_stored[NS_INDEX[ctx.no_store._value_]] += 1  # not `.value`: a property
    if access_log is not None:
        access_log.record(ctx, elapsed)


def hit(
    stats: WorkerStats,
    access_log: AccessLog | None,
    request: FrontRequest | None,
    entry: Entry,
    started: float,
    sent: int,
) -> None:
    """A hit answered from the memo (no RequestCtx; `request` is None on the front's fast
    answer when there is no access log to write)."""
    elapsed = time.perf_counter() - started
    stats.observe(entry.site_index, 0, _R_HIT, sent, elapsed)  # method class 0: GET/HEAD
    if access_log is not None and request is not None:
        access_log.record_hit(request, entry, entry.site_index, entry.status, sent, elapsed)


def blocked_fast(
    stats: WorkerStats, site: int, type_index: int, method: str, sent: int, started: float
) -> None:
    """A 451 answered from the memo."""
    stats.blocked[site][type_index] += 1
    elapsed = time.perf_counter() - started
    stats.observe(site, method_class(method), _R_BLOCKED, sent, elapsed)
