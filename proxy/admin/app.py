"""The admin listener (one per node, in the supervisor): health, metrics, purge, blocklist push,
status. Mutating endpoints need `Authorization: Bearer <token>` (constant-time compare); with no
token configured they answer 403, and a non-loopback admin address is refused at start.

The API is reachable from a browser on the operator's machine, so every request passes a guard
first: a Host the admin does not answer to gets 421 (a DNS-rebound name never reads even the
unauthenticated endpoints), an `Origin` other than the admin's own gets 403, a mutation that is
not `application/json` gets 415 (no form or `text/plain` POST is a "simple" cross-site request
that applies), and a declared body over `max_body_bytes` gets 413 before a byte is read. Bodies
are read under a total deadline (`body_timeout_s`), so a trickled upload cannot hold a
connection.

It sees the node only through `proxy.admin.view.NodeView`; the supervisor satisfies it. The guard,
the token check and the body and JSON helpers every route module shares are in guard.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from proxy.admin.guard import (
    GUARD,
    NODE,
    AdminGuard,
    _body,
    _error,
    _json,
    _node,
    authenticated,
    guard,
)
from proxy.admin.processes import SUPERVISOR, process_families, worker_label
from proxy.admin.view import NodeView
from proxy.blocklist.model import Entry
from proxy.config import AdminConfig, parse_hostport
from proxy.identity import python_version, version
from proxy.metrics import BLOCK_TYPES, LATENCY_BUCKETS_S, RESULTS, combine, families
from proxy.node.control import ControlError, StatsReply
from proxy.node.tail import families as tail_families

log = logging.getLogger("edgeproxy.admin")


class AdminRefused(Exception):
    pass


class PurgeBody(msgspec.Struct, forbid_unknown_fields=True):
    url: str = ""
    prefix: str = ""
    host: str = ""


class StrictEntry(Entry, forbid_unknown_fields=True):
    """An entry as pushed: a misspelt field (`expire_at`) is an error naming it, never dropped
    (which would make a temporary entry permanent)."""


class PushBody(msgspec.Struct, forbid_unknown_fields=True):
    entries: list[dict[str, Any]]


AUDIT_HEAD_HEADER = "X-Edgeproxy-Audit-Head"
_audit_head = msgspec.json.Decoder(dict[str, str | int | float])


def _audit_head_of(request: web.Request) -> dict[str, Any] | None:
    """A publisher's signed audit-log head sent along with a push or removal (a header, so
    nodes that predate it ignore it). Kept as evidence; a malformed one is logged, never a
    reason to refuse the change it came with."""
    text = request.headers.get(AUDIT_HEAD_HEADER)
    if not text:
        return None
    try:
        head = _audit_head.decode(text.encode())
    except (msgspec.DecodeError, UnicodeEncodeError) as e:
        log.warning("ignoring malformed %s: %s", AUDIT_HEAD_HEADER, e)
        return None
    return head if len(head) <= 16 else None


# -- health ------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok", "workers": _node(request).health().running})


async def readyz(request: web.Request) -> web.Response:
    """Ready: every worker listens, answers, runs the current config and enforces the node's
    blocklist version, and every origin accepts connections."""
    node = _node(request)
    problems = []
    health = node.health()
    if health.listening < health.wanted:
        problems.append(f"{health.listening} of {health.wanted} workers listening")
    if health.behind_config:
        problems.append(f"workers {health.behind_config} still run an older config")
    stats = await node.gather_stats()
    if len(stats) < health.running:
        problems.append(f"{len(stats)} of {health.running} workers answered")
    versions = {s.blocklist.version for s in stats}
    if versions != {node.blocklist.version}:
        problems.append(
            f"workers enforce versions {sorted(versions)}, node is at {node.blocklist.version}"
        )
    for site in node.cfg.sites:
        host, port = _origin_addr(site.origin)
        try:
            async with asyncio.timeout(1.0):
                _, w = await asyncio.open_connection(host, port)
                w.close()
        except (OSError, TimeoutError):
            problems.append(f"origin of site {site.name} ({host}:{port}) unreachable")
    if (stale := node.blocklist.stale_since()) is not None:
        problems.append(f"blocklist stale since {_iso(stale)} (still enforced)")
    if (fleet := getattr(node, "fleet", None)) is not None:  # behind or cut off from the feed
        problems.extend(fleet.problems())
    body = {
        "ready": not problems,
        "problems": problems,
        "blocklist_version": node.blocklist.version,
        "config_generation": health.config_generation,
    }
    return _json(body, 200 if not problems else 503)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _origin_addr(origin: str) -> tuple[str, int]:
    from yarl import URL

    u = URL(origin)
    return u.host or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)


def _total(node: NodeView, stats: list[StatsReply]) -> dict[str, Any] | None:
    """Every worker's counts plus those of workers gone, summed by site name."""
    snaps = [s.stats for s in stats]
    if node.retired_stats is not None:
        snaps.append(node.retired_stats)
    return combine(snaps)


