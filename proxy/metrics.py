"""Every metric, declared once.

Workers count in plain integers (a list index and an add: ~0.05 µs, against ~0.9 µs for
prometheus-client's multiprocess mode), and the supervisor gathers each worker's counts over its
control channel at scrape time and renders them with prometheus-client. Counts of workers that
died are folded into a retired total so counters never go backwards.

Label values are bounded by construction: sites from the config, enums for everything else.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from proxy.front.limits import FrontTimeout
from proxy.rfc.storable import NoStoreReason


class Result(StrEnum):
    HIT = "hit"
    STALE = "stale"
    MISS = "miss"
    PASS = "pass"
    REVALIDATED = "revalidated"
    BLOCKED = "blocked"
    ERROR = "error"


class MethodClass(StrEnum):
    READ = "read"  # GET, HEAD
    WRITE = "write"  # POST, PUT, PATCH, DELETE
    OTHER = "other"


RESULTS = list(Result)
METHODS = list(MethodClass)
BLOCK_TYPES = ["url", "prefix", "host", "sha256"]
ORIGIN_FAILURES = ["connect", "timeout", "reset", "protocol"]
NO_STORE = [r.value for r in NoStoreReason]
FRONT_STATUSES = [400, 408, 413, 414, 431, 500, 505]  # answers the front makes itself
FRONT_TIMEOUTS = list(FrontTimeout)  # the deadlines that cut a request off
ORIGIN_CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"]
# From 50 µs: a memory hit's median is about 70 µs, so the lowest bucket must sit below it for
# histogram_quantile to say anything about hits; 1-2.5-5 steps up to 5 s, 16 buckets.
LATENCY_BUCKETS_S = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1, 2.5, 5,
]  # fmt: skip

R_INDEX = {r: i for i, r in enumerate(RESULTS)}
M_INDEX = {m: i for i, m in enumerate(METHODS)}
B_INDEX = {t: i for i, t in enumerate(BLOCK_TYPES)}
NS_INDEX = {r: i for i, r in enumerate(NO_STORE)}
OF_INDEX = {f: i for i, f in enumerate(ORIGIN_FAILURES)}


SHARED_TIER_FAMILIES = [
    ("edgeproxy_shared_tier_hits", "shared_hits", "Shared-tier lookups that found the response"),
    ("edgeproxy_shared_tier_misses", "shared_misses", "Shared-tier lookups that found nothing"),
    (
        "edgeproxy_shared_tier_errors",
        "shared_errors",
        "Shared-tier operations that failed, timed out or were rejected, and lookups skipped"
        " while the tier was down",
    ),
    ("edgeproxy_shared_tier_stores", "shared_stores", "Responses written to the shared tier"),
    (
        "edgeproxy_shared_tier_dropped",
        "shared_drops",
        "Shared-tier writes dropped because the worker's write queue was full",
    ),
]
NODE_TIER_FAMILIES = [
    ("edgeproxy_node_tier_hits", "node_hits", "Memory misses the node tier answered"),
    ("edgeproxy_node_tier_misses", "node_misses", "Memory misses the node tier did not hold"),
    ("edgeproxy_node_tier_stores", "node_stores", "Responses written to the node tier"),
    (
        "edgeproxy_node_tier_evictions",
        "node_evictions",
        "Node-tier objects evicted (oldest access first) to stay within cache.node_tier_bytes",
    ),
    ("edgeproxy_node_tier_purged", "node_purged", "Node-tier objects purged or removed"),
    (
        "edgeproxy_node_tier_rejected",
        "node_rejected",
        "Node-tier records dropped unserved: torn, corrupt, of another format, or failing "
        "their proof (URL, Vary values, body digest)",
    ),
    ("edgeproxy_node_tier_errors", "node_errors", "Node-tier writes or purges that failed"),
    (
        "edgeproxy_node_tier_lease_waits",
        "node_lease_waits",
        "Misses that waited for another worker's fetch of the same key (coalescing)",
    ),
    (
        "edgeproxy_node_tier_coalesced",
        "node_coalesced",
        "Misses answered from the node tier by another worker's fetch, without an origin request",
    ),
    (
        "edgeproxy_node_tier_lease_timeouts",
        "node_lease_timeouts",
        "Waits for another worker's fetch that passed cache.coalesce_wait_s (then fetched)",
    ),
]


def method_class(method: str) -> int:
    if method == "GET" or method == "HEAD":
        return 0
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        return 1
    return 2


class WorkerStats:
    """Per-worker counts; indices are [site][…]. Plain lists so the hot path never allocates."""

    def __init__(self, sites: list[str]) -> None:
        self.sites = sites
        n = len(sites) + 1  # the last slot is "unknown" (421, malformed)
        self.requests = [[[0] * len(RESULTS) for _ in METHODS] for _ in range(n)]
        self.bytes = [[0] * len(RESULTS) for _ in range(n)]
        self.latency = [[[0] * (len(LATENCY_BUCKETS_S) + 1) for _ in RESULTS] for _ in range(n)]
        self.latency_sum = [[0.0] * len(RESULTS) for _ in range(n)]
        self.origin_requests = [0] * n
        self.origin_responses = [[0] * len(ORIGIN_CLASSES) for _ in range(n)]
        self.front_rejected = [0] * len(FRONT_STATUSES)
        self.front_timeouts = [0] * len(FRONT_TIMEOUTS)
        self.origin_failures = [[0] * len(ORIGIN_FAILURES) for _ in range(n)]
        self.origin_latency = [[0] * (len(LATENCY_BUCKETS_S) + 1) for _ in range(n)]
        self.origin_latency_sum = [0.0] * n
        self.blocked = [[0] * len(BLOCK_TYPES) for _ in range(n)]
        self.not_stored = [0] * len(NO_STORE)
        self.coalesced = 0
        self.pass_lane = 0  # pass-throughs relayed by the express lane (proxy/phases/lane.py)
        # origin answers taken from the http client's known heads, not parsed (origin/h1.py)
        self.origin_heads_replayed = 0
        self.handler_errors = 0
        self.purged_by_blocklist = 0
        self.blocklist_load_failures = 0  # compiled files refused: the last good list stays
        # mapped tables taken: checked whole by the worker, or mapped on the supervisor's seal
        self.blocklist_tables_checked = 0
        self.blocklist_tables_sealed = 0
        self.undecodable_bodies = 0  # refused: content coding unknown, corrupt or a bomb
        self.inflight_refused = 0  # answered 503: the in-flight body budget was spent
        self.access_log_dropped = 0
        # The shared cache tier (proxy/cache/shared.py).
        self.shared_hits = 0
        self.shared_misses = 0
        self.shared_errors = 0  # failed, timed out, rejected, or skipped while it is down
        self.shared_stores = 0
        self.shared_drops = 0  # stores dropped because the write queue was full
        # The node tier (proxy/cache/node.py); its bytes and objects are the node's, reported
        # apart (CacheReport), not summed over workers.
        self.node_hits = 0
        self.node_misses = 0
        self.node_stores = 0
        self.node_evictions = 0
        self.node_purged = 0
        self.node_rejected = 0  # torn, corrupt or foreign records dropped, never served
        self.node_errors = 0  # writes that failed (map full, I/O)
        self.node_lease_waits = 0  # misses that waited on another worker's fetch
        self.node_coalesced = 0  # ... and got the entry it stored
        self.node_lease_timeouts = 0  # ... and gave up waiting

    def observe(self, site: int, method: int, result: int, nbytes: int, seconds: float) -> None:
        self.requests[site][method][result] += 1
        self.bytes[site][result] += nbytes
        self.latency[site][result][bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum[site][result] += seconds

    def observe_origin(self, site: int, seconds: float) -> None:
        self.origin_requests[site] += 1
        self.origin_latency[site][bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.origin_latency_sum[site] += seconds

    def note_front(self, rejected: dict[int, int], timeouts: dict[FrontTimeout, int]) -> None:
        """Copy the front's refusal and cut-off counts in (they live on the server object)."""
        self.front_rejected = [rejected.get(s, 0) for s in FRONT_STATUSES]
        self.front_timeouts = [timeouts.get(t, 0) for t in FRONT_TIMEOUTS]

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain data, per-site counters keyed by site name.

        Keyed, not positional: workers started before and after a SIGHUP that adds or removes
        a site have different site lists, and their snapshots (and the retired totals of
        workers gone) must still add up.
        """
        names = [*self.sites, UNKNOWN_SITE]
        out = {k: v for k, v in vars(self).items() if k not in PER_SITE and k != "sites"}
        out["sites"] = {
            name: {k: getattr(self, k)[i] for k in PER_SITE} for i, name in enumerate(names)
        }
        return out


UNKNOWN_SITE = "-"  # the label of requests no site took (421, malformed)
# The WorkerStats attributes indexed by site first.
PER_SITE = (
    "requests",
    "bytes",
    "latency",
    "latency_sum",
    "origin_requests",
    "origin_responses",
    "origin_failures",
    "origin_latency",
    "origin_latency_sum",
    "blocked",
)


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: _add(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in a | b}
    if isinstance(a, list):
        return [_add(x, y) for x, y in zip(a, b, strict=True)]
    return a + b


def combine(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Sum snapshots; a site (or counter) only some of them have counts from those alone."""
    total: dict[str, Any] | None = None
    for snap in snapshots:
        total = snap if total is None else _add(total, snap)
    return total


