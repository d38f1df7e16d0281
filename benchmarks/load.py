"""One load run: wrk when installed (precise), else the bundled Python generator (less precise).

A run is described by a `Workload` (one URL, a Zipf sequence, endlessly distinct cold paths, a
spread over a blocked prefix, or draws from an `ObjectSet`) and returns a `Measured` with req/s,
latency percentiles, errors and the count of answers that were not the status the scenario
expects.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.loadgen import run_load_sync
from benchmarks.tail import process_wait_s

ZIPF_URLS = 10_000
ZIPF_SEQUENCE = 100_000
ZIPF_S = 1.0
ZIPF_SEED = 20_240_611


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


WRK_INSTALL_HINT = (
    "wrk is not installed: falling back to the bundled Python load generator (LESS PRECISE).\n"
    "  Install it with:  sudo apt-get install -y wrk   (Debian/Ubuntu)  or  brew install wrk"
)


SET_SEED = 20_261_206


@dataclass(frozen=True)
class ObjectSet:
    """`count` distinct cacheable objects, `/obj/<bytes>/<rank>` on the bundled origin, their
    sizes drawn log-uniformly between `min_bytes` and `max_bytes` (a fixed seed: every target
    and every run sees the same set). Log-uniform: mostly small objects and a long tail, as a
    web cache holds (4-100 KiB averages ~30 KiB where a uniform draw would average 52)."""

    count: int
    min_bytes: int
    max_bytes: int

    def sizes(self) -> list[int]:
        return list(_sizes(self.count, self.min_bytes, self.max_bytes))

    def paths(self) -> list[str]:
        """In rank order: rank 0 is the most popular under a Zipf draw."""
        return [f"/obj/{n}/{i}" for i, n in enumerate(_sizes(*self._key))]

    def total_bytes(self) -> int:
        return sum(_sizes(*self._key))

    @property
    def _key(self) -> tuple[int, int, int]:
        return self.count, self.min_bytes, self.max_bytes


@functools.cache
def _sizes(count: int, min_bytes: int, max_bytes: int) -> tuple[int, ...]:
    rng = random.Random(SET_SEED)
    lo, hi = math.log(min_bytes), math.log(max_bytes)
    return tuple(round(math.exp(rng.uniform(lo, hi))) for _ in range(count))


@dataclass(frozen=True)
class Workload:
    kind: str  # "url" | "zipf" | "cold" | "blocked" | "set"
    path: str = "/"
    expect_status: int = 200
    nonce: str = ""  # distinguishes cold paths between runs
    objects: ObjectSet | None = None  # "set": draws from these objects …
    pick: str = "uniform"  # … "uniform" or "zipf" (ZIPF_S over their ranks)


@dataclass
class Measured:
    requests: int
    duration_s: float
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    errors: int  # socket errors and timeouts
    unexpected: int  # answers whose status was not the expected one
    tool: str
    # wrk's own run-queue wait (ms per second of its run): the client's share of the tail
    client_wait_ms_per_s: float = 0.0


def zipf_indices() -> list[int]:
    """A fixed sequence of ZIPF_SEQUENCE draws over ZIPF_URLS ranks, P(rank k) ~ 1/k^s."""
    weights = [1.0 / (k**ZIPF_S) for k in range(1, ZIPF_URLS + 1)]
    rng = random.Random(ZIPF_SEED)
    return rng.choices(range(ZIPF_URLS), weights=weights, k=ZIPF_SEQUENCE)


def zipf_paths() -> list[str]:
    return [f"/zipf/{i}" for i in zipf_indices()]


_DONE_LUA = r"""
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function done(summary, latency, requests)
  local unexpected = 0
  for _, t in ipairs(threads) do unexpected = unexpected + (t:get("unexpected") or 0) end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"unexpected":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    unexpected))