# -- metrics -----------------------------------------------------------------------------------


class _Collector:
    def __init__(self, node: NodeView, stats: list[StatsReply]) -> None:
        self.node = node
        self.stats = stats

    def collect(self) -> Any:
        node = self.node
        info = GaugeMetricFamily(
            "edgeproxy_build_info",
            "Always 1; the labels say which edgeproxy and Python this node runs",
            labels=["version", "python"],
        )
        info.add_metric([version(), python_version()], 1)
        yield info
        total = _total(node, self.stats)
        if total is not None:
            yield from families([s.name for s in node.cfg.sites], total)
        yield from self._worker_families()
        yield from tail_families(
            [(worker_label(s.worker), s.tail, s.stats) for s in sorted(self.stats, key=_by_worker)],
            LATENCY_BUCKETS_S,
        )
        yield from self._blocklist_families()
        if (fleet := getattr(node, "fleet", None)) is not None:
            yield from fleet.families()
        yield CounterMetricFamily(
            "edgeproxy_worker_restarts", "Workers restarted after dying", value=node.restarts
        )
        yield CounterMetricFamily(
            "edgeproxy_tls_reload_failures",
            "Certificate reloads refused (a file that does not load; the served ones kept)",
            value=node.tls_reload_failures,
        )
        yield GaugeMetricFamily("edgeproxy_workers", "Workers running", value=node.health().running)
        yield from process_families(
            [
                (SUPERVISOR, os.getpid()),  # the admin listener runs in the supervisor
                *((worker_label(s.worker), s.pid) for s in sorted(self.stats, key=_by_worker)),
            ]
        )

    def _worker_families(self) -> Any:
        """The workers' memory tiers, connections and enforced versions; the node tier."""
        cache_bytes = GaugeMetricFamily("edgeproxy_cache_bytes", "Bytes held by the memory tier")
        cache_objects = GaugeMetricFamily("edgeproxy_cache_objects", "Objects in the memory tier")
        cache_max = GaugeMetricFamily("edgeproxy_cache_max_bytes", "Memory tier capacity")
        evictions = CounterMetricFamily("edgeproxy_cache_evictions", "LRU evictions")
        conns = GaugeMetricFamily("edgeproxy_open_connections", "Open client connections")
        waiters = GaugeMetricFamily("edgeproxy_coalescing_waiters", "Requests waiting on a fetch")
        wver = GaugeMetricFamily(
            "edgeproxy_worker_blocklist_version",
            "Blocklist version each worker enforces",
            labels=["worker"],
        )
        cache_bytes.add_metric([], sum(s.cache.bytes for s in self.stats))
        cache_objects.add_metric([], sum(s.cache.objects for s in self.stats))
        cache_max.add_metric([], sum(s.cache.max_bytes for s in self.stats))
        evictions.add_metric([], sum(s.cache.evictions for s in self.stats))
        conns.add_metric([], sum(s.connections for s in self.stats))
        waiters.add_metric([], sum(s.coalescing_waiters for s in self.stats))
        for s in self.stats:
            wver.add_metric([str(s.worker)], s.blocklist.version)
        yield from (cache_bytes, cache_objects, cache_max, evictions, conns, waiters, wver)
        # The node tier is the node's: every worker reports the same one (the largest answer
        # is the freshest), never a sum.
        node_tier = (
            ("edgeproxy_node_tier_bytes", "Bytes held by the node tier", "node_bytes"),
            ("edgeproxy_node_tier_objects", "Objects in the node tier", "node_objects"),
            ("edgeproxy_node_tier_max_bytes", "Node tier capacity", "node_max_bytes"),
        )
        for name, doc, attr in node_tier:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], max((getattr(s.cache, attr) for s in self.stats), default=0))
            yield g

    def _blocklist_families(self) -> Any:
        """The node's list: version, when applied, staleness, refusals, entries by type."""
        node = self.node
        bl = node.blocklist
        yield GaugeMetricFamily(
            "edgeproxy_blocklist_version", "Node blocklist version", value=bl.version
        )
        yield GaugeMetricFamily(
            "edgeproxy_blocklist_last_apply_timestamp_seconds",
            "When the current version was applied",
            value=bl.applied_at,
        )
        yield GaugeMetricFamily(
            "edgeproxy_blocklist_stale",
            "1 when the enforced file version is past its signed valid_until (still enforced)",
            value=0 if bl.stale_since() is None else 1,
        )
        yield CounterMetricFamily(
            "edgeproxy_blocklist_reload_failures",
            "Rejected blocklist versions and failed reloads",
            value=bl.reload_failures,
        )
        entries = GaugeMetricFamily(
            "edgeproxy_blocklist_entries", "Entries by type", labels=["type"]
        )
        for t, n in bl.counts().items():
            entries.add_metric([t], n)
        yield entries
        yield CounterMetricFamily(
            "edgeproxy_blocklist_compiles",
            "Blocklist compile jobs finished (file and feed versions, refreshes)",
            value=bl.compiles,
        )
        yield CounterMetricFamily(
            "edgeproxy_blocklist_tables_shipped",
            "File versions taken from their signer's compiled table (no local compile)",
            value=bl.tables_shipped,
        )
        yield GaugeMetricFamily(
            "edgeproxy_blocklist_pinned_bytes",
            "Bytes of the mapped table's probe sections locked in memory (0: off or refused)",
            value=bl.pinner.pinned_bytes,
        )
        yield CounterMetricFamily(
            "edgeproxy_blocklist_pin_failures",
            "Tables whose probe sections could not be locked in memory (see the log)",
            value=bl.pinner.failures,
        )
        rejected = CounterMetricFamily(
            "edgeproxy_blocklist_table_rejected",
            "Shipped compiled tables refused, by reason (the version was compiled locally)",
            labels=["reason"],
        )
        for reason, n in sorted(bl.table_rejections.items()):
            rejected.add_metric([reason], n)
        yield rejected
        # A long load, as it goes: the running compile job's progress (0 when none runs).
        loading = bl.loading_status() or {}
        for name, help_text, value in (
            (
                "running",
                "1 while a blocklist version is being read and compiled",
                1 if loading else 0,
            ),
            (
                "entries_done",
                "Entries the running compile job's phase has done",
                loading.get("entries_done", 0),
            ),
            (
                "entries_total",
                "Entries the running compile job's phase has in all",
                loading.get("entries_total", 0),
            ),
            (
                "eta_seconds",
                "Seconds the running compile job's phase has left at its rate so far",
                loading.get("eta_s") or 0,
            ),
        ):
            yield GaugeMetricFamily(f"edgeproxy_blocklist_compile_{name}", help_text, value=value)


