"""The admin listener (one per node, in the supervisor): health, metrics, purge, blocklist push,
status. Mutating endpoints need `Authorization: Bearer <token>` (constant-time compare); with no
token configured they answer 403, and a non-loopback admin address is refused at start.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from proxy.config import parse_hostport
from proxy.metrics import combine, families
from proxy.node.control import ControlError

if TYPE_CHECKING:
    from proxy.node.supervisor import Supervisor

SUPERVISOR = web.AppKey("supervisor", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminRefused(Exception):
    pass


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _sup(request: web.Request) -> Supervisor:
    return request.app[SUPERVISOR]  # type: ignore[return-value]


def authenticated(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        token = _sup(request).admin_token
        if not token:
            return _error(
                403, "no admin token configured (--admin-token-file or EDGEPROXY_ADMIN_TOKEN)"
            )
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _error(401, "missing or wrong bearer token")
        return await handler(request)

    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = msgspec.json.decode(await request.read())
    except msgspec.DecodeError as e:
        raise web.HTTPBadRequest(
            body=msgspec.json.encode({"error": f"invalid JSON: {e}"}),
            content_type="application/json",
        ) from e
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            body=msgspec.json.encode({"error": "expected a JSON object"}),
            content_type="application/json",
        )
    return data


# -- health ------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    sup = _sup(request)
    up = sum(1 for h in sup.workers.values() if h.proc.returncode is None)
    return _json({"status": "ok", "workers": up})


async def readyz(request: web.Request) -> web.Response:
    sup = _sup(request)
    problems = []
    want = sup.cfg.worker_count()
    up = [h for h in sup.workers.values() if h.listening and h.proc.returncode is None]
    if len(up) < want:
        problems.append(f"{len(up)} of {want} workers listening")
    stats = await sup.gather_stats()
    versions = {s["blocklist"]["version"] for s in stats}
    if versions != {sup.blocklist.version}:
        problems.append(
            f"workers enforce versions {sorted(versions)}, node is at {sup.blocklist.version}"
        )
    for site in sup.cfg.sites:
        host, port = _origin_addr(site.origin)
        try:
            async with asyncio.timeout(1.0):
                _, w = await asyncio.open_connection(host, port)
                w.close()
        except (OSError, TimeoutError):
            problems.append(f"origin of site {site.name} ({host}:{port}) unreachable")
    if (stale := sup.blocklist.stale_since()) is not None:
        problems.append(f"blocklist stale since {_iso(stale)} (still enforced)")
    body = {"ready": not problems, "problems": problems, "blocklist_version": sup.blocklist.version}
    return _json(body, 200 if not problems else 503)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _origin_addr(origin: str) -> tuple[str, int]:
    from yarl import URL

    u = URL(origin)
    return u.host or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)


# -- metrics -----------------------------------------------------------------------------------


class _Collector:
    def __init__(self, sup: Supervisor, stats: list[dict[str, Any]]) -> None:
        self.sup = sup
        self.stats = stats

    def collect(self) -> Any:
        sup = self.sup
        names = [s.name for s in sup.cfg.sites]
        snaps = [s["stats"] for s in self.stats]
        if sup.retired_stats is not None:
            snaps.append(sup.retired_stats)
        total = combine(snaps)
        if total is not None:
            yield from families(names, total)
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
        cache_bytes.add_metric([], sum(s["cache"]["bytes"] for s in self.stats))
        cache_objects.add_metric([], sum(s["cache"]["objects"] for s in self.stats))
        cache_max.add_metric([], sum(s["cache"]["max_bytes"] for s in self.stats))
        evictions.add_metric([], sum(s["cache"]["evictions"] for s in self.stats))
        conns.add_metric([], sum(s["connections"] for s in self.stats))
        waiters.add_metric([], sum(s["coalescing_waiters"] for s in self.stats))
        for s in self.stats:
            wver.add_metric([str(s["worker"])], s["blocklist"]["version"])
        yield from (cache_bytes, cache_objects, cache_max, evictions, conns, waiters, wver)
        bl = sup.blocklist
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
            "edgeproxy_worker_restarts", "Workers restarted after dying", value=sup.restarts
        )
        yield GaugeMetricFamily("edgeproxy_workers", "Workers running", value=len(sup.workers))


async def metrics(request: web.Request) -> web.Response:
    sup = _sup(request)
    stats = await sup.gather_stats()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(sup, stats))
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
    data = await _body(request)
    args = {k: data[k] for k in ("url", "prefix", "host") if data.get(k)}
    if len(args) != 1:
        return _error(400, "give exactly one of url, prefix or host")
    try:
        acks = await _sup(request).broadcast("purge", args)
    except ControlError as e:
        return _error(502, str(e))
    return _json({"purged": sum(a["purged"] for a in acks), "workers": len(acks)})


@authenticated
async def push_entries(request: web.Request) -> web.Response:
    data = await _body(request)
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        return _error(400, 'expected {"entries": [{"id", "type", "value", "notice", "reason"}, …]}')
    try:
        result = await _sup(request).blocklist.push(entries)
    except (msgspec.ValidationError, ValueError) as e:
        return _error(400, f"invalid entry: {e}")
    except ControlError as e:
        return _error(503, f"not applied on every worker: {e}")
    return _json(result)


@authenticated
async def delete_entry(request: web.Request) -> web.Response:
    entry_id = request.match_info["id"]
    bl = _sup(request).blocklist
    try:
        result = await bl.remove(entry_id)
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
    sup = _sup(request)
    stats = await sup.gather_stats()
    bl = sup.blocklist
    counts = bl.counts()
    return _json(
        {
            "version": bl.version,
            "applied_at": bl.applied_at,
            "file_sequence": bl.file_sequence,
            "pushed_entries": len(bl.pushed),
            "counts": counts,
            "workers": [
                {
                    "worker": s["worker"],
                    "pid": s["pid"],
                    "version": s["blocklist"]["version"],
                    "applied_at": s["blocklist"]["applied_at"],
                }
                for s in sorted(stats, key=lambda s: s["worker"])
            ],
            "history": list(bl.history),
            "reload_failures": bl.reload_failures,
            "last_errors": bl.last_errors,
        }
    )


async def status(request: web.Request) -> web.Response:
    sup = _sup(request)
    stats = await sup.gather_stats()
    snaps = [s["stats"] for s in stats]
    if sup.retired_stats is not None:
        snaps.append(sup.retired_stats)
    total = combine(snaps)
    by_result: dict[str, int] = {}
    blocked: dict[str, int] = {}
    if total is not None:
        from proxy.metrics import BLOCK_TYPES, RESULTS

        for r, result in enumerate(RESULTS):
            by_result[result.value] = sum(
                total["requests"][s][m][r]
                for s in range(len(total["requests"]))
                for m in range(len(total["requests"][s]))
            )
        for t, typ in enumerate(BLOCK_TYPES):
            blocked[typ] = sum(row[t] for row in total["blocked"])
    return _json(
        {
            "uptime_s": time.time() - sup.started_at,
            "now": time.time(),
            "workers": [
                {
                    "worker": s["worker"],
                    "pid": s["pid"],
                    "connections": s["connections"],
                    "requests": sum(sum(sum(m) for m in site) for site in s["stats"]["requests"]),
                    "cache_objects": s["cache"]["objects"],
                    "cache_bytes": s["cache"]["bytes"],
                    "cache_max_bytes": s["cache"]["max_bytes"],
                    "blocklist_version": s["blocklist"]["version"],
                    "blocklist_applied_at": s["blocklist"]["applied_at"],
                }
                for s in sorted(stats, key=lambda s: s["worker"])
            ],
            "requests": by_result,
            "blocked": blocked,
            "restarts": sup.restarts,
            "blocklist_version": sup.blocklist.version,
        }
    )


def build_app(sup: Supervisor) -> web.Application:
    app = web.Application(client_max_size=64 << 20)
    app[SUPERVISOR] = sup
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
    return app


async def start_admin(sup: Supervisor) -> web.AppRunner:
    host, port = parse_hostport(sup.cfg.admin.listen, what="admin.listen")
    if not sup.admin_token and not _loopback(host):
        raise AdminRefused(
            f"refusing to bind the admin API to non-loopback {host} without a token "
            "(--admin-token-file or EDGEPROXY_ADMIN_TOKEN)"
        )
    runner = web.AppRunner(build_app(sup), access_log=None, handle_signals=False)
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
