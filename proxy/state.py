"""One worker's parts, wired in one place: the worker process, the test fixtures and the hit-path
benchmark all build the data plane with `build_worker`, so what tests exercise is what
production runs (the same memory share, shared tier, access log, front limits, fast answer and
error headers)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from proxy.blocklist.keys import match_keys
from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryTier
from proxy.cache.node import TOUCH_ONE_IN, NodeTier, NodeTierError, tier_path
from proxy.cache.shared import SharedTier
from proxy.config import Config
from proxy.context import SPECIAL_FIELDS
from proxy.front.limits import FrontLimits
from proxy.front.request_id import RequestIds
from proxy.front.server import FrontServer
from proxy.metrics import WorkerStats
from proxy.node.accesslog import AccessLog
from proxy.origin import Origin, OriginPool
from proxy.pipeline import Pipeline
from proxy.rfc.cache_status import cache_status_bytes
from proxy.rfc.response import response_cache_control
from proxy.sites import SiteTable

log = logging.getLogger("edgeproxy.worker")


@dataclass(slots=True)
class WorkerParts:
    sites: SiteTable
    stats: WorkerStats
    memory: MemoryTier
    shared: SharedTier | None
    node: NodeTier | None
    origin: Origin
    access_log: AccessLog | None
    pipeline: Pipeline
    server: FrontServer


def front_limits(cfg: Config) -> FrontLimits:
    """The front's limits, taken from `[limits]` by field name."""
    return FrontLimits(**{f.name: getattr(cfg.limits, f.name) for f in fields(FrontLimits)})


def build_worker(
    cfg: Config,
    index: int = 0,
    *,
    origin: Origin | None = None,
    clock: Callable[[], float] | None = None,
) -> WorkerParts:
    """Wire one worker. Its memory tier gets its share of the node's budget; the shared tier
    (when configured) sits behind it; hot hits are answered by the front's fast answer unless
    an access log needs the request object. `origin` and `clock` replace the pooled origin
    client and the wall clock (tests pass an in-memory origin and a fake clock)."""
    sites = SiteTable(cfg)
    stats = WorkerStats(sites.names)
    share = max(1, cfg.cache.memory_cache_bytes // cfg.worker_count())
    memory = MemoryTier(share, min(cfg.cache.max_object_bytes, share))
    origin = origin if origin is not None else OriginPool(cfg.origin)
    ids = None
    if cfg.log.request_id_header:
        ids = RequestIds(cfg.log.request_id_header, cfg.log.request_id_trusted_from)
    access = None
    if cfg.log.access_log:
        access = AccessLog(
            cfg.log.access_log,
            cfg.log.access_log_sample,
            sites.names,
            index,
            stats=stats,
            text=cfg.log.access_log_format == "text",
            request_ids=ids,
            max_buffered=cfg.log.access_log_max_buffered_records,
            flush_interval_s=cfg.log.access_log_flush_interval_s,
            format_chunk_rows=cfg.log.access_log_format_chunk_rows,
            client_fields_max_entries=cfg.log.access_log_client_fields_max_entries,
            max_pending_bytes=cfg.log.access_log_max_pending_bytes,
        )
    # Shared by this node's workers (and a fleet's nodes) behind each memory tier.
    shared = SharedTier.from_config(cfg.cache, stats) if cfg.cache.shared_tier_url else None
    pipeline = Pipeline(
        cfg, sites, memory, origin, stats, clock=clock, access_log=access, shared=shared
    )
    node = open_node_tier(cfg, stats, pipeline.fetcher.via)
    if node is not None:
        pipeline.cache.attach_node(node, node_finisher(sites))
    server = FrontServer(
        pipeline,
        front_limits(cfg),
        server_name=cfg.via_name.encode(),
        flag_headers=SPECIAL_FIELDS,
        fast_answer=pipeline.fast_answer,
        fast_answer_logs=access is not None,  # the hits it answers are logged too
        tls_fields=sites.tls_fields,  # HSTS, on TLS connections only
        request_ids=ids,
        # RFC 9211 on every response, also the front's own refusals.
        error_headers=[
            (b"Cache-Status", cache_status_bytes(cfg.via_name, hit=False, detail="refused"))
        ],
    )
    return WorkerParts(sites, stats, memory, shared, node, origin, access, pipeline, server)


def open_node_tier(cfg: Config, stats: WorkerStats, via: bytes) -> NodeTier | None:
    """The node's tier when `cache.node_tier_bytes` asks for one. One that cannot be opened
    (the supervisor's `prepare` rebuilds a broken one before workers start) leaves this
    worker with memory alone, logged: never a failed start."""
    if cfg.cache.node_tier_bytes <= 0:
        return None
    path = tier_path(cfg)
    try:
        return NodeTier(
            path,
            cfg.cache.node_tier_bytes,
            cfg.cache.max_object_bytes,
            stats,
            clock=time.time,
            uncacheable_s=cfg.cache.hit_for_miss_s,
            touch_delay_s=cfg.cache.node_touch_delay_s,
            touch_interval_s=cfg.cache.node_touch_interval_s,
            via=via,
            overhead_bytes=cfg.cache.entry_overhead_bytes,
            touch_one_in=TOUCH_ONE_IN,
            proof_bytes=cfg.cache.node_proof_cache_bytes,
        )
    except (NodeTierError, OSError) as e:
        log.error("node tier %s not used: %s", path, e)
        return None


def node_finisher(sites: SiteTable) -> Callable[[Entry], Entry | None]:
    """Finish a node-tier entry for this worker as the store phase finishes a new one: its
    site (by host: the site table may differ from the worker that stored it), the
    Cache-Control parsed from its stored fields and its blocklist match keys (the head comes
    rendered in the record, `NodeTier`)."""

    def finish(entry: Entry) -> Entry | None:
        t = entry.target
        site = sites.route(t.host)
        if site is None:
            return None
        entry.site_index = site.index
        entry.cc = response_cache_control(entry.headers)
        entry.keys = match_keys(t.host, t.path, t.query)
        return entry

    return finish