def _by_worker(s: StatsReply) -> int:
    return s.worker


async def metrics(request: web.Request) -> web.Response:
    node = _node(request)
    stats = await node.gather_stats()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(node, stats))
    text = await asyncio.to_thread(generate_latest, registry)
    return web.Response(
        body=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Prometheus-Format": "0.0.4"},
    )


# -- purge and blocklist -----------------------------------------------------------------------


@authenticated
async def purge(request: web.Request) -> web.Response:
    body = await _body(request, PurgeBody)
    given = {k: v for k, v in msgspec.structs.asdict(body).items() if v}
    if len(given) != 1:
        return _error(400, "give exactly one of url, prefix or host")
    try:
        purged, workers = await _node(request).purge(**given)
    except ValueError as e:
        return _error(400, str(e))
    except ControlError as e:
        return _error(502, str(e))
    return _json({"purged": purged, "workers": workers})


@authenticated
async def push_entries(request: web.Request) -> web.Response:
    body = await _body(request, PushBody)
    if not body.entries:
        return _error(400, 'expected {"entries": [{"id", "type", "value", "notice", "reason"}, …]}')
    try:
        # Checked strictly first; the node then takes the very same dicts.
        msgspec.convert(body.entries, type=list[StrictEntry])
        result = await _node(request).blocklist.push(body.entries, _audit_head_of(request))
    except (msgspec.ValidationError, ValueError) as e:
        return _error(400, f"invalid entry: {e}")
    except ControlError as e:
        return _error(503, f"not applied on every worker: {e}")
    return _json(result)


