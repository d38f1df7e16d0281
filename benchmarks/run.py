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
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import blocklists, cpu, edge_ops, report, soak
from benchmarks.load import WRK_INSTALL_HINT, Measured, Workload, drive, wrk_available, zipf_paths
from benchmarks.loadgen import run_load_sync
from benchmarks.targets import COMPETITORS, EdgeTarget, Target, free_port, http_status

RESULTS = Path(__file__).parent / "results"
CACHE_TARGETS = "cache"  # every target: edge and competitors
EDGE_SIZES = "sizes"  # the edge with blocklists of several sizes


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
    )
}  # fmt: skip
ON_REQUEST_ONLY = ("soak",)  # long: run only when named in --scenarios


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
    soak_s: float = 600.0
    soak_window_s: float = 60.0
    soak_entries: int = 100_000


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


class Origin:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        log = open(workdir / "origin.log", "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.origin", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parent.parent,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 15
        while http_status(f"http://127.0.0.1:{self.port}/__stats", 0.5) != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the bundled origin did not start; see origin.log")
            time.sleep(0.05)

    def requests(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__stats", timeout=5) as r:
            return int(json.loads(r.read())["requests"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class Fleet:
    """Targets started on first use and all stopped at the end."""

    def __init__(self, session: Session, origin: Origin, wanted: list[str]) -> None:
        self.session, self.origin, self.wanted = session, origin, wanted
        self.started: dict[str, Target] = {}
        self.unavailable: dict[str, str] = {}

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
        self.started[name] = target
        return target

    def cache_targets(self) -> list[Target]:
        found: list[Target] = []
        if "edgeproxy" in self.wanted:
            edge = self.get("edgeproxy", EdgeTarget)
            if edge is not None:
                found.append(edge)
        for cls in COMPETITORS:
            if cls.kind in self.wanted:
                target = self.get(cls.kind, lambda cls=cls: cls(cls.kind))  # type: ignore[misc]
                if target is not None:
                    found.append(target)
        return found

    def edge(self) -> EdgeTarget | None:
        if "edgeproxy" not in self.wanted:
            return None
        edge = self.get("edgeproxy", EdgeTarget)
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


def prime(target: Target, paths: tuple[str, ...]) -> None:
    """Fetch each path twice so every cache has stored it (Zipf: each of the 10,000 URLs once)."""
    for path in paths:
        if path == "zipf":
            distinct = sorted(set(zipf_paths()), key=lambda p: int(p.rsplit("/", 1)[1]))
            run_load_sync(target.base_url, iter(distinct), connections=16, duration_s=120)
        else:
            for _ in range(2):
                http_status(target.base_url + path)


def measure(
    session: Session, target: Target, scenario: Scenario, round_no: int, origin: Origin
) -> Run:
    s = session.settings
    workload = scenario.workload
    assert workload is not None
    if workload.kind == "cold":
        workload = Workload("cold", "/", nonce=uuid.uuid4().hex[:8])
    cpu_before = cpu.cpu_seconds(target.pids)
    origin_before = origin.requests()
    measured = drive(
        target.base_url, workload, duration_s=s.duration_s, connections=s.connections,
        use_wrk=s.use_wrk,
    )  # fmt: skip
    cpu_s = cpu.cpu_seconds(target.pids) - cpu_before
    origin_requests = origin.requests() - origin_before
    per_req = cpu_s * 1e6 / measured.requests if measured.requests else 0.0
    run = Run(scenario.name, target.name, round_no, measured, cpu_s, per_req, origin_requests)
    session.runs.append(run)
    flag = ""
    if measured.errors or measured.unexpected:
        flag = f"  errors {measured.errors}, unexpected status {measured.unexpected}"
    session.say(
        f"{scenario.name} round {round_no}/{s.rounds} {target.name:<18} "
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
        directory, public = blocklists.blocklist_dir(session.out / "work", size)
        session.say(f"  ready in {time.perf_counter() - t0:.1f}s")
        name = f"edgeproxy-bl{_short(size)}"
        target = fleet.get(
            name,
            lambda d=directory, p=public, n=name: EdgeTarget(n, blocklist_dir=d, blocklist_key=p),  # type: ignore[misc]
        )
        if target is not None:
            found.append(target)
    return found


def _short(n: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def run_load_scenario(session: Session, fleet: Fleet, scenario: Scenario) -> None:
    s = session.settings
    if scenario.targets == EDGE_SIZES:
        targets = size_targets(session, fleet)
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
    for target in targets:
        prime(target, scenario.prime)
        if s.warm_s > 0 and scenario.workload is not None:
            drive(target.base_url, scenario.workload if scenario.workload.kind != "cold"
                  else Workload("cold", "/", nonce="warm" + uuid.uuid4().hex[:6]),
                  duration_s=s.warm_s, connections=s.connections, use_wrk=s.use_wrk)  # fmt: skip
    for round_no in range(1, s.rounds + 1):
        for target in targets:
            measure(session, target, scenario, round_no, fleet.origin)
    if scenario.targets == EDGE_SIZES:
        session.extra["memory"] = {t.name: cpu.rss_bytes(t.pids) for t in targets}
        for t in targets[1:]:
            fleet.stop(t.name)


def run_apply_under_load(session: Session, fleet: Fleet) -> None:
    """Hit load in 1 s windows; a big signed version dropped into the watched directory."""
    s = session.settings
    reason = blocklists.signing_available()
    if "edgeproxy" not in fleet.wanted or not EdgeTarget.available() or reason is not None:
        session.say(f"apply-under-load skipped ({reason or 'no edge'})")
        return
    size = s.apply_entries
    probe_path = "/blocked/apply-probe"
    session.say(f"== apply-under-load: preparing {size:,} entries (version 2) …")
    directory, public = blocklists.blocklist_dir(session.out / "work" / "apply", 10, sequence=1)
    body = _origin_body(fleet.origin, probe_path)
    big = blocklists.version_file(
        size, 2, probes=[("prefix", f"http://127.0.0.1{probe_path}"), ("sha256", _sha256(body))]
    )
    edge = fleet.get("edgeproxy-apply", lambda: EdgeTarget(
        "edgeproxy-apply", blocklist_dir=directory, blocklist_key=public))  # fmt: skip
    if edge is None:
        return
    prime(edge, ("/bytes/1024", probe_path))
    windows: list[dict[str, Any]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            m = drive(edge.base_url, Workload("url", "/bytes/1024"), duration_s=1.0,
                      connections=s.connections, use_wrk=s.use_wrk)  # fmt: skip
            windows.append({"start": t0, "end": time.perf_counter(), "measured": m})

    thread = threading.Thread(target=load, daemon=True)
    cpu_before = cpu.cpu_seconds(edge.pids)
    thread.start()
    try:
        while len(windows) < 3:
            time.sleep(0.05)
        rss_before = cpu.rss_bytes(edge.pids)
        staging = directory.parent / "staging"
        staging.mkdir(exist_ok=True)
        shutil.copyfile(big, staging / big.name)
        session.say(f"apply-under-load: dropping version 2 ({size:,} entries) into {directory}")
        t_drop = time.perf_counter()
        os.replace(staging / big.name, directory / big.name)
        t_enforced = edge_ops.wait_enforced(edge.port, probe_path, timeout_s=300.0)
        if t_enforced is None:
            session.notes.append("apply-under-load: the new version was not enforced in 300 s")
            t_enforced = time.perf_counter()
        seen = len(windows)
        while len(windows) < seen + 3:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    rss_after = cpu.rss_bytes(edge.pids)
    cpu_s = cpu.cpu_seconds(edge.pids) - cpu_before
    phases: dict[str, list[Measured]] = {"before": [], "during": [], "after": []}
    rows = []
    for w in windows:
        phase = ("before" if w["end"] <= t_drop else "after" if w["start"] >= t_enforced
                 else "during")  # fmt: skip
        phases[phase].append(w["measured"])
        rows.append({"t_s": round(w["start"] - t_drop, 2), "phase": phase, **asdict(w["measured"])})
    summary = {
        phase: {
            "windows": len(ms),
            "p99_us": max((m.p99_us for m in ms), default=0.0),
            "p99_median_us": statistics.median([m.p99_us for m in ms]) if ms else 0.0,
            "rps": statistics.median([m.rps for m in ms]) if ms else 0.0,
            "errors": sum(m.errors for m in ms),
            "unexpected": sum(m.unexpected for m in ms),
        }
        for phase, ms in phases.items()
    }
    result = {
        "entries": size,
        "apply_s": round(t_enforced - t_drop, 3),
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "cpu_s": round(cpu_s, 2),
        "phases": summary,
        "windows": rows,
    }
    session.extra["apply_under_load"] = result
    idle = summary["before"]["p99_median_us"] or 1.0
    session.say(
        f"apply-under-load: enforced after {result['apply_s']:.2f}s; p99 before "
        f"{summary['before']['p99_median_us'] / 1000:.2f} ms, during "
        f"{summary['during']['p99_us'] / 1000:.2f} ms ({summary['during']['p99_us'] / idle:.2f}×), "
        f"after {summary['after']['p99_median_us'] / 1000:.2f} ms; errors "
        f"{sum(p['errors'] + p['unexpected'] for p in summary.values())}"
    )
    fleet.stop("edgeproxy-apply")


def _origin_body(origin: Origin, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{origin.port}{path}", timeout=5) as r:
        return bytes(r.read())


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def run_push_enforce(session: Session, fleet: Fleet) -> None:
    """Repeated admin pushes of one url entry each: time to the answer and to the first 451."""
    edge = fleet.edge()
    if edge is None:
        session.say("push-enforce skipped (no edge)")
        return
    session.say(f"== push-enforce: {session.settings.pushes} pushes")
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
    result = {
        "pushes": session.settings.pushes,
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
        help=f"comma list of {', '.join(SCENARIOS)} (soak only when named: it runs --soak-s)",
    )
    parser.add_argument("--targets", help="comma list of edgeproxy, nginx, varnish, trafficserver")
    parser.add_argument(
        "--sizes", help="blocklist sizes (default 10,100000,1000000; quick 10,10000)"
    )
    parser.add_argument(
        "--apply-entries", type=int, help="entries in the version applied under load"
    )
    parser.add_argument("--pushes", type=int, help="pushes in push-enforce (default 50, quick 10)")
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
    parser.add_argument("--out", type=Path, help="output directory (default results/<timestamp>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = bool(args.quick)
    use_wrk = wrk_available() and not args.no_wrk
    if not use_wrk and not args.no_wrk:
        print(WRK_INSTALL_HINT, flush=True)
    sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else (
        (10, 10_000) if quick else (10, 100_000, 1_000_000))  # fmt: skip
    settings = Settings(
        duration_s=args.duration_s or (1.0 if quick else 10.0),
        connections=args.connections,
        rounds=args.rounds or (2 if quick else 3),
        workers=args.workers,
        warm_s=0.0 if quick else 2.0,
        sizes=sizes,
        apply_entries=args.apply_entries or (10_000 if quick else 1_000_000),
        pushes=args.pushes or (10 if quick else 50),
        use_wrk=use_wrk,
        quick=quick,
        soak_s=args.soak_s,
        soak_window_s=args.soak_window_s,
        soak_entries=args.soak_entries,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / stamp
    (out / "work").mkdir(parents=True, exist_ok=True)
    session = Session(settings, out)
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
