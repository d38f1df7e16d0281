"""`make bench`: load-test the edge node side by side with nginx, Varnish and Traffic Server.

    python -m benchmarks.run [--quick] [--duration-s 10] [--connections 64] [--rounds 3]
                             [--scenarios hit-1k,hit-zipf] [--targets edgeproxy,nginx] [--out DIR]

Starts the bundled origin and every target on free 127.0.0.1 ports, warms the caches, then for
each scenario runs the targets in alternation round by round (A B C A B C …) so drift on a
shared machine hits all of them alike. Each run records req/s, latency percentiles, errors and
the server's CPU per request (from /proc, the server and all its children). Results go to
`benchmarks/results/<timestamp>/` as results.json, results.md and PNG charts. See README.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import blocklists, cpu, edge_ops, node_tier, report, soak, tail, tls
from benchmarks.blocklists import LIST_CONFIG
from benchmarks.load import (
    WRK_INSTALL_HINT,
    Measured,
    ObjectSet,
    Workload,
    batch_client,
    drive,
    pin_client,
    wrk_available,
    zipf_paths,
)
from benchmarks.loadgen import run_load_sync
from benchmarks.origin import Origin
from benchmarks.targets import (
    COMPETITORS,
    EdgeTarget,
    NginxTarget,
    Target,
    TlsFiles,
    http_status,
)

RESULTS = Path(__file__).parent / "results"
CACHE_TARGETS = "cache"  # every target: edge and competitors
EDGE_SIZES = "sizes"  # the edge with blocklists of several sizes
TLS_TARGETS = "tls"  # the targets that terminate TLS: the edge and nginx
HANDSHAKE_CLIENTS = 2  # concurrent `openssl s_time` processes in tls-new and tls-resume
BIG_CACHES = "big"  # every target, its shared cache sized for the big set


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    workload: Workload | None  # None: a special scenario with its own driver
    targets: str = CACHE_TARGETS
    prime: tuple[str, ...] = ()


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("hit-1k", "cache hit, 1 KiB, one URL", Workload("url", "/bytes/1024"),
                 prime=("/bytes/1024",)),
        Scenario("hit-100k", "cache hit, 100 KiB, one URL", Workload("url", "/bytes/102400"),
                 prime=("/bytes/102400",)),
        Scenario("hit-zipf", "cache hit, 1 KiB, Zipf over 10,000 URLs", Workload("zipf", "/"),
                 prime=("zipf",)),
        Scenario("pass-1k", "pass-through (no-store), 1 KiB", Workload("url", "/nostore/1024")),
        Scenario("cold-miss", "cold miss: distinct URLs, origin fetch + store",
                 Workload("cold", "/")),
        Scenario("tls-hit", "cache hit over TLS, 1 KiB, keep-alive (wrk, https)",
                 Workload("url", "/bytes/1024"), targets=TLS_TARGETS, prime=("/bytes/1024",)),
        Scenario("tls-new", "full TLS handshakes: new connection, no session (s_time -new)",
                 None, targets=TLS_TARGETS),
        Scenario("tls-resume", "resumed TLS handshakes: the first session offered each time "
                 "(s_time -reuse)", None, targets=TLS_TARGETS),
        Scenario("blocklist-size", "cache hit 1 KiB with a blocklist of N entries (edge only)",
                 Workload("url", "/bytes/1024"), targets=EDGE_SIZES, prime=("/bytes/1024",)),
        Scenario("blocked-prefix", "blocked (451) over a listed prefix",
                 Workload("blocked", "/blocked/item-0", expect_status=451)),
        Scenario("apply-under-load", "a large blocklist version applied during a hit load",
                 None, targets="edge"),
        Scenario("push-enforce", "operator push to enforcement in every worker", None,
                 targets="edge"),
        Scenario("soak", "mixed traffic, pushes, a killed worker and a full version for "
                 "--soak-s (benchmarks/soak.py)", None, targets="edge"),
        Scenario("fleet", "push to enforcement on every node of a 5-node fleet on Redis, "
                 "vs the admin-API fan-out; the takedown service's notices/s with fan-out "
                 "to the 5 nodes", None, targets="edge"),
        Scenario("node-hit", "a node-tier hit against an L1 hit, 4 KiB, on one edge "
                 "(benchmarks/node_tier.py)", None, targets="edge"),
        Scenario("big-set", "Zipf over a set larger than the edge's L1 (--big-set-objects of "
                 "4-100 KiB), every shared cache sized for it", None, targets=BIG_CACHES),
        Scenario("restart", "SIGTERM and start under load: the gap, and origin requests in "
                 "the first pass over the set", None, targets="edge"),
    )
}  # fmt: skip
# long: run only when named in --scenarios (big-set primes 100k objects per target; restart
# primes its set twice)
ON_REQUEST_ONLY = ("soak", "big-set", "restart")


@dataclass
class Settings:
    duration_s: float
    connections: int
    rounds: int
    workers: int
    warm_s: float
    sizes: tuple[int, ...]
    apply_entries: int
    pushes: int
    use_wrk: bool
    quick: bool
    push_list_entries: int = 0
    list_load_s: float = 900.0
    # "copy" or "link": lists of blocklist-size and push-enforce ship with their signer's
    # compiled table (`sign --table`), installed so (`blocklist.table_install`); "": compiled
    # by the node, as an operator without a signer's table has it.
    shipped_tables: str = ""
    soak_s: float = 600.0
    soak_window_s: float = 60.0
    soak_entries: int = 100_000
    edge_node_tier_bytes: int = 1 << 30
    node_hit_objects: int = 20_000
    big_set_objects: int = 100_000
    big_set_min_bytes: int = 4 << 10
    big_set_max_bytes: int = 100 << 10
    prime_s: float = 600.0
    restart_objects: int = 10_000
    restart_load_s: float = 30.0
    client_cpus: tuple[int, ...] = ()  # wrk on these CPUs, every server on the others
    client_batch: bool = False  # wrk under SCHED_BATCH (load.batch_client)

    def big_set(self) -> ObjectSet:
        return ObjectSet(self.big_set_objects, self.big_set_min_bytes, self.big_set_max_bytes)


@dataclass
class Run:
    scenario: str
    target: str
    round: int
    measured: Measured
    cpu_s: float
    cpu_us_per_req: float
    origin_requests: int


@dataclass
class Session:
    settings: Settings
    out: Path
    started: float = field(default_factory=time.perf_counter)
    runs: list[Run] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f}s] {message}", flush=True)


class Fleet:
    """Targets started on first use and all stopped at the end."""

    def __init__(self, session: Session, origin: Origin, wanted: list[str]) -> None:
        self.session, self.origin, self.wanted = session, origin, wanted
        self.started: dict[str, Target] = {}
        self.unavailable: dict[str, str] = {}
        # The edge and nginx also listen for HTTPS, both with this one certificate.
        self.tls: TlsFiles = tls.certificate(session.out / "work" / "tls")

    def get(self, name: str, factory: Callable[[], Target]) -> Target | None:
        if name in self.started:
            return self.started[name]
        if name in self.unavailable:
            return None
        target = factory()
        if not type(target).available():
            self.unavailable[name] = "not installed"
            self.session.say(f"{name}: not installed, skipped")
            return None
        self.session.say(f"starting {name} …")
        try:
            target.start(
                self.session.out / "work" / name, self.origin.port, self.session.settings.workers
            )
        except Exception as e:  # noqa: BLE001 - reported, the run goes on without it
            target.stop()
            self.unavailable[name] = f"failed to start: {e}"
            self.session.say(f"{name}: failed to start ({e}), skipped")
            return None
        if self.session.settings.client_cpus:
            cpu.pin(target.pids, self.server_cpus)  # its later children inherit it
        self.started[name] = target
        return target

    @property
    def server_cpus(self) -> set[int]:
        return os.sched_getaffinity(0) - set(self.session.settings.client_cpus)

    def cache_targets(self, big_cache_bytes: int = 0) -> list[Target]:
        """The edge and every wanted competitor; with `big_cache_bytes`, another set of them
        ("-big") whose shared caches (the edge's node tier) have that size."""
        suffix = "-big" if big_cache_bytes else ""
        found: list[Target] = []
        edge = self.edge(suffix, big_cache_bytes)
        if edge is not None:
            found.append(edge)
        for cls in COMPETITORS:
            if cls.kind in self.wanted:
                name = cls.kind + suffix
                make = functools.partial(self._competitor, cls, name, big_cache_bytes)
                target = self.get(name, make)
                if target is not None:
                    found.append(target)
        return found

    def _competitor(self, cls: type[Target], name: str, cache_bytes: int) -> Target:
        if cls is NginxTarget:
            return cls(name, tls=self.tls, cache_bytes=cache_bytes)
        return cls(name, cache_bytes=cache_bytes)

    def tls_targets(self) -> list[Target]:
        return [t for t in self.cache_targets() if t.tls is not None]

    def edge(self, suffix: str = "", node_tier_bytes: int = 0) -> EdgeTarget | None:
        if "edgeproxy" not in self.wanted:
            return None
        name = "edgeproxy" + suffix
        node_tier_bytes = node_tier_bytes or self.session.settings.edge_node_tier_bytes
        edge = self.get(
            name,
            lambda: EdgeTarget(
                name, tls=self.tls if not suffix else None, cache_bytes=node_tier_bytes
            ),
        )
        return edge if isinstance(edge, EdgeTarget) else None

    def stop(self, name: str) -> None:
        target = self.started.pop(name, None)
        if target is not None:
            target.stop()

    def stop_all(self) -> None:
        for name in list(self.started):
            try:
                self.stop(name)
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                print(f"stopping {name}: {e}", file=sys.stderr)


def prime(target: Target, paths: tuple[str, ...], *, over_tls: bool = False) -> None:
    """Fetch each path twice so every cache has stored it (Zipf: each of the 10,000 URLs once)."""
    for path in paths:
        if path == "zipf":
            distinct = sorted(set(zipf_paths()), key=lambda p: int(p.rsplit("/", 1)[1]))
            run_load_sync(target.base_url, iter(distinct), connections=16, duration_s=120)
        elif over_tls and target.tls is not None:
            for _ in range(2):
                http_status(target.tls_url + path, ca_file=target.tls.ca_file)
        else:
            for _ in range(2):
                http_status(target.base_url + path)


def url_of(target: Target, scenario: Scenario) -> str:
    return target.tls_url if scenario.targets == TLS_TARGETS else target.base_url


def measure(
    session: Session,
    target: Target,
    scenario: Scenario,
    round_no: int,
    origin: Origin,
    *,
    workload: Workload | None = None,
    label: str = "",
) -> Run:
    """One measured run of `scenario` (or of `workload`, recorded as target `label`)."""
    s = session.settings
    workload = workload or scenario.workload
    assert workload is not None
    if workload.kind == "cold":
        workload = Workload("cold", "/", nonce=uuid.uuid4().hex[:8])
    cpu_before = cpu.cpu_seconds(target.pids)
    origin_before = origin.requests()
    waits = TailWatch(target)
    measured = drive(
        url_of(target, scenario), workload, duration_s=s.duration_s, connections=s.connections,
        use_wrk=s.use_wrk,
    )  # fmt: skip
    cpu_s = cpu.cpu_seconds(target.pids) - cpu_before
    origin_requests = origin.requests() - origin_before
    run = record(session, scenario, target, round_no, measured, cpu_s, origin_requests, label)
    session.extra.setdefault("tail", {}).setdefault(scenario.name, []).append(
        waits.row(run, measured)
    )
    return run


class TailWatch:
    """One round's waits (benchmarks/tail.py): the server's run-queue wait, and the edge's
    per-worker histograms, read before and after."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.started = time.perf_counter()
        self.wait_s = tail.run_queue_wait_s(target.pids)
        self.edge = self._scrape()

    def _scrape(self) -> tail.Histograms | None:
        t = self.target
        if not isinstance(t, EdgeTarget) or not t.admin_port:
            return None
        try:
            return tail.histograms(edge_ops.metrics_text(t))
        except OSError:
            return None

    def row(self, run: Run, measured: Measured) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        waited = tail.run_queue_wait_s(self.target.pids) - self.wait_s
        after = self._scrape() if self.edge is not None else None
        return {
            "target": run.target,
            "round": run.round,
            "client_p99_us": measured.p99_us,
            "server_wait_ms_per_s": waited * 1000 / seconds if seconds else 0.0,
            "client_wait_ms_per_s": measured.client_wait_ms_per_s,
            "edge": tail.edge_summary(tail.delta(self.edge, after))
            if self.edge is not None and after is not None
            else None,
        }


def record(
    session: Session,
    scenario: Scenario,
    target: Target,
    round_no: int,
    measured: Measured,
    cpu_s: float,
    origin_requests: int,
    label: str = "",
) -> Run:
    s = session.settings
    per_req = cpu_s * 1e6 / measured.requests if measured.requests else 0.0
    name = label or target.name
    run = Run(scenario.name, name, round_no, measured, cpu_s, per_req, origin_requests)
    session.runs.append(run)
    flag = ""
    if measured.errors or measured.unexpected:
        flag = f"  errors {measured.errors}, unexpected status {measured.unexpected}"
    session.say(
        f"{scenario.name} round {round_no}/{s.rounds} {name:<18} "
        f"{measured.rps:>9,.0f} req/s  p50 {measured.p50_us / 1000:6.2f} ms  "
        f"p99 {measured.p99_us / 1000:6.2f} ms  {per_req:6.1f} µs CPU/req  "
        f"origin {origin_requests}{flag}"
    )
    return run


def size_targets(session: Session, fleet: Fleet) -> list[Target]:
    """The plain edge plus one edge per blocklist size, each loading a signed version at start."""
    base = fleet.edge()
    if base is None:
        return []
    reason = blocklists.signing_available()
    if reason is not None:
        session.notes.append(f"blocklist-size skipped: {reason}")
        session.say(f"blocklist-size: {reason}; only the no-blocklist edge runs")
        return [base]
    found: list[Target] = [base]
    for size in session.settings.sizes:
        session.say(f"preparing a signed blocklist of {size:,} entries …")
        t0 = time.perf_counter()
        directory, public = shipped_list_dir(session, session.out / "work", size)
        session.say(f"  ready in {time.perf_counter() - t0:.1f}s")
        name = f"edgeproxy-bl{_short(size)}"
        target = fleet.get(
            name,
            lambda d=directory, p=public, n=name: list_edge(  # type: ignore[misc]
                session, fleet, n, d, p, cache_bytes=session.settings.edge_node_tier_bytes
            ),
        )
        if target is not None:
            found.append(target)
    return found


def shipped_list_dir(session: Session, workdir: Path, size: int) -> tuple[Path, Path]:
    """`blocklists.blocklist_dir`, with the signer's table when `--shipped-tables` is set."""
    shipped = bool(session.settings.shipped_tables)
    return blocklists.blocklist_dir(workdir, size, shipped=shipped)


def list_config_args(directory: Path, origin_port: int, table_install: str = "") -> list[str]:
    """`--config` raising `blocklist.max_file_bytes` (1 GiB) to the version's size (a signed
    version of 10M entries is 1.3 GiB) and setting `table_install`. None needed when both
    are the defaults."""
    size = max(p.stat().st_size for p in directory.iterdir() if p.suffix == ".jsonl")
    if size <= 1 << 30 and not table_install:
        return []
    extra = f'table_install = "{table_install}"' if table_install else ""
    config = directory.parent / f"{directory.name}.toml"
    config.write_text(
        LIST_CONFIG.format(max_file_bytes=max(size, 1 << 30), origin_port=origin_port,
                           extra=extra)
    )  # fmt: skip
    return ["--config", str(config)]


def list_edge(
    session: Session, fleet: Fleet, name: str, directory: Path, public: Path, cache_bytes: int = 0
) -> EdgeTarget:
    """An edge following `directory`. It answers once its start-up load is done, so its start
    is bounded by `list_load_s` (10M entries: about 100 s of compile), not the usual 60 s."""
    edge = EdgeTarget(name, blocklist_dir=directory, blocklist_key=public,
                      cache_bytes=cache_bytes,
                      extra_args=list_config_args(directory, fleet.origin.port,
                                                  session.settings.shipped_tables))  # fmt: skip
    edge.start_timeout_s = session.settings.list_load_s
    return edge


def _short(n: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def run_load_scenario(session: Session, fleet: Fleet, scenario: Scenario) -> None:
    s = session.settings
    objects: ObjectSet | None = None
    if scenario.targets == EDGE_SIZES:
        targets = size_targets(session, fleet)
    elif scenario.targets == TLS_TARGETS:
        targets = fleet.tls_targets()
    elif scenario.targets == BIG_CACHES:
        objects = s.big_set()
        cache_bytes = node_tier.cache_bytes_for(objects)
        session.say(f"big-set: {objects.count:,} objects, {objects.total_bytes() / 2**20:,.0f} "
                    f"MiB; shared caches of {cache_bytes / 2**20:,.0f} MiB")  # fmt: skip
        targets = fleet.cache_targets(big_cache_bytes=cache_bytes)
        scenario = replace(scenario, workload=Workload("set", objects=objects, pick="zipf"))
    else:
        targets = fleet.cache_targets()
    if scenario.name == "blocked-prefix":
        targets = [t for t in targets if t.kind != "trafficserver"]
        edge = next((t for t in targets if isinstance(t, EdgeTarget)), None)
        if edge is not None:
            value = edge_ops.list_prefix(edge, "/blocked/")
            session.extra["blocked_prefix_entry"] = value
            if value is None:
                session.notes.append("blocked-prefix: the edge did not enforce the pushed prefix")
    if not targets:
        session.say(f"{scenario.name}: no target available, skipped")
        return
    session.say(
        f"== {scenario.name}: {scenario.title} — targets {', '.join(t.name for t in targets)}"
    )
    setup: dict[str, int] = {}  # origin requests of each target's priming and warm-up
    for target in targets:
        before = fleet.origin.requests()
        if objects is not None:
            primed = node_tier.prime_set(target.base_url, objects, fleet.origin,
                                         deadline_s=s.prime_s)  # fmt: skip
            session.say(f"  {target.name}: primed {primed.ok:,}/{objects.count:,} in "
                        f"{primed.seconds:.1f} s, {primed.origin_requests:,} origin requests")  # fmt: skip
            if primed.ok < objects.count:
                session.notes.append(f"{scenario.name}: {target.name} primed {primed.ok:,} of "
                                     f"{objects.count:,} objects in --prime-s")  # fmt: skip
        prime(target, scenario.prime, over_tls=scenario.targets == TLS_TARGETS)
        if s.warm_s > 0 and scenario.workload is not None:
            drive(url_of(target, scenario), scenario.workload if scenario.workload.kind != "cold"
                  else Workload("cold", "/", nonce="warm" + uuid.uuid4().hex[:6]),
                  duration_s=s.warm_s, connections=s.connections, use_wrk=s.use_wrk)  # fmt: skip
        setup[target.name] = fleet.origin.requests() - before
    for round_no in range(1, s.rounds + 1):
        for target in targets:
            measure(session, target, scenario, round_no, fleet.origin)
    # Every origin request a target made in this scenario, priming included (hit-zipf: the
    # goal is one per URL with 2 workers).
    measured = dict.fromkeys(setup, 0)
    for r in session.runs:
        if r.scenario == scenario.name and r.target in measured:
            measured[r.target] += r.origin_requests
    # URLs requested: the set's, or those of the 10,000 that the Zipf sequence draws at all
    zipf_urls = len(set(zipf_paths())) if "zipf" in scenario.prime else 0
    urls = objects.count if objects is not None else zipf_urls
    session.extra.setdefault("origin_totals", {})[scenario.name] = {
        "urls": urls,
        "targets": {name: setup[name] + measured[name] for name in setup},
    }
    if scenario.targets == EDGE_SIZES:
        split = {t.name: cpu.memory(t.pids) for t in targets}
        session.extra["memory"] = {name: m.rss for name, m in split.items()}
        # the supervisor locks the table's probe sections (file pages: in RSS, not in anon)
        session.extra["memory_split"] = {name: asdict(m) for name, m in split.items()}
        for t in targets[1:]:
            fleet.stop(t.name)
    if scenario.targets == BIG_CACHES:
        for t in targets:
            fleet.stop(t.name)  # gigabytes of cache each


def run_handshakes(session: Session, fleet: Fleet, scenario: Scenario) -> None:
    """tls-new / tls-resume: `openssl s_time` clients against each TLS target, alternated by
    round; handshakes/s and the server's CPU per handshake (benchmarks/tls.py)."""
    s = session.settings
    if not tls.s_time_available():
        session.notes.append(f"{scenario.name} skipped: openssl is not on PATH")
        return
    targets = fleet.tls_targets()
    if not targets:
        session.say(f"{scenario.name}: no TLS target available, skipped")
        return
    resume = scenario.name == "tls-resume"
    session.say(
        f"== {scenario.name}: {scenario.title} — targets {', '.join(t.name for t in targets)}"
    )
    for round_no in range(1, s.rounds + 1):
        for target in targets:
            cpu_before = cpu.cpu_seconds(target.pids)
            done = tls.handshakes(
                target.tls_port, resume=resume, duration_s=s.duration_s,
                clients=HANDSHAKE_CLIENTS, ca_file=fleet.tls.ca_file,
            )  # fmt: skip
            cpu_s = cpu.cpu_seconds(target.pids) - cpu_before
            record(session, scenario, target, round_no, done.measured, cpu_s, 0)


def run_apply_under_load(session: Session, fleet: Fleet) -> None:
    """Hit load in 1 s windows; a big signed version dropped into the watched directory, with
    the signer's table (`--shipped-tables`) or alone (compiled by the node): one drop either
    way (`benchmarks.blocklist_scale.drop`), each window held to idle runs before the drop and
    after the last swap."""
    s = session.settings
    reason = blocklists.signing_available()
    if "edgeproxy" not in fleet.wanted or not EdgeTarget.available() or reason is not None:
        session.say(f"apply-under-load skipped ({reason or 'no edge'})")
        return
    from benchmarks import blocklist_scale

    size = s.apply_entries
    how = "with its table" if s.shipped_tables else "for the node to compile"
    session.say(f"== apply-under-load: preparing {size:,} entries {how} …")
    blocklist_scale.shipped_version(size)  # signed (and its table compiled) once, cached
    work = session.out / "work" / "apply"
    work.mkdir(parents=True, exist_ok=True)
    # With each window's detail (run-queue wait, loop lag, memory stalls, what took the
    # CPU): a window past 2x idle says what it shared the cores with. wrk runs under
    # SCHED_BATCH here whatever --client-batch says (the drop's default): a woken wrk
    # preempting a worker stalled its loop, in idle windows too (benchmarks/README.md).
    r = blocklist_scale.drop(size, work, ship=bool(s.shipped_tables), loaded=True,
                             connections=s.connections, table_install=s.shipped_tables or "copy",
                             detail=True)  # fmt: skip
    session.extra["apply_drop"] = r
    session.say("apply-under-load: " + blocklist_scale.report_drop(r))


def push_edge(session: Session, fleet: Fleet) -> EdgeTarget | None:
    """The edge push-enforce pushes to: the shared one, or with `push_list_entries` one of
    its own that has loaded a signed list of that many entries in every worker (issue 12)."""
    size = session.settings.push_list_entries
    if size == 0:
        edge = fleet.edge()
        if edge is None:
            session.say("push-enforce skipped (no edge)")
        return edge
    reason = blocklists.signing_available()
    if "edgeproxy" not in fleet.wanted or reason is not None:
        session.say(f"push-enforce skipped ({reason or 'no edge'})")
        return None
    session.say(f"push-enforce: preparing a signed blocklist of {size:,} entries …")
    directory, public = shipped_list_dir(session, session.out / "work" / "push", size)
    name = f"edgeproxy-push-bl{_short(size)}"
    bound = session.settings.list_load_s
    t0 = time.perf_counter()
    started = fleet.get(name, lambda: list_edge(session, fleet, name, directory, public))
    if not isinstance(started, EdgeTarget):
        return None
    loaded = edge_ops.wait_list_loaded(started, size, session.settings.workers, bound)
    if loaded is None:
        session.notes.append(f"push-enforce: the {size:,}-entry list was not loaded in {bound:g} s")
        session.say(f"push-enforce skipped (the list was not loaded in {bound:g} s)")
        fleet.stop(name)
        return None
    loaded_s = time.perf_counter() - t0
    session.say(f"push-enforce: {size:,} entries enforced by every worker {loaded_s:.1f} s "
                "after the edge's start")  # fmt: skip
    session.extra["push_list_loaded_s"] = round(loaded_s, 2)
    return started


def run_push_enforce(session: Session, fleet: Fleet) -> None:
    """Repeated admin pushes of one url entry each: time to the answer and to the first 451."""
    edge = push_edge(session, fleet)
    if edge is None:
        return
    list_entries = session.settings.push_list_entries
    session.say(f"== push-enforce: {session.settings.pushes} pushes, {list_entries:,} listed")
    nonce = uuid.uuid4().hex[:8]
    acks, enforced, violations, failures = [], [], 0, 0
    host = "127.0.0.1"
    for i in range(session.settings.pushes):
        path = f"/blocked/push-{nonce}-{i}"
        edge_ops.probe_status(edge.port, path)  # cached before it is listed
        first_451: list[float] = []
        done = threading.Event()

        def poll(
            path: str = path, first_451: list[float] = first_451, done: threading.Event = done
        ) -> None:
            while not done.is_set():
                if edge_ops.probe_status(edge.port, path) == 451:
                    first_451.append(time.perf_counter())
                    return

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        t0 = time.perf_counter()
        try:
            edge_ops.push(
                edge, [edge_ops.entry(f"push-{nonce}-{i}", "url", f"http://{host}{path}")]
            )
        except Exception as e:  # noqa: BLE001 - counted and reported
            failures += 1
            session.say(f"push {i}: failed ({e})")
            done.set()
            continue
        t_ack = time.perf_counter()
        late = sum(edge_ops.probe_status(edge.port, path) != 451 for _ in range(8))
        if late == 8 and i == 0 and host == "127.0.0.1":
            host = f"127.0.0.1:{edge.port}"
            session.notes.append(
                "push-enforce: entries without the port were not enforced; used host:port"
            )
        violations += late
        poller.join(timeout=5)
        done.set()
        acks.append((t_ack - t0) * 1e3)
        if first_451:
            enforced.append((first_451[0] - t0) * 1e3)
    result: dict[str, Any] = {
        "pushes": session.settings.pushes,
        "list_entries": list_entries,
        "failures": failures,
        "served_after_ack": violations,
        "ack_ms": _pcts(acks),
        "enforced_ms": _pcts(enforced),
    }
    session.extra["push_enforce"] = result
    session.say(
        f"push-enforce: answer p50 {result['ack_ms']['p50']:.1f} ms p99 {result['ack_ms']['p99']:.1f} ms; "
        f"first 451 p50 {result['enforced_ms']['p50']:.1f} ms p99 {result['enforced_ms']['p99']:.1f} ms; "
        f"listed responses served after the answer: {violations}"
    )
    if list_entries:
        fleet.stop(edge.name)


def run_fleet(session: Session) -> None:
    """benchmarks/fleet.py: 5 nodes and redis-server of its own (not the shared edge target)."""
    import asyncio

    from benchmarks import fleet as fleet_bench

    if shutil.which("redis-server") is None:
        session.notes.append("fleet: skipped, redis-server is not on PATH")
        session.say("fleet skipped (no redis-server)")
        return
    pushes = 20 if session.settings.quick else 100
    service_s = 2.0 if session.settings.quick else 5.0
    session.say(f"== fleet: 5 nodes, the takedown service for {service_s:.0f} s, {pushes} pushes")
    result = asyncio.run(
        fleet_bench.run(5, pushes, session.out / "work" / "fleet", service_s=service_s)
    )
    session.extra["fleet"] = result
    session.say(fleet_bench.table(result))


def _pcts(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "n": 0}
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)],
        "max": ordered[-1],
        "n": len(ordered),
    }