@authenticated
async def delete_entry(request: web.Request) -> web.Response:
    entry_id = request.match_info["id"]
    bl = _node(request).blocklist
    try:
        result = await bl.remove(entry_id, _audit_head_of(request))
    except ControlError as e:
        return _error(503, f"not applied on every worker: {e}")
    if result is None:
        if bl.known(entry_id):
            return _error(
                409, f"entry {entry_id} comes from a signed file version; remove it there"
            )
        return _error(404, f"no pushed entry {entry_id}")
    return _json(result)


async def get_blocklist(request: web.Request) -> web.Response:
    node = _node(request)
    stats = await node.gather_stats()
    bl = node.blocklist
    return _json(
        {
            "version": bl.version,
            "applied_at": bl.applied_at,
            "file_sequence": bl.file_sequence,
            "pushed_entries": len(bl.pushed),
            "counts": bl.counts(),
            "workers": [
                {
                    "worker": s.worker,
                    "pid": s.pid,
                    "version": s.blocklist.version,
                    "applied_at": s.blocklist.applied_at,
                }
                for s in sorted(stats, key=lambda s: s.worker)
            ],
            "history": list(bl.history),
            "reload_failures": bl.reload_failures,
            "loading": bl.loading_status(),
            "last_errors": bl.last_errors,
            "audit_head": bl.audit_head,
        }
    )


def _requests(stats: dict[str, Any]) -> int:
    return sum(sum(map(sum, site["requests"])) for site in stats["sites"].values())


async def status(request: web.Request) -> web.Response:
    node = _node(request)
    stats = await node.gather_stats()
    total = _total(node, stats)
    by_result: dict[str, int] = {}
    blocked: dict[str, int] = {}
    if total is not None:
        sites = list(total["sites"].values())
        for r, result in enumerate(RESULTS):
            by_result[result.value] = sum(m[r] for site in sites for m in site["requests"])
        for t, typ in enumerate(BLOCK_TYPES):
            blocked[typ] = sum(site["blocked"][t] for site in sites)
    return _json(
        {
            "uptime_s": time.time() - node.started_at,
            "now": time.time(),
            "workers": [
                {
                    "worker": s.worker,
                    "pid": s.pid,
                    "connections": s.connections,
                    "requests": _requests(s.stats),
                    "cache_objects": s.cache.objects,
                    "cache_bytes": s.cache.bytes,
                    "cache_max_bytes": s.cache.max_bytes,
                    "blocklist_version": s.blocklist.version,
                    "blocklist_applied_at": s.blocklist.applied_at,
                }
                for s in sorted(stats, key=lambda s: s.worker)
            ],
            "requests": by_result,
            "blocked": blocked,
            "restarts": node.restarts,
            "blocklist_version": node.blocklist.version,
            "blocklist_loading": node.blocklist.loading_status(),
            "audit_head": node.blocklist.audit_head,
            # The fleet feed this node follows (proxy/fleet/follower.py), when it follows one.
            "fleet": fleet.status_json() if (fleet := getattr(node, "fleet", None)) else None,
        }
    )


def build_app(node: NodeView, cfg: AdminConfig) -> web.Application:
    # Bodies are read by _read_body (bounded and under a deadline); this is a backstop.
    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=[guard])
    app[NODE] = node
    app[GUARD] = AdminGuard(cfg)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics),
            web.get("/status", status),
            web.post("/purge", purge),
            web.get("/blocklist", get_blocklist),
            web.post("/blocklist/entries", push_entries),
            web.delete("/blocklist/entries/{id}", delete_entry),
        ]
    )
    from proxy.admin import gate  # imports this module: registered last

    app.add_routes(gate.routes())
    return app


async def start_admin(node: NodeView) -> web.AppRunner:
    cfg = node.cfg.admin
    host, port = parse_hostport(cfg.listen, what="admin.listen")
    if not node.admin_token and not _loopback(host):
        raise AdminRefused(
            f"refusing to bind the admin API to non-loopback {host} without a token "
            "(--admin-token-file or EDGEPROXY_ADMIN_TOKEN)"
        )
    runner = web.AppRunner(build_app(node, cfg), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