def site_order(sites: Iterable[str], stats: dict[str, Any] | None) -> list[str]:
    """The configured sites first (in config order), then sites only retired workers served,
    then the unknown-site slot."""
    names = [s for s in sites if s != UNKNOWN_SITE]
    known = set(names)
    extra = sorted(
        n for n in (stats or {}).get("sites", {}) if n not in known and n != UNKNOWN_SITE
    )
    return [*names, *extra, UNKNOWN_SITE]


def site_counts(stats: dict[str, Any], name: str) -> dict[str, Any]:
    """One site's counters from combined stats; zeros for a site nobody has counted yet."""
    found = stats.get("sites", {}).get(name)
    if found is not None:
        return dict(found)
    zero = WorkerStats([]).snapshot()["sites"][UNKNOWN_SITE]
    return dict(zero)


def _hist(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    return cumulative_buckets(LATENCY_BUCKETS_S, counts)


def cumulative_buckets(bounds: list[float], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (one per bound and one above them all) as Prometheus' cumulative
    (le, count) pairs."""
    out, acc = [], 0
    for bound, c in zip([*bounds, float("inf")], counts, strict=True):
        acc += c
        out.append(("+Inf" if bound == float("inf") else repr(bound), float(acc)))
    return out


def families(sites: list[str], stats: dict[str, Any], extra: Iterable[Any] = ()) -> Iterator[Any]:
    """Render combined worker stats (and the supervisor's own families) for Prometheus."""
    names = site_order(sites, stats)
    per = {name: site_counts(stats, name) for name in names}
    yield from _request_families(names, per)
    yield from _origin_families(names, per)
    yield _front_rejected_family(stats)
    yield _front_timeouts_family(stats)
    yield _blocked_family(names, per)
    yield _not_stored_family(stats)
    yield from _unlabelled_counters(stats)
    yield from extra


def _request_families(names: list[str], per: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """`edgeproxy_requests_total` has a series per site for every result of reads (GET and
    HEAD, which every site serves: exported at 0 from the start, as Prometheus' guidance asks
    for series known to exist), and a write or other-method series only once one was counted.
    Sites × 3 methods × 7 results were mostly zeros: most sites never see a POST, and no POST
    is ever a hit."""
    req = CounterMetricFamily(
        "edgeproxy_requests",
        "Requests answered, by site, method class and cache result",
        labels=["site", "method", "result"],
    )
    byt = CounterMetricFamily(
        "edgeproxy_response_bytes", "Response body bytes sent, by result", labels=["site", "result"]
    )
    lat = _hist(
        "edgeproxy_request_duration_seconds", "Request latency by result", ["site", "result"]
    )
    for site in names:
        for r, result in enumerate(RESULTS):
            for m, method in enumerate(METHODS):
                n = per[site]["requests"][m][r]
                if n or method is MethodClass.READ:
                    req.add_metric([site, method, result], n)
            byt.add_metric([site, result], per[site]["bytes"][r])
            counts = per[site]["latency"][r]
            if sum(counts):
                lat.add_metric([site, result], _buckets(counts), per[site]["latency_sum"][r])
    yield from (req, byt, lat)


def _origin_families(names: list[str], per: dict[str, dict[str, Any]]) -> Iterator[Any]:
    oreq = CounterMetricFamily("edgeproxy_origin_requests", "Origin requests", labels=["site"])
    oerr = CounterMetricFamily(
        "edgeproxy_origin_errors",
        "Origin failures by kind (timeout included)",
        labels=["site", "kind"],
    )
    olat = _hist(
        "edgeproxy_origin_duration_seconds", "Time to the origin's response head", ["site"]
    )
    for site in names:
        oreq.add_metric([site], per[site]["origin_requests"])
        for f, kind in enumerate(ORIGIN_FAILURES):
            oerr.add_metric([site, kind], per[site]["origin_failures"][f])
        if sum(per[site]["origin_latency"]):
            olat.add_metric(
                [site], _buckets(per[site]["origin_latency"]), per[site]["origin_latency_sum"]
            )
    ocls = CounterMetricFamily(
        "edgeproxy_origin_responses", "Origin responses by status class", labels=["site", "class"]
    )
    for site in names:
        for c, cls in enumerate(ORIGIN_CLASSES):
            ocls.add_metric([site, cls], per[site]["origin_responses"][c])
    yield from (oreq, oerr, olat, ocls)


def _front_rejected_family(stats: dict[str, Any]) -> CounterMetricFamily:
    rej = CounterMetricFamily(
        "edgeproxy_front_rejected",
        "Requests the front answered itself (malformed, too large, too slow), by status",
        labels=["status"],
    )
    for i, status in enumerate(FRONT_STATUSES):
        rej.add_metric([str(status)], stats["front_rejected"][i])
    return rej


def _front_timeouts_family(stats: dict[str, Any]) -> CounterMetricFamily:
    cut = CounterMetricFamily(
        "edgeproxy_front_timeouts",
        "Requests the front cut off at a deadline, by the deadline missed: 408 when no answer "
        "had started (also in edgeproxy_front_rejected), else the connection is aborted",
        labels=["reason"],
    )
    timeouts = stats.get("front_timeouts", [0] * len(FRONT_TIMEOUTS))
    for i, missed in enumerate(FRONT_TIMEOUTS):
        cut.add_metric([missed.value], timeouts[i])
    return cut


def _blocked_family(names: list[str], per: dict[str, dict[str, Any]]) -> CounterMetricFamily:
    blk = CounterMetricFamily(
        "edgeproxy_blocked",
        "Requests answered 451, by entry type and site",
        labels=["site", "type"],
    )
    for site in names:
        for t, typ in enumerate(BLOCK_TYPES):
            blk.add_metric([site, typ], per[site]["blocked"][t])
    return blk


def _not_stored_family(stats: dict[str, Any]) -> CounterMetricFamily:
    ns = CounterMetricFamily(
        "edgeproxy_cache_not_stored", "Responses not stored, by reason", labels=["reason"]
    )
    for i, reason in enumerate(NO_STORE):
        ns.add_metric([reason], stats["not_stored"][i])
    return ns


def _unlabelled_counters(stats: dict[str, Any]) -> Iterator[CounterMetricFamily]:
    yield CounterMetricFamily(
        "edgeproxy_coalesced",
        "Requests that waited on another request's origin fetch",
        value=stats["coalesced"],
    )
    yield CounterMetricFamily(
        "edgeproxy_pass_lane",
        "Pass-through GETs relayed by the express lane: an answer head already known not "
        "storable, relayed without the phase walk (admit and block still ran)",
        value=stats.get("pass_lane", 0),
    )
    yield CounterMetricFamily(
        "edgeproxy_origin_heads_replayed",
        "Origin answers whose head repeated one parsed before, byte for byte, taken from the "
        "http client's known heads instead of the parser (origin.response_head_memo_*)",
        value=stats.get("origin_heads_replayed", 0),
    )
    yield CounterMetricFamily(
        "edgeproxy_handler_errors",
        "Unexpected errors answered 500 (bugs)",
        value=stats["handler_errors"],
    )
    yield CounterMetricFamily(
        "edgeproxy_blocklist_purged_objects",
        "Cached objects purged because a version listed them",
        value=stats["purged_by_blocklist"],
    )
    yield CounterMetricFamily(
        "edgeproxy_blocklist_load_failures",
        "Compiled blocklist files a worker refused (truncated, corrupt, another version); "
        "it kept enforcing its last good snapshot",
        value=stats.get("blocklist_load_failures", 0),
    )
    taken = CounterMetricFamily(
        "edgeproxy_blocklist_worker_tables",
        "Compiled blocklist tables workers took: checked every byte themselves (whole), or "
        "mapped as the file the supervisor checked (sealed: same inode, size, mtime, checksum)",
        labels=["check"],
    )
    taken.add_metric(["whole"], stats.get("blocklist_tables_checked", 0))
    taken.add_metric(["sealed"], stats.get("blocklist_tables_sealed", 0))
    yield taken
    yield CounterMetricFamily(
        "edgeproxy_undecodable_bodies",
        "Origin bodies refused (502) because their content coding could not be removed for "
        "the blocklist's digest check: unknown coding, corrupt, or over the decoding limits",
        value=stats.get("undecodable_bodies", 0),
    )
    yield CounterMetricFamily(
        "edgeproxy_inflight_refused",
        "Requests answered 503 because the worker's share of cache.inflight_body_bytes could "
        "not hold the origin body back to be judged",
        value=stats.get("inflight_refused", 0),
    )
    yield CounterMetricFamily(
        "edgeproxy_access_log_dropped",
        "Access log records dropped because the writer fell behind",
        value=stats.get("access_log_dropped", 0),
    )
    for name, key, doc in (*SHARED_TIER_FAMILIES, *NODE_TIER_FAMILIES):
        yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
