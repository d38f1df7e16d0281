"""The soak scenario (issue 19): does the edge stay as fast, as small and as strict after an
hour as after its cache first filled?

    python -m benchmarks.run --scenarios soak --soak-s 3600        # the hour (default 600)
    python -m benchmarks.run --scenarios soak --soak-s 180         # a short proof

One edge node (2 workers, a 32 MiB memory tier, a 64 MiB node tier, a signed blocklist
version watched in a directory) under wrk with a Lua script of mixed traffic over a working set
far larger than the memory tier:

    30%  hot hits           /bytes/4096?h=0..1999
    20%  working set        /cold/ws-0..99999 (1 KiB each: misses, hits, evictions)
    10%  no-store           /nostore/2048?n=0..999
    15%  one shared body    /same/p0..99/0..1999 (200,000 URLs, one 4 KiB body: issue 19)
    10%  Vary variants      /vary/0..499 x 8 Accept-Language values
    10%  Range requests     /bytes/8192?r=0..999 with Range: bytes=100-1123
     5%  listed             /blocked/item-0..999 (a prefix of the file version: 451)

Meanwhile an operator thread pushes an entry every `push_every_s` through the admin API (a url
of the working set, a url with a query among the hot URLs, a prefix over one group of the
shared-body URLs, an unrelated host, in turn), each fetched just before so a stored copy must
be purged, probes each listed URL three times on fresh connections once the push is answered,
and removes entries pushed two rounds earlier. At 40% of the run it SIGKILLs one worker (the
supervisor starts another); at 50% it drops a full version 2 into the watched directory (a
quarter more entries, so the node compiles and loads it whole, plus a hot URL with a query and
a `/v2only/` prefix) and waits until it is enforced.

Listed bytes served are counted twice: the origin marks every `/blocked/` answer
`X-Bench-Listed: 1` and the Lua script counts any it receives that is not a 451; and every
probe of a listed URL after its push was answered must be a 451. Both must be 0.

Reported per window (a minute by default): req/s, the node's CPU per request, p99, statuses,
socket errors, 5xx and other unexpected statuses, listed answers served, the memory of the node's
processes (RSS, the supervisor's apart; PSS, which counts the shared mapped list and node tier
once; anonymous memory, where a leak would show) and how full the caches are; and the goals of the issue:
last-window req/s >= 90% of the first quiet window that started with full caches (memory and
node tier), RSS within 10% from then on (the kill's window left out: the restarted worker starts
empty), 0 errors (socket errors in the window of the kill are
the killed worker's own connections, reported apart), 0 listed bytes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import blocklists, cpu, edge_ops
from benchmarks.targets import EdgeTarget

MiB = 1 << 20
LISTED_PREFIX = "/blocked/"
V2_PROBE = "/v2only/probe"
V2_HOT_URL = "/bytes/4096?h=7"
FULL_FRACTION = 0.95  # the caches count as full from this fill on


@dataclass(frozen=True)
class SoakSettings:
    soak_s: float = 600.0
    window_s: float = 60.0
    connections: int = 32
    workers: int = 2
    memory_bytes: int = 32 * MiB
    node_tier_bytes: int = 64 * MiB
    push_every_s: float = 3.0
    version_entries: int = 100_000
    kill_at: float = 0.4  # fractions of the run
    full_version_at: float = 0.5


LUA = r"""
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
ok, partial, blocked, s5xx, unexpected, listed, listed_bytes = 0, 0, 0, 0, 0, 0, 0
local langs = {"en", "de", "fr", "es", "it", "ja", "pt", "nl"}
function init(args)
  math.randomseed(tid * 7919 + os.time())