def run_soak(session: Session, fleet: Fleet) -> None:
    """benchmarks/soak.py: its own edge (a small memory tier, a watched signed version)."""
    s = session.settings
    if "edgeproxy" not in fleet.wanted or not EdgeTarget.available() or not s.use_wrk:
        why = "no edge" if s.use_wrk else "it needs wrk"
        session.notes.append(f"soak skipped ({why})")
        session.say(f"soak skipped ({why})")
        return
    settings = soak.SoakSettings(
        soak_s=s.soak_s,
        window_s=s.soak_window_s,
        workers=s.workers,
        version_entries=s.soak_entries,
    )
    session.say(f"== soak: {s.soak_s:g} s in windows of {s.soak_window_s:g} s")
    result = soak.run_soak(session.out / "work" / "soak", fleet.origin.port, settings, session.say)
    session.extra["soak"] = result
    print(result["table"], flush=True)


def run_node_hit(session: Session, fleet: Fleet, scenario: Scenario) -> None:
    """One edge, two workloads alternated round by round: a hot URL (L1 hits) and uniform
    draws over a set its L1 cannot hold (node-tier hits); `node_tier.py` says how."""
    s = session.settings
    if "edgeproxy" not in fleet.wanted:
        session.say("node-hit skipped (no edge)")
        return
    objects = node_tier.node_hit_objects(s.node_hit_objects)
    workdir = session.out / "work"
    edge = fleet.get(
        "edgeproxy-node", lambda: node_tier.node_hit_edge(workdir, objects, fleet.origin.port)
    )
    if not isinstance(edge, EdgeTarget):
        return
    session.say(f"== node-hit: {scenario.title}; {objects.count:,} objects")
    primed = node_tier.prime_set(edge.base_url, objects, fleet.origin, deadline_s=s.prime_s)
    session.say(f"  primed {primed.ok:,}/{objects.count:,} in {primed.seconds:.1f} s")
    workloads = node_tier.node_hit_workloads(objects)
    for workload in workloads.values():
        if s.warm_s > 0:
            drive(edge.base_url, workload, duration_s=s.warm_s, connections=s.connections,
                  use_wrk=s.use_wrk)  # fmt: skip
    rounds = []
    for round_no in range(1, s.rounds + 1):
        runs, node_hits = {}, {}
        for label, workload in workloads.items():
            before = edge_ops.metric(edge, "edgeproxy_node_tier_hits")
            runs[label] = measure(session, edge, scenario, round_no, fleet.origin,
                                  workload=workload, label=f"edgeproxy-node {label}")  # fmt: skip
            node_hits[label] = edge_ops.metric(edge, "edgeproxy_node_tier_hits") - before
        l1, node = runs["L1 hit"], runs["node-tier hit"]
        rounds.append({
            "round": round_no,
            "l1_us": l1.cpu_us_per_req,
            "node_us": node.cpu_us_per_req,
            "ratio": node.cpu_us_per_req / l1.cpu_us_per_req if l1.cpu_us_per_req else 0.0,
            # capped: the counter also counts answers still in flight when wrk stopped counting
            "node_share": min(1.0, node_hits["node-tier hit"] / max(1, node.measured.requests)),
        })  # fmt: skip
    result = {"objects": objects.count, "primed": primed.ok, "rounds": rounds}
    session.extra["node_hit"] = result
    print(node_tier.node_hit_table(result), flush=True)
    fleet.stop("edgeproxy-node")