end
"""


def _lua(workload: Workload) -> str:
    if workload.kind == "url":
        return _DONE_LUA
    if workload.kind == "zipf":
        ranks = ",".join(str(i) for i in zipf_indices())
        return _DONE_LUA + (
            "local seq = {" + ranks + "}\n"
            "local reqs = {}\n"
            "local pos = 0\n"
            "function init(args)\n"
            f"  for i = 0, {ZIPF_URLS - 1} do reqs[i] = wrk.format('GET', '/zipf/' .. i) end\n"
            "  pos = (tid - 1) * 7919\n"
            "end\n"
            "function request()\n"
            "  pos = pos + 1\n"
            "  if pos > #seq then pos = 1 end\n"
            "  return reqs[seq[pos]]\n"
            "end\n"
        )
    if workload.kind == "set":
        return _DONE_LUA + _set_lua(workload)
    if workload.kind == "cold":
        return _DONE_LUA + (
            "local n = 0\n"
            "function request()\n"
            "  n = n + 1\n"
            f"  return wrk.format('GET', '/cold/{workload.nonce}-' .. tid .. '-' .. n)\n"
            "end\n"
        )
    if workload.kind == "blocked":
        return _DONE_LUA + (
            "local n = 0\n"
            "unexpected = 0\n"
            "function request()\n"
            "  n = n + 1\n"
            "  return wrk.format('GET', '/blocked/item-' .. (n % 1000))\n"
            "end\n"
            "function response(status, headers, body)\n"
            f"  if status ~= {workload.expect_status} then unexpected = unexpected + 1 end\n"
            "end\n"
        )
    raise ValueError(workload.kind)


def _set_lua(workload: Workload) -> str:
    """Draws from an object set inside wrk: uniform, or Zipf by a binary search of the ranks'
    cumulative weights (built once per thread: no 100k-entry draw sequence in the script)."""
    objects = workload.objects
    assert objects is not None
    return (
        "local sizes = {" + ",".join(map(str, objects.sizes())) + "}\n"
        "local reqs, cdf, total = {}, {}, 0\n"
        "function init(args)\n"
        "  for i = 1, #sizes do\n"
        "    reqs[i] = wrk.format('GET', '/obj/' .. sizes[i] .. '/' .. (i - 1))\n"
        f"    total = total + 1 / i ^ {ZIPF_S}\n"
        "    cdf[i] = total\n"
        "  end\n"
        f"  math.randomseed({SET_SEED} + tid)\n"
        "end\n"
        "function request()\n"
        + (
            "  local u, lo, hi = math.random() * total, 1, #cdf\n"
            "  while lo < hi do\n"
            "    local mid = math.floor((lo + hi) / 2)\n"
            "    if cdf[mid] < u then lo = mid + 1 else hi = mid end\n"
            "  end\n"
            "  return reqs[lo]\n"
            if workload.pick == "zipf"
            else "  return reqs[math.random(#reqs)]\n"
        )
        + "end\n"
    )


def set_draws(objects: ObjectSet, pick: str, n: int = ZIPF_SEQUENCE) -> list[str]:
    """`n` paths drawn from `objects` (fixed seed), for the Python generator."""
    paths = objects.paths()
    rng = random.Random(SET_SEED)
    if pick == "zipf":
        weights = [1.0 / (k**ZIPF_S) for k in range(1, objects.count + 1)]
        return rng.choices(paths, weights=weights, k=n)
    return rng.choices(paths, k=n)


_client_cpus: tuple[int, ...] = ()
_client_batch = False


def pin_client(cpus: tuple[int, ...]) -> None:
    """Run wrk on these CPUs from now on (empty: wherever the kernel puts it)."""
    global _client_cpus
    _client_cpus = cpus


def batch_client(on: bool) -> None:
    """Run wrk under SCHED_BATCH from now on (Linux, `chrt -b`): a batch task never preempts
    another on waking, only at the scheduler's tick. On a machine whose cores the client
    shares with the server, each answer the server writes wakes wrk, which then takes the
    server's core from it in mid-iteration; a client on another machine (an edge's real
    clients) never does."""
    global _client_batch
    _client_batch = on


def client_argv(argv: list[str], batch: bool | None = None) -> list[str]:
    """`argv` as the client is run: on `pin_client`'s CPUs, and under SCHED_BATCH when
    `batch` says so (None: `batch_client`'s choice)."""
    if _client_cpus:
        argv = ["taskset", "-c", ",".join(map(str, _client_cpus)), *argv]
    if _client_batch if batch is None else batch:
        argv = ["chrt", "--batch", "0", *argv]
    return argv


def run_wrk(
    base_url: str,
    workload: Workload,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    batch: bool | None = None,
) -> Measured:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(workload))
    try:
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "5s",
            "-s",
            script.name,
            base_url + workload.path,
        ]
        out, client_wait = _run_sampling_wait(client_argv(argv, batch), timeout_s=duration_s + 60)
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out[-1000:]}")
    data = json.loads(line[len("WRKJSON ") :])
    duration = data["duration_us"] / 1e6
    errors = data["connect"] + data["read"] + data["write"] + data["timeout"]
    unexpected = data["unexpected"] if workload.kind == "blocked" else data["status"]
    return Measured(
        requests=data["requests"],
        duration_s=duration,
        rps=data["requests"] / duration if duration else 0.0,
        p50_us=float(data["p50"]),
        p90_us=float(data["p90"]),
        p99_us=float(data["p99"]),
        max_us=float(data["max"]),
        errors=errors,
        unexpected=unexpected,
        tool="wrk",
        client_wait_ms_per_s=client_wait,
    )