end
function request()
  local r = math.random(100)
  if r <= 30 then return wrk.format("GET", "/bytes/4096?h=" .. math.random(0, 1999))
  elseif r <= 50 then return wrk.format("GET", "/cold/ws-" .. math.random(0, 99999))
  elseif r <= 60 then return wrk.format("GET", "/nostore/2048?n=" .. math.random(0, 999))
  elseif r <= 75 then
    return wrk.format("GET", "/same/p" .. math.random(0, 99) .. "/" .. math.random(0, 1999))
  elseif r <= 85 then
    return wrk.format("GET", "/vary/" .. math.random(0, 499),
                      {["Accept-Language"] = langs[math.random(#langs)]})
  elseif r <= 95 then
    return wrk.format("GET", "/bytes/8192?r=" .. math.random(0, 999),
                      {["Range"] = "bytes=100-1123"})
  end
  return wrk.format("GET", "/blocked/item-" .. math.random(0, 999))
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 206 then partial = partial + 1
  elseif status == 451 then blocked = blocked + 1
  elseif status >= 500 then s5xx = s5xx + 1
  else unexpected = unexpected + 1 end
  if status ~= 451 and (headers["X-Bench-Listed"] or headers["x-bench-listed"]) then
    listed = listed + 1
    listed_bytes = listed_bytes + #(body or "")
  end
end
function done(summary, latency, requests)
  local c = {ok = 0, partial = 0, blocked = 0, s5xx = 0, unexpected = 0, listed = 0,
             listed_bytes = 0}
  for _, t in ipairs(threads) do
    for k, _ in pairs(c) do c[k] = c[k] + (t:get(k) or 0) end
  end
  io.write(string.format(
    'SOAKJSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"p50":%d,"p99":%d,' ..
    '"max":%d,"ok":%d,"partial":%d,"blocked":%d,"s5xx":%d,"unexpected":%d,"listed":%d,' ..
    '"listed_bytes":%d}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, c.ok, c.partial, c.blocked,
    c.s5xx, c.unexpected, c.listed, c.listed_bytes))
end
"""


@dataclass
class Window:
    """One wrk run of `window_s` and what the node looked like at its ends."""

    index: int
    start_s: float  # since the soak started
    end_s: float
    requests: int = 0
    rps: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    max_us: float = 0.0
    ok: int = 0
    partial: int = 0
    blocked: int = 0
    s5xx: int = 0
    unexpected: int = 0
    socket_errors: int = 0
    listed: int = 0
    listed_bytes: int = 0
    rss_bytes: int = 0
    rss_supervisor_bytes: int = 0  # of which the supervisor (the rest: workers)
    pss_bytes: int = 0  # the same tree with each shared page divided among its mappers
    anon_bytes: int = 0  # heap and stacks only: no mapped list or node-tier pages
    cpu_us_per_request: float = 0.0  # the node's CPU (all processes) per answer: steadier
    # than req/s on a shared machine, so the first sign of a per-request cost that grows
    cache_fill_start: float = 0.0  # `cache_fill`: the lesser of the memory and node tiers
    cache_fill_end: float = 0.0
    events: list[str] = field(default_factory=list)


def run_window(base_url: str, script: Path, duration_s: float, connections: int) -> dict[str, Any]:
    argv = [
        "wrk", "-t2", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
        "--timeout", "5s", "-s", str(script), base_url + "/",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("SOAKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    data: dict[str, Any] = json.loads(line[len("SOAKJSON ") :])
    return data


# -- the node, seen through its admin API ---------------------------------------------------


def admin_get(edge: EdgeTarget, path: str) -> Any:
    request = urllib.request.Request(
        edge.admin_url + path, headers={"Authorization": f"Bearer {edge.admin_token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def cache_fill(edge: EdgeTarget) -> float:
    """How full the caches are: the lesser of the memory tier (summed over workers) and the
    node tier (when there is one). RSS can only settle once both have."""
    try:
        workers = admin_get(edge, "/status")["workers"]
    except (OSError, ValueError, KeyError):
        return 0.0
    held = sum(w["cache_bytes"] for w in workers)
    bound = sum(w["cache_max_bytes"] for w in workers) or 1
    memory = held / bound
    node = node_fill(edge)
    return memory if node is None else min(memory, node)


def node_fill(edge: EdgeTarget) -> float | None:
    """The node tier's bytes over its bound, from /metrics; None without a node tier."""
    request = urllib.request.Request(
        edge.admin_url + "/metrics", headers={"Authorization": f"Bearer {edge.admin_token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("edgeproxy_node_tier_bytes", "edgeproxy_node_tier_max_bytes"):
            values[name] = float(value)
    bound = values.get("edgeproxy_node_tier_max_bytes", 0.0)
    return values.get("edgeproxy_node_tier_bytes", 0.0) / bound if bound else None


def remove(edge: EdgeTarget, entry_id: str) -> None:
    request = urllib.request.Request(
        edge.admin_url + "/blocklist/entries/" + entry_id,
        headers={"Authorization": f"Bearer {edge.admin_token}"},
        method="DELETE",
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        r.read()


def fetch(port: int, path: str) -> tuple[int, int]:
    """(status, body bytes) of one GET on a fresh connection; (0, 0) when nothing answered."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status), len(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), 0
    except OSError:
        return 0, 0


# -- the operator: pushes, removes, a killed worker, a full version --------------------------


@dataclass
class OperatorLog:
    pushes: int = 0
    removes: int = 0
    push_failures: int = 0
    probes: int = 0
    listed_served: int = 0  # probes of a listed URL, after its push was answered, not 451
    listed_bytes: int = 0
    push_ms: list[float] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, what)


class Operator(threading.Thread):
    """Runs beside the load: every `push_every_s` one push (and a removal), once a worker
    kill, once a full version. Stops when told; never raises (failures are counted)."""

    def __init__(
        self, edge: EdgeTarget, settings: SoakSettings, started: float, v2: Path | None
    ) -> None:
        super().__init__(daemon=True, name="soak-operator")
        self.edge, self.settings, self.started, self.v2 = edge, settings, started, v2
        self.log = OperatorLog()
        self.stop_event = threading.Event()
        self._rng = random.Random(19)
        self._listed: list[str] = []
        self._n = 0

    def now(self) -> float:
        return time.perf_counter() - self.started

    def event(self, what: str) -> None:
        self.log.events.append((self.now(), what))

    def run(self) -> None:
        s = self.settings
        kill_at, full_at = s.soak_s * s.kill_at, s.soak_s * s.full_version_at
        killed = applied = False
        while not self.stop_event.wait(s.push_every_s):
            try:
                if not killed and self.now() >= kill_at:
                    killed = True
                    self.kill_worker()
                if not applied and self.now() >= full_at:
                    applied = True
                    self.apply_full_version()
                self.push_one()
            except Exception as e:  # noqa: BLE001 - counted; the soak goes on
                self.log.push_failures += 1
                self.event(f"operator error: {type(e).__name__}: {e}")

    def push_one(self) -> None:
        """One entry of the next kind, its URL fetched (so stored) before, probed after."""
        self._n += 1
        n, rng = self._n, self._rng
        kind = ("url", "url-query", "prefix", "host")[n % 4]
        if kind == "url":
            path = probe = f"/cold/ws-{rng.randrange(100_000)}"
        elif kind == "url-query":
            path = probe = f"/bytes/4096?h={rng.randrange(2000)}"
        elif kind == "prefix":
            path = f"/same/p{rng.randrange(100)}/"
            probe = f"{path}{rng.randrange(2000)}"
        else:
            path, probe = "", ""
        fetch(self.edge.port, probe or "/bytes/1")
        eid = f"soak-{n}"
        if kind == "host":
            entry = edge_ops.entry(eid, "host", f"listed-{n}.example")
        else:
            etype = "prefix" if kind == "prefix" else "url"
            entry = edge_ops.entry(eid, etype, f"http://127.0.0.1{path}")
        t0 = time.perf_counter()
        edge_ops.push(self.edge, [entry])
        self.log.push_ms.append((time.perf_counter() - t0) * 1e3)
        self.log.pushes += 1
        if probe:
            self.probe_listed(probe)
        self._listed.append(eid)
        if len(self._listed) > 2 * 4:  # entries live two rounds of the four kinds
            remove(self.edge, self._listed.pop(0))
            self.log.removes += 1

    def probe_listed(self, path: str, times: int = 3) -> None:
        for _ in range(times):
            status, size = fetch(self.edge.port, path)
            self.log.probes += 1
            if status != 451:
                self.log.listed_served += 1
                self.log.listed_bytes += size
                self.event(f"listed {path} answered {status}")

    def kill_worker(self) -> None:
        status = admin_get(self.edge, "/status")
        before = status["restarts"]
        pid = int(status["workers"][0]["pid"])
        os.kill(pid, signal.SIGKILL)
        self.event(f"SIGKILL worker pid {pid}")
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            time.sleep(0.2)
            try:
                now = admin_get(self.edge, "/status")
            except OSError:
                continue
            pids = {int(w["pid"]) for w in now["workers"]}
            if now["restarts"] > before and pid not in pids and len(pids) >= self.settings.workers:
                self.event(f"worker restarted ({len(pids)} workers)")
                return
        self.event("worker NOT restarted within 60 s")

    def apply_full_version(self) -> None:
        if self.v2 is None or self.edge.blocklist_dir is None:
            self.event("full version skipped (signing unavailable)")
            return
        fetch(self.edge.port, V2_HOT_URL)  # stored before it is listed
        staging = self.edge.blocklist_dir.parent / "staging"
        staging.mkdir(exist_ok=True)
        shutil.copyfile(self.v2, staging / self.v2.name)
        t0 = time.perf_counter()
        os.replace(staging / self.v2.name, self.edge.blocklist_dir / self.v2.name)
        self.event("full version 2 dropped")
        enforced = edge_ops.wait_enforced(self.edge.port, V2_PROBE, timeout_s=300.0)
        if enforced is None:
            self.event("full version 2 NOT enforced within 300 s")
            return
        self.event(f"full version 2 enforced after {enforced - t0:.2f} s")
        self.probe_listed(V2_HOT_URL)


# -- the report -----------------------------------------------------------------------------


def summarise(windows: list[Window], operator: OperatorLog, window_s: float) -> dict[str, Any]:
    """Per-window rows and the issue's four goals. Pure: tested on made-up windows."""
    kill_windows = {w.index for w in windows if any("SIGKILL" in e for e in w.events)}
    full = first_full_window(windows)
    errors = sum(w.s5xx + w.unexpected for w in windows)
    socket_errors = sum(w.socket_errors for w in windows if w.index not in kill_windows)
    kill_socket_errors = sum(w.socket_errors for w in windows if w.index in kill_windows)
    listed = sum(w.listed for w in windows) + operator.listed_served
    listed_bytes = sum(w.listed_bytes for w in windows) + operator.listed_bytes
    goals: dict[str, Any] = {
        "errors": {"value": errors + socket_errors, "ok": errors + socket_errors == 0},
        "listed_bytes": {"value": listed_bytes, "answers": listed, "ok": listed == 0},
    }
    if full is None or windows[-1].index == full.index:
        goals["throughput"] = {"ok": None, "why": "no full-cache window before the last"}
        goals["rss"] = {"ok": None, "why": "no full-cache window before the last"}
    else:
        ratio = windows[-1].rps / full.rps if full.rps else 0.0
        goals["throughput"] = {"first_full_window": full.index, "ratio": ratio, "ok": ratio >= 0.9}
        # The kill's window is left out: the restarted worker starts empty, so the node's
        # memory dips there (a dip is not growth, which is what the goal watches for).
        settled = [
            w
            for w in windows
            if w.index >= full.index and not any(e.startswith(KILL_EVENTS) for e in w.events)
        ]
        spread = _spread([w.rss_bytes for w in settled])
        goals["rss"] = {
            "spread": spread,
            "ok": spread <= 0.10,
            "pss_spread": _spread([w.pss_bytes for w in settled]),
            "anon_spread": _spread([w.anon_bytes for w in settled]),
        }
    return {
        "window_s": window_s,
        "windows": [asdict(w) for w in windows],
        "kill_window_socket_errors": kill_socket_errors,
        "operator": asdict(operator),
        "goals": goals,
    }


def _spread(values: list[int]) -> float:
    """(max - min) / min; 0 for no values or a zero minimum (not measured)."""
    low = min(values, default=0)
    return (max(values) - low) / low if low else 0.0


def first_full_window(windows: list[Window]) -> Window | None:
    """The throughput baseline: the first window that started with full caches (or,
    when none did, the one after the window that filled it), skipping windows with a worker
    kill or a full version in them, which are the soak's deliberate disturbances, not its
    steady state. With every full window disturbed, the first of them."""
    full = [w for w in windows if w.cache_fill_start >= FULL_FRACTION]
    if not full:
        filled = next((w for w in windows if w.cache_fill_end >= FULL_FRACTION), None)
        full = [w for w in windows if filled is not None and w.index > filled.index]
    quiet = [w for w in full if not any(e.startswith(DISTURBANCES) for e in w.events)]
    return (quiet or full or [None])[0]


KILL_EVENTS = ("SIGKILL", "worker restarted")
DISTURBANCES = (*KILL_EVENTS, "full version")


def table(summary: dict[str, Any]) -> str:
    """The per-window table (markdown) and the goals, as benchmarks/README.md shows them."""
    unit = "min" if summary["window_s"] == 60 else f"×{summary['window_s']:g}s"
    lines = [
        f"| {unit} | req/s | CPU µs/req | p99 ms | 200/206/451 | socket err | 5xx+other "
        "| listed | RSS MiB (supervisor) | PSS / anon MiB | caches full | events |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in summary["windows"]:
        events = "; ".join(w["events"]) or ""
        lines.append(
            f"| {w['index'] + 1} | {w['rps']:,.0f} | {w['cpu_us_per_request']:,.0f} "
            f"| {w['p99_us'] / 1000:.1f} "
            f"| {w['ok']:,}/{w['partial']:,}/{w['blocked']:,} | {w['socket_errors']} "
            f"| {w['s5xx'] + w['unexpected']} | {w['listed']} | {w['rss_bytes'] / MiB:,.0f} "
            f"({w['rss_supervisor_bytes'] / MiB:,.0f}) "
            f"| {w['pss_bytes'] / MiB:,.0f} / {w['anon_bytes'] / MiB:,.0f} "
            f"| {w['cache_fill_end']:.0%} | {events} |"
        )
    g, op = summary["goals"], summary["operator"]
    lines.append("")
    lines.append(_goal_line(g))
    lines.append(
        f"Operator: {op['pushes']} pushes, {op['removes']} removals, {op['probes']} probes of "
        f"listed URLs ({op['listed_served']} not 451), {op['push_failures']} failures; socket "
        f"errors in the kill's window: {summary['kill_window_socket_errors']}."
    )
    return "\n".join(lines)


def _goal_line(g: dict[str, Any]) -> str:
    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    t, r = g["throughput"], g["rss"]
    tp = f"{t['ratio']:.0%} of window {t['first_full_window'] + 1}" if "ratio" in t else t["why"]
    rs = (
        f"{r['spread']:.1%} spread (PSS {r['pss_spread']:.1%}, anon {r['anon_spread']:.1%})"
        if "spread" in r
        else r["why"]
    )
    return (
        f"Goals: last-window throughput {tp} ({mark(t['ok'])}, ≥ 90%); RSS once full {rs} "
        f"({mark(r['ok'])}, ≤ 10%); errors {g['errors']['value']} ({mark(g['errors']['ok'])}); "
        f"listed bytes {g['listed_bytes']['value']} ({mark(g['listed_bytes']['ok'])})."
    )


# -- the run ----------------------------------------------------------------------------------


def prepare_versions(workdir: Path, entries: int) -> tuple[Path | None, Path | None, Path | None]:
    """(watched directory holding version 1, public key, version 2), or Nones without signing.
    Version 1 lists `/blocked/`; version 2 a quarter more entries (more than the node's
    `delta_max_fraction`, so it is compiled and loaded whole), a hot URL and `/v2only/`."""
    if blocklists.signing_available() is not None:
        return None, None, None
    public, _ = blocklists.keypair()
    listed = ("prefix", f"http://127.0.0.1{LISTED_PREFIX}")
    v1 = blocklists.version_file(entries, 1, probes=[listed])
    v2 = blocklists.version_file(
        entries + entries // 4,  # a fifth of it new: the node compiles it whole, not a delta
        2,
        probes=[
            listed,
            ("url", f"http://127.0.0.1{V2_HOT_URL}"),
            ("prefix", f"http://127.0.0.1{V2_PROBE.rsplit('/', 1)[0]}/"),
        ],
    )
    directory = workdir / "blocklist"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(v1, directory / v1.name)
    return directory, public, v2


def start_edge(
    workdir: Path, origin_port: int, s: SoakSettings, say: Any
) -> tuple[EdgeTarget, Path | None]:
    directory, public, v2 = prepare_versions(workdir, s.version_entries)
    edge = EdgeTarget(
        "edgeproxy-soak",
        blocklist_dir=directory,
        blocklist_key=public,
        extra_args=[
            "--memory-cache-bytes", str(s.memory_bytes),
            "--node-tier-bytes", str(s.node_tier_bytes),
        ],
    )  # fmt: skip
    edge.start(workdir / "edge", origin_port, s.workers)
    if directory is None:
        say("soak: signing unavailable: /blocked/ pushed by the admin API, no full version")
        edge_ops.push(
            edge, [edge_ops.entry("soak-blocked", "prefix", f"http://127.0.0.1{LISTED_PREFIX}")]
        )
    return edge, v2


def run_soak(workdir: Path, origin_port: int, s: SoakSettings, say: Any) -> dict[str, Any]:
    """The whole scenario; returns `summarise`'s dict (with "table")."""
    workdir.mkdir(parents=True, exist_ok=True)
    edge, v2 = start_edge(workdir, origin_port, s, say)
    script = Path(tempfile.mkstemp(suffix=".lua", dir=workdir)[1])
    script.write_text(LUA)
    windows: list[Window] = []
    started = time.perf_counter()
    operator = Operator(edge, s, started, v2)
    try:
        operator.start()
        index = 0
        while (elapsed := time.perf_counter() - started) < s.soak_s - 0.5:
            length = min(s.window_s, s.soak_s - elapsed)
            w = measure_window(edge, script, index, elapsed, length, s.connections, started)
            windows.append(w)
            say(
                f"soak {index + 1}: {w.rps:,.0f} req/s, {w.cpu_us_per_request:,.0f} µs CPU/req, "
                f"p99 {w.p99_us / 1000:.1f} ms, "
                f"RSS {w.rss_bytes / MiB:,.0f} MiB, caches {w.cache_fill_end:.0%} full, "
                f"errors {w.socket_errors}/{w.s5xx + w.unexpected}, listed {w.listed}"
            )
            index += 1
    finally:
        operator.stop_event.set()
        operator.join(timeout=120)
        edge.stop()
    for t, what in operator.log.events:
        at = next((w for w in windows if t < w.end_s), windows[-1] if windows else None)
        if at is not None:
            at.events.append(what)
    summary = summarise(windows, operator.log, s.window_s)
    summary["settings"] = asdict(s)
    summary["table"] = table(summary)
    return summary


def measure_window(
    edge: EdgeTarget,
    script: Path,
    index: int,
    start_s: float,
    length_s: float,
    connections: int,
    started: float,
) -> Window:
    """One wrk run, with the node's CPU over it and its memory and fill at both ends."""
    w = Window(index, start_s, 0.0, cache_fill_start=cache_fill(edge))
    cpu_before = cpu.cpu_seconds(edge.pids)
    data = run_window(edge.base_url, script, length_s, connections)
    w.end_s = time.perf_counter() - started
    _fill(w, data)
    cpu_s = cpu.cpu_seconds(edge.pids) - cpu_before
    w.cpu_us_per_request = cpu_s * 1e6 / w.requests if w.requests else 0.0
    mem = cpu.memory(edge.pids)
    w.rss_bytes, w.pss_bytes, w.anon_bytes = mem.rss, mem.pss, mem.anon
    w.rss_supervisor_bytes = sum(p.rss_bytes for p in cpu.tree(edge.pids) if p.pid in edge.pids)
    w.cache_fill_end = cache_fill(edge)
    return w


def _fill(w: Window, data: dict[str, Any]) -> None:
    w.requests = int(data["requests"])
    duration = data["duration_us"] / 1e6
    w.rps = w.requests / duration if duration else 0.0
    w.p50_us, w.p99_us, w.max_us = float(data["p50"]), float(data["p99"]), float(data["max"])
    for name in ("ok", "partial", "blocked", "s5xx", "unexpected", "socket_errors", "listed"):
        setattr(w, name, int(data[name]))
    w.listed_bytes = int(data["listed_bytes"])