def run_restart(session: Session, fleet: Fleet) -> None:
    s = session.settings
    if "edgeproxy" not in fleet.wanted or not EdgeTarget.available():
        session.say("restart skipped (no edge)")
        return
    objects = ObjectSet(s.restart_objects, s.big_set_min_bytes, s.big_set_max_bytes)
    settings = node_tier.RestartSettings(
        objects, workers=s.workers, connections=s.connections, load_s=s.restart_load_s,
        before_s=min(5.0, s.restart_load_s / 4), prime_s=s.prime_s, use_wrk=s.use_wrk,
    )  # fmt: skip
    session.say(f"== restart: {objects.count:,} objects under {s.restart_load_s:g} s of load")
    try:
        result = node_tier.run_restart(
            session.out / "work" / "edgeproxy-restart", fleet.origin, settings, session.say
        )
    except (RuntimeError, OSError) as e:  # reported; the run goes on without it
        session.notes.append(f"restart: failed ({e})")
        session.say(f"restart failed: {e}")
        return
    session.extra["restart"] = result
    print(node_tier.restart_table(result), flush=True)


def keep_logs_only(work: Path) -> None:
    """Drop caches, state and blocklist copies (hundreds of MB); keep the servers' logs."""
    logs = work.parent / "logs"
    logs.mkdir(exist_ok=True)
    for log in work.rglob("*.log"):
        if log.is_file():
            shutil.copyfile(log, logs / "-".join(log.relative_to(work).parts))
    shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--quick", action="store_true", help="short run (< 2 minutes)")
    parser.add_argument(
        "--duration-s", type=float, help="seconds per measured run (default 10, quick 1)"
    )
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (64)")
    parser.add_argument("--rounds", type=int, help="alternation rounds (default 3, quick 2)")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes/threads per server (2)"
    )
    parser.add_argument(
        "--scenarios",
        help=f"comma list of {', '.join(SCENARIOS)} ({', '.join(ON_REQUEST_ONLY)} only when "
        "named: they are long)",
    )
    parser.add_argument("--targets", help="comma list of edgeproxy, nginx, varnish, trafficserver")
    parser.add_argument(
        "--sizes", help="blocklist sizes (default 10,1000000,10000000; quick 10,10000)"
    )
    parser.add_argument(
        "--apply-entries", type=int, help="entries in the version applied under load"
    )
    parser.add_argument("--pushes", type=int, help="pushes in push-enforce (default 50, quick 10)")
    parser.add_argument(
        "--push-list-entries",
        type=int,
        default=0,
        help="push-enforce against an edge that loaded a signed list of this many entries "
        "(default 0: the shared edge, no list)",
    )
    parser.add_argument(
        "--list-load-s",
        type=float,
        default=900.0,
        help="bound on an edge's start-up load of a signed list (push-enforce, "
        "blocklist-size; 900 s)",
    )
    parser.add_argument(
        "--shipped-tables",
        choices=["copy", "link"],
        default="",
        help="blocklist-size, push-enforce and apply-under-load lists ship with their signer's "
        "compiled table, installed by copy or hard link (blocklist.table_install); default: "
        "the node compiles",
    )
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the bundled Python load generator"
    )
    parser.add_argument(
        "--soak-s", type=float, default=600.0, help="length of the soak scenario (600 s)"
    )
    parser.add_argument(
        "--soak-window-s", type=float, default=60.0, help="the soak's reporting window (60 s)"
    )
    parser.add_argument(
        "--soak-entries",
        type=int,
        default=100_000,
        help="entries in the soak's signed versions (100000)",
    )
    parser.add_argument(
        "--access-logs",
        action="store_true",
        help="the edge and nginx write an access log line per request (issue 18's hits goal is "
        "with the access log on); Varnish's and Traffic Server's stay off",
    )
    parser.add_argument(
        "--client-cpus",
        help="pin wrk to these CPUs (comma list) and every server process to the others: "
        "takes the client's share of the cores out of the servers' tail (issue 18)",
    )
    parser.add_argument(
        "--client-batch",
        action="store_true",
        help="run wrk under SCHED_BATCH: it never takes a server's core on waking (each "
        "answer written wakes it), as a client on another machine never does (issue 12, 18)",
    )
    parser.add_argument(
        "--edge-node-tier-bytes",
        type=int,
        default=1 << 30,
        help="the edge's node tier in the cache scenarios (1 GiB; 0: per-worker caches only)",
    )
    parser.add_argument(
        "--edge-node-tier-preallocate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the edge reserves its node tier's disk at start (cache.node_tier_preallocate, "
        "the default where safe): stores through a writable map; --no-…: with pwrite()",
    )
    parser.add_argument(
        "--node-hit-objects",
        type=int,
        help="node-hit: 4 KiB objects requested uniformly (default 20000, quick 5000)",
    )
    parser.add_argument(
        "--big-set-objects", type=int, default=100_000, help="big-set: objects (100000)"
    )
    parser.add_argument(
        "--big-set-kib",
        default="4,100",
        help="big-set and restart: object sizes, min,max KiB, log-uniform (4,100)",
    )
    parser.add_argument(
        "--prime-s",
        type=float,
        default=600.0,
        help="bound on priming an object set, per target (600 s)",
    )
    parser.add_argument(
        "--restart-objects", type=int, default=10_000, help="restart: objects (10000)"
    )
    parser.add_argument(
        "--restart-load-s",
        type=float,
        default=30.0,
        help="restart: the load run the restart happens in (30 s)",
    )
    parser.add_argument("--out", type=Path, help="output directory (default results/<timestamp>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = bool(args.quick)
    use_wrk = wrk_available() and not args.no_wrk
    if not use_wrk and not args.no_wrk:
        print(WRK_INSTALL_HINT, flush=True)
    sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else (
        (10, 10_000) if quick else (10, 1_000_000, 10_000_000))  # fmt: skip
    settings = Settings(
        duration_s=args.duration_s or (1.0 if quick else 10.0),
        connections=args.connections,
        rounds=args.rounds or (2 if quick else 3),
        workers=args.workers,
        warm_s=0.0 if quick else 2.0,
        sizes=sizes,
        apply_entries=args.apply_entries or (10_000 if quick else 1_000_000),
        pushes=args.pushes or (10 if quick else 50),
        push_list_entries=args.push_list_entries,
        list_load_s=args.list_load_s,
        shipped_tables=args.shipped_tables,
        use_wrk=use_wrk,
        quick=quick,
        soak_s=args.soak_s,
        soak_window_s=args.soak_window_s,
        soak_entries=args.soak_entries,
        edge_node_tier_bytes=args.edge_node_tier_bytes,
        node_hit_objects=args.node_hit_objects or (5_000 if quick else 20_000),
        big_set_objects=args.big_set_objects,
        big_set_min_bytes=int(args.big_set_kib.split(",")[0]) << 10,
        big_set_max_bytes=int(args.big_set_kib.split(",")[1]) << 10,
        prime_s=args.prime_s,
        restart_objects=args.restart_objects,
        restart_load_s=args.restart_load_s,
        client_cpus=tuple(int(c) for c in args.client_cpus.split(",")) if args.client_cpus else (),
        client_batch=args.client_batch,
    )
    pin_client(settings.client_cpus)
    batch_client(settings.client_batch)
    Target.access_logs = args.access_logs
    EdgeTarget.node_tier_preallocate = args.edge_node_tier_preallocate
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / stamp
    (out / "work").mkdir(parents=True, exist_ok=True)
    session = Session(settings, out)
    if args.access_logs:
        session.notes.append(
            "access logs on for the edge and nginx (a line per request to a file); "
            "Varnish's and Traffic Server's off"
        )
    if settings.client_batch:
        session.notes.append("wrk under SCHED_BATCH: it never preempts a server on waking")
    if settings.client_cpus:
        session.notes.append(
            f"wrk pinned to CPU {','.join(map(str, settings.client_cpus))}, the servers to the others"
        )
    names = (
        args.scenarios.split(",")
        if args.scenarios
        else [n for n in SCENARIOS if n not in ON_REQUEST_ONLY]
    )
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios: {unknown}; known: {list(SCENARIOS)}", file=sys.stderr)
        return 2
    wanted = (
        args.targets.split(",") if args.targets else ["edgeproxy"] + [c.kind for c in COMPETITORS]
    )
    session.say(
        f"benchmarks → {out}  (load: {'wrk' if use_wrk else 'bundled Python generator, LESS PRECISE'}; "
        f"{settings.rounds} rounds × {settings.duration_s:g}s, {settings.connections} connections, "
        f"{settings.workers} workers)"
    )
    origin = Origin(out)
    fleet = Fleet(session, origin, wanted)
    interrupted = False
    try:
        if "edgeproxy" in wanted and not EdgeTarget.available():
            session.notes.append("edgeproxy is not runnable (`edgeproxy serve --help` failed)")
            session.say(
                "edgeproxy: `edgeproxy serve --help` failed; running the other targets only"
            )
        for name in names:
            scenario = SCENARIOS[name]
            if name == "apply-under-load":
                run_apply_under_load(session, fleet)
            elif name == "push-enforce":
                run_push_enforce(session, fleet)
            elif name == "soak":
                run_soak(session, fleet)
            elif name == "fleet":
                run_fleet(session)
            elif name in ("tls-new", "tls-resume"):
                run_handshakes(session, fleet, scenario)
            elif name == "node-hit":
                run_node_hit(session, fleet, scenario)
            elif name == "restart":
                run_restart(session, fleet)
            else:
                run_load_scenario(session, fleet, scenario)
    except KeyboardInterrupt:
        interrupted = True
        session.notes.append("interrupted: partial results")
        session.say("interrupted; stopping servers and writing partial results")
    finally:
        fleet.stop_all()
        origin.stop()
        meta = {
            "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
            "settings": asdict(settings),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()},
            "versions": report.versions(),
            "unavailable": fleet.unavailable,
            "notes": session.notes,
            "elapsed_s": round(time.perf_counter() - session.started, 1),
        }  # fmt: skip
        paths = report.write(out, meta, session.runs, session.extra)
        keep_logs_only(out / "work")
        session.say(f"wrote {', '.join(str(p) for p in paths)}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