def _run_sampling_wait(argv: list[str], timeout_s: float) -> tuple[str, float]:
    """Run `argv` to its end; its stdout, and its run-queue wait in ms per second of its run
    (read from /proc every 0.2 s while it runs: the last fraction of a second is not seen)."""
    started = time.perf_counter()
    wait_s = elapsed = 0.0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        while True:
            try:
                stdout, stderr = p.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                now = process_wait_s(p.pid)
                if now > 0:
                    wait_s, elapsed = now, time.perf_counter() - started
                if time.perf_counter() - started > timeout_s:
                    p.kill()
                    raise
    return stdout + stderr, wait_s * 1000 / elapsed if elapsed else 0.0


def _paths(workload: Workload) -> list[str] | Iterator[str] | None:
    if workload.kind == "url":
        return None
    if workload.kind == "zipf":
        return zipf_paths()
    if workload.kind == "set":
        assert workload.objects is not None
        return set_draws(workload.objects, workload.pick)
    if workload.kind == "cold":
        return (f"/cold/{workload.nonce}-py-{n}" for n in itertools.count())
    return [f"/blocked/item-{n}" for n in range(1000)]


def run_python(
    base_url: str, workload: Workload, *, duration_s: float, connections: int
) -> Measured:
    result = run_load_sync(
        base_url + workload.path,
        _paths(workload),
        connections=connections,
        duration_s=duration_s,
    )
    unexpected = sum(n for status, n in result.statuses.items() if status != workload.expect_status)
    return Measured(
        requests=result.requests,
        duration_s=result.duration_s,
        rps=result.rps,
        p50_us=result.percentile_us(50),
        p90_us=result.percentile_us(90),
        p99_us=result.percentile_us(99),
        max_us=max(result.latencies_us, default=0.0),
        errors=result.errors,
        unexpected=unexpected,
        tool="benchmarks.loadgen (less precise)",
    )


def drive(
    base_url: str,
    workload: Workload,
    *,
    duration_s: float,
    connections: int,
    use_wrk: bool,
    batch: bool | None = None,
) -> Measured:
    """One run of `workload`; `batch` (wrk only): under SCHED_BATCH or not, None for the
    session's choice (`batch_client`)."""
    if use_wrk:
        return run_wrk(
            base_url, workload, duration_s=duration_s, connections=connections, batch=batch
        )
    return run_python(base_url, workload, duration_s=duration_s, connections=connections)
