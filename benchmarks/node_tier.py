"""The node tier's scenarios (issue 11): what `benchmarks.run` needs for `node-hit`, `big-set`
and `restart` beyond its load runs: priming an object set, the edges they start, and the
restart under load.

- node-hit: an edge whose memory tier (L1) holds a few objects (`L1_CONFIG`: 128 KiB for the
  node, 64 KiB per worker, objects up to 64 KiB) behind a node tier that holds the whole set;
  uniform requests over `--node-hit-objects` 4 KiB objects are then answered by the node tier
  (a read is adopted into L1 only when read again soon, `proxy.cache.admission`; the memo
  answers a URL the node tier answered before from the tier by its item key), and one hot
  4 KiB URL by L1. Both on the same edge, alternated round by round.
- big-set: Zipf over `--big-set-objects` objects of 4-100 KiB (`ObjectSet`), the edge with its
  default L1 (256 MiB) and a node tier sized for the set, nginx, Varnish and Traffic Server
  with shared caches sized the same (`cache_bytes`).
- restart: an edge under Zipf load over a primed set is SIGTERMed and started again on the same
  port and node tier; a probe on fresh connections every `PROBE_EVERY_S` times the gap, and one
  pass over the whole set after the restart counts the origin requests it causes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks import edge_ops
from benchmarks.load import Measured, ObjectSet, Workload, drive
from benchmarks.loadgen import run_load_sync
from benchmarks.targets import EdgeTarget

MiB = 1 << 20
KiB = 1 << 10
L1_CONFIG = """[cache]
memory_cache_bytes = 131072
max_object_bytes = 65536

[[sites]]  # a config file needs one; the runner's --origin flag replaces it with the same
name = "default"
hosts = ["*"]
origin = "http://127.0.0.1:{origin_port}"
"""
NODE_HIT_BYTES = 4096
PRIME_CONNECTIONS = 16
PROBE_EVERY_S = 0.01


class OriginCounter(Protocol):
    port: int

    def requests(self) -> int: ...


def cache_bytes_for(objects: ObjectSet) -> int:
    """A shared cache that holds the whole set: its bytes, a quarter more for each target's
    per-object overhead (heads, indexes, block rounding), and 256 MiB."""
    return objects.total_bytes() * 5 // 4 + 256 * MiB


@dataclass
class Primed:
    requests: int  # answers received
    ok: int  # of them 200
    origin_requests: int
    seconds: float


def prime_set(
    base_url: str, objects: ObjectSet, origin: OriginCounter, *, deadline_s: float
) -> Primed:
    """Each object once, most popular first, on `PRIME_CONNECTIONS` connections, stopped at
    `deadline_s` (what is not primed by then is a miss in the first measured runs)."""
    before = origin.requests()
    t0 = time.perf_counter()
    result = run_load_sync(
        base_url, iter(objects.paths()), connections=PRIME_CONNECTIONS, duration_s=deadline_s
    )
    return Primed(
        result.requests,
        result.statuses.get(200, 0),
        origin.requests() - before,
        time.perf_counter() - t0,
    )


def node_hit_objects(count: int) -> ObjectSet:
    return ObjectSet(count, NODE_HIT_BYTES, NODE_HIT_BYTES)


def node_hit_edge(workdir: Path, objects: ObjectSet, origin_port: int) -> EdgeTarget:
    """The edge of node-hit: a few objects of L1 in front of a node tier holding the set."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "edgeproxy-node.toml"
    config.write_text(L1_CONFIG.format(origin_port=origin_port))
    return EdgeTarget(
        "edgeproxy-node", cache_bytes=cache_bytes_for(objects), extra_args=["--config", str(config)]
    )


L1_PATH = f"/obj/{NODE_HIT_BYTES}/l1"  # one hot URL outside the set: always in L1


def node_hit_workloads(objects: ObjectSet) -> dict[str, Workload]:
    return {"L1 hit": Workload("url", L1_PATH), "node-tier hit": Workload("set", objects=objects)}


def node_hit_table(result: dict[str, Any]) -> str:
    lines = [
        "| round | L1 hit µs CPU/req | node-tier hit µs CPU/req | ratio (goal ≤ 1.3) | "
        "node-tier share of the node run |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in result["rounds"]:
        lines.append(
            f"| {r['round']} | {r['l1_us']:.1f} | {r['node_us']:.1f} | {r['ratio']:.2f} | "
            f"{r['node_share']:.1%} |"
        )
    return "\n".join(lines)


# -- restart under load -------------------------------------------------------------------------


@dataclass
class RestartSettings:
    objects: ObjectSet
    workers: int = 2
    connections: int = 64
    load_s: float = 30.0  # the whole load run, the restart inside it
    before_s: float = 5.0  # load before the SIGTERM
    prime_s: float = 600.0  # bound on priming the set
    use_wrk: bool = True


@dataclass
class _Probe:
    """GETs of one primed object on fresh connections: when the edge stopped and resumed
    answering."""

    port: int
    path: str
    log: list[tuple[float, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            self.log.append((t, edge_ops.probe_status(self.port, self.path, 1.0) == 200))
            time.sleep(max(0.0, PROBE_EVERY_S - (time.perf_counter() - t)))

    def gap_after(self, t0: float) -> tuple[float, int]:
        """(seconds from the first failed probe after `t0` to the next answered one, probes
        failed); (0, 0) when none failed."""
        first_fail = next((t for t, ok in self.log if t >= t0 and not ok), None)
        if first_fail is None:
            return 0.0, 0
        back = next((t for t, ok in self.log if t > first_fail and ok), self.log[-1][0])
        failed = sum(1 for t, ok in self.log if first_fail <= t <= back and not ok)
        return back - first_fail, failed


def run_restart(
    workdir: Path, origin: OriginCounter, s: RestartSettings, say: Callable[[str], None]
) -> dict[str, Any]:
    edge = EdgeTarget("edgeproxy-restart", cache_bytes=cache_bytes_for(s.objects))
    try:
        edge.start(workdir, origin.port, s.workers)
        primed = prime_set(edge.base_url, s.objects, origin, deadline_s=s.prime_s)
        say(
            f"restart: primed {primed.ok:,}/{s.objects.count:,} objects in "
            f"{primed.seconds:.1f} s ({primed.origin_requests:,} origin requests)"
        )
        probe = _Probe(edge.port, s.objects.paths()[0])
        loads: list[Measured] = []
        workload = Workload("set", objects=s.objects, pick="zipf")

        def load() -> None:
            loads.append(
                drive(
                    edge.base_url,
                    workload,
                    duration_s=s.load_s,
                    connections=s.connections,
                    use_wrk=s.use_wrk,
                )  # fmt: skip
            )

        threads = [threading.Thread(target=f, daemon=True) for f in (load, probe.run)]
        for t in threads:
            t.start()
        time.sleep(s.before_s)  # the load runs on its own; this only places the SIGTERM in it
        t_term = time.perf_counter()
        edge.stop()
        t_stopped = time.perf_counter()
        edge.start(workdir, origin.port, s.workers, port=edge.port)
        t_ready = time.perf_counter()
        say(f"restart: stopped in {t_stopped - t_term:.2f} s, ready {t_ready - t_term:.2f} s "
            "after the SIGTERM; first pass over the set …")  # fmt: skip
        first = prime_set(edge.base_url, s.objects, origin, deadline_s=s.prime_s)
        threads[0].join(timeout=s.load_s + 120)
        probe.stop.set()
        threads[1].join(timeout=5)
    finally:
        edge.stop()
    gap_s, failed_probes = probe.gap_after(t_term)
    m = loads[0] if loads else None
    result = {
        "objects": s.objects.count,
        "set_bytes": s.objects.total_bytes(),
        "primed": primed.ok,
        "prime_origin_requests": primed.origin_requests,
        "stop_s": round(t_stopped - t_term, 3),
        "ready_s": round(t_ready - t_term, 3),
        "gap_s": round(gap_s, 3),
        "failed_probes": failed_probes,
        "first_pass_answers": first.requests,
        "first_pass_ok": first.ok,
        "first_pass_s": round(first.seconds, 2),
        "first_pass_origin_requests": first.origin_requests,
        "load_requests": m.requests if m else 0,
        "load_errors": m.errors if m else 0,
        "load_bad_status": m.unexpected if m else 0,
        "load_tool": m.tool if m else "",
    }
    say(
        f"restart: first pass {first.ok:,}/{s.objects.count:,} answered 200 with "
        f"{first.origin_requests:,} origin requests; no service for {gap_s:.2f} s "
        f"({failed_probes} probes failed); load errors {result['load_errors']}, "
        f"bad status {result['load_bad_status']}"
    )
    return result


def restart_table(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| measure | value |",
            "|---|---:|",
            f"| objects (set bytes) | {r['objects']:,} ({r['set_bytes'] / MiB:,.0f} MiB) |",
            f"| primed before the restart (origin requests) | {r['primed']:,} "
            f"({r['prime_origin_requests']:,}) |",
            f"| SIGTERM to exit / to ready again | {r['stop_s']:.2f} s / {r['ready_s']:.2f} s |",
            f"| no service (probes every {PROBE_EVERY_S * 1000:g} ms, fresh connections) | "
            f"{r['gap_s']:.2f} s ({r['failed_probes']} failed) |",
            f"| first pass after the restart: 200s of objects | {r['first_pass_ok']:,} of "
            f"{r['objects']:,} in {r['first_pass_s']:.1f} s |",
            f"| **origin requests during the first pass** (goal ≈ 0) | "
            f"**{r['first_pass_origin_requests']:,}** |",
            f"| load across the restart: requests / errors / bad status | "
            f"{r['load_requests']:,} / {r['load_errors']:,} / {r['load_bad_status']:,} |",
        ]
    )


# -- in one process: the memo's node-tier hit against its L1 hit ---------------------------------

MEMO_HEADERS = (
    (b"Date", b"Sun, 06 Dec 2026 23:30:00 GMT"),
    (b"Content-Type", b"application/octet-stream"),
    (b"Cache-Control", b"public, max-age=3600"),
    (b"ETag", b'"4096-1"'),
    (b"Last-Modified", b"Sun, 06 Dec 2026 20:00:00 GMT"),
    (b"Server", b"bench-origin"),
)


def _memo_entry(path: str, body: bytes, now: float, host: str = "127.0.0.1:8080") -> Any:
    import hashlib

    from proxy.cache.entry import Entry
    from proxy.rfc.target import canonical_target

    t = canonical_target(path.encode(), host.encode())
    e = Entry(
        primary=(t.authority, t.raw_path_query),
        variant=(),
        target=t,
        status=200,
        reason=b"OK",
        headers=MEMO_HEADERS,
        body=body,
        sha256=hashlib.sha256(body).digest(),
        request_time=now - 0.001,
        response_time=now,
        corrected_initial_age=0.0,
        lifetime=3600.0,
        stale_while_revalidate_s=0.0,
        stale_if_error_s=0.0,
        must_revalidate=False,
        no_cache=False,
        etag='"4096-1"',
        last_modified=now - 3600,
        date=now,
        vary_fields=(),
        stored_at=now,
    )
    e.render_head(256, b"1.1 edgeproxy")
    return e


async def memo_hit_costs(objects: int, rounds: int, passes: int = 3) -> dict[str, float]:
    """µs of process time per memo hit, best of `rounds`: an L1 hit (one hot entry held by
    memory), a node-tier hit (uniform over `objects` items of `NODE_HIT_BYTES` the node tier
    holds, remembered as `NodeRef`s), each with `deliver.hit_bytes`, as the front's fast
    answer does; and the node-tier hit's parts (read transaction and get, the record opened,
    the `Entry`). Inside a running loop, so touches are batched as in a worker."""
    import random
    import tempfile

    from proxy.cache.memory import MemoryTier
    from proxy.cache.node import TOUCH_ONE_IN, NodeTier, item_key, open_envelope, prepare
    from proxy.cache.shared import entry_of
    from proxy.cache.tiered import TieredCache
    from proxy.metrics import WorkerStats
    from proxy.phases.deliver import hit_bytes
    from proxy.phases.memo import HotMemo

    now = time.time()
    host = b"127.0.0.1:8080"
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node-cache"
        max_bytes = objects * (NODE_HIT_BYTES + 2048) + 64 * MiB
        prepare(path, max_bytes)
        other = NodeTier(path, max_bytes, 65536, WorkerStats([]))
        node = NodeTier(
            path,
            max_bytes,
            65536,
            WorkerStats([]),
            touch_delay_s=0.1,
            touch_interval_s=10.0,
            touch_one_in=TOUCH_ONE_IN,
        )
        cache = TieredCache(MemoryTier(131072 // 2, 65536), node=node)
        memo = HotMemo(65536, lambda: now, cache.touch, node=cache, refused=lambda e: False)
        body = b"x" * NODE_HIT_BYTES
        l1 = _memo_entry("/obj/4096/l1", body, now)
        assert cache.memory.put(l1)
        memo.remember_hit(b"/obj/4096/l1", host, l1)
        targets = [f"/obj/{NODE_HIT_BYTES}/{i}" for i in range(objects)]
        entries = [_memo_entry(t, body, now) for t in targets]
        for e in entries:
            other.put(e)
        other.flush()
        raws = [t.encode() for t in targets]
        for e, raw in zip(entries, raws, strict=True):
            got = cache.get((e.primary, ()), e.target)
            assert got is not None and not got.alive
            memo.remember_hit(raw, host, got)
        cache.doorkeeper.clear()  # as with a set larger than L1's window: never adopted

        def best(fn: Callable[[], None], n: int) -> float:
            fastest = float("inf")
            for _ in range(rounds):
                t0 = time.process_time()
                fn()
                fastest = min(fastest, time.process_time() - t0)
            return fastest / n * 1e6

        take, status = memo.take_hit, b"edgeproxy; hit"

        def l1_hits() -> None:
            for _ in range(objects * passes):
                entry, t = take("GET", b"/obj/4096/l1", host)  # type: ignore[misc]
                hit_bytes("GET", True, "1.1", entry, t, status)

        order = raws[:]
        random.Random(1).shuffle(order)  # uniform draws, as node-hit's load: no locality

        def node_hits() -> None:
            for _ in range(passes):
                for raw in order:
                    entry, t = take("GET", raw, host)  # type: ignore[misc]
                    hit_bytes("GET", True, "1.1", entry, t, status)
                cache.doorkeeper.clear()

        ikeys = [item_key(e.primary, (), ()) for e in entries]
        items = node._db["items"]

        def value(k: bytes, *, buffers: bool = False) -> Any:
            return node._read(lambda txn: txn.get(k, db=items), buffers=buffers)

        def reads() -> None:
            for _ in range(passes):
                for k in ikeys:
                    value(k, buffers=True)

        values = [value(k) for k in ikeys]

        def opens() -> None:
            for _ in range(passes):
                for v in values:
                    open_envelope(v)

        recs = [open_envelope(v) for v in values]

        def builds() -> None:
            for _ in range(passes):
                for rec, e in zip(recs, entries, strict=True):
                    entry_of(rec, e.primary, lambda f: (), verify_body=False, target=e.target)

        prove = getattr(node, "prove_at", None)  # absent before it (a run on older code)
        proofs = [prove(k, e.target) for k, e in zip(ikeys, entries, strict=True)] if prove else []

        def proven_reads() -> None:
            for _ in range(passes):
                for p in proofs:
                    node.get_proven(p)
                    p.entry.body = b""  # as the facade lends it

        n = objects * passes
        out["L1 memo hit + hit_bytes"] = best(l1_hits, n)
        out["node-tier memo hit + hit_bytes"] = best(node_hits, n)
        out["  read txn + get"] = best(reads, n)
        out["  open_envelope (xxh3 + msgspec)"] = best(opens, n)
        out["  entry_of (the Entry)"] = best(builds, n)
        if proofs:
            out["  get_proven (a proven record read again)"] = best(proven_reads, n)
        node.close()
        other.close()
    return out


# -- in one process: a cold miss's store into the node tier --------------------------------------


def _written_bytes() -> int:
    """Bytes this process passed to write calls so far (`wchar`: LMDB's pwrite of a commit's
    dirty pages; none through a writable map)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def _filled_tier(
    max_bytes: int, items: int, body: bytes, host: str, *, prealloc: bool
) -> Iterator[tuple[Any, Callable[[str], Any]]]:
    """A fresh node tier of `max_bytes` in a temporary directory (under `NODE_TIER_BENCH_DIR`
    when set), holding `items` objects of `body` under `host`; with a maker of more such
    entries by path (not stored). Closed and removed at the end. Only `prepare`,
    `NodeTier(...)` and `put`: it runs on older code too."""
    import os
    import tempfile

    from proxy.cache.node import NodeTier, prepare
    from proxy.metrics import WorkerStats

    now = time.time()

    def entry(path: str) -> Any:
        return _memo_entry(path, body, now, host)

    with tempfile.TemporaryDirectory(dir=os.environ.get("NODE_TIER_BENCH_DIR")) as tmp:
        path = Path(tmp) / "node-cache"
        prepare(path, max_bytes, prealloc=prealloc)
        node = NodeTier(path, max_bytes, 1 << 20, WorkerStats([]))
        try:
            for i in range(items):
                node.put(entry(f"/cold/fill-{i}"))
            yield node, entry
        finally:
            node.close()


def store_costs(
    items: int,
    body_bytes: int,
    stores: int,
    rounds: int,
    *,
    prealloc: bool,
    host: str,
    evicting: bool = False,
) -> dict[str, float]:
    """A cold miss's share of the node tier: µs of process time per store with its commit
    (one store per transaction, as a worker's loop turn under cold misses writes them),
    into a tier that already holds `items` objects of `body_bytes` under `host`, best of
    `rounds` fresh tiers; and the KiB written per commit. Only `prepare`, `NodeTier.put`
    (which, without a running loop, commits at once) and `flush`: it runs on older code too
    (`PYTHONPATH` at another checkout, this file run by its path). With `evicting` the tier
    holds half of what is put in it, so the stores timed evict as a full tier's do (and
    reuse freed pages: no first write of a page of the file); the major page faults per
    store say how many of a fresh file's pages a store wrote first through the map."""
    import os
    import resource

    body = os.urandom(body_bytes)
    max_bytes = (items + stores) * (body_bytes + 2048) + 64 * MiB
    if evicting:
        max_bytes = items * (body_bytes + 1024) // 2 + MiB
    best_us, best_kib, best_faults = float("inf"), float("inf"), 0.0
    for r in range(rounds):
        with _filled_tier(max_bytes, items, body, host, prealloc=prealloc) as (node, entry):
            batch = [entry(f"/cold/r{r}-{i}") for i in range(stores)]
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
            w0, t0 = _written_bytes(), time.process_time()
            for e in batch:
                node.put(e)
            t1, w1 = time.process_time(), _written_bytes()
            f1 = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        if (t1 - t0) / stores * 1e6 < best_us:
            best_faults = (f1 - f0) / stores
        best_us = min(best_us, (t1 - t0) / stores * 1e6)
        best_kib = min(best_kib, (w1 - w0) / stores / 1024)
    return {
        "store + commit (us)": best_us,
        "written per commit (KiB)": best_kib,
        "major faults per store": best_faults,
    }


def cold_costs(
    items: int, body_bytes: int, misses: int, rounds: int, *, prealloc: bool, host: str
) -> dict[str, float]:
    """A cold miss's whole share of the node tier, as a worker walks it (`Fetcher`): the
    lookup's `vary_fields` (nothing stored), the lease, the read after it
    (`_stored_meanwhile`), the store committed alone and the lease given back after the
    commit; µs of process time per miss for each part and in all, best of `rounds` fresh
    tiers that already hold `items` objects. Runs on older code too (public methods only)."""
    import os

    body = os.urandom(body_bytes)
    max_bytes = (items + misses) * (body_bytes + 2048) + 64 * MiB
    parts = ("lookup: vary_fields", "lease", "after the lease: vary_fields", "store + commit")
    parts += ("release (unlock)",)
    best = dict.fromkeys(("all", *parts), float("inf"))
    clock = time.process_time
    for r in range(rounds):
        with _filled_tier(max_bytes, items, body, host, prealloc=prealloc) as (node, entry):
            batch = [entry(f"/cold/r{r}-{i}") for i in range(misses)]
            spent = dict.fromkeys(parts, 0.0)
            t_all = clock()
            for e in batch:
                t0 = clock()
                node.vary_fields(e.primary)
                t1 = clock()
                node.lease(e.primary)
                t2 = clock()
                node.vary_fields(e.primary)
                t3 = clock()
                node.put(e)  # without a running loop: committed at once
                t4 = clock()
                node.release(e.primary)  # nothing left to commit: the unlock
                t5 = clock()
                marks = (t0, t1, t2, t3, t4, t5)
                for n, name in enumerate(parts):
                    spent[name] += marks[n + 1] - marks[n]
            total = clock() - t_all
        best["all"] = min(best["all"], total / misses * 1e6)
        for name in parts:
            best[name] = min(best[name], spent[name] / misses * 1e6)
    return best


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="In one process: the memo's node-tier hit against its L1 hit (µs CPU); "
        "with --stores, a cold miss's store and commit into the tier instead."
    )
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stores", type=int, default=0, help="stores timed per round")
    parser.add_argument("--cold", type=int, default=0, help="cold misses timed per round")
    parser.add_argument("--store-bytes", type=int, default=1024, help="body (cold-miss: 1 KiB)")
    parser.add_argument("--host", default="127.0.0.1:8080", help="the stored objects' host")
    parser.add_argument("--preallocate", action="store_true", help="cache.node_tier_preallocate")
    parser.add_argument("--evicting", action="store_true", help="--stores into a full tier")
    args = parser.parse_args()
    if args.cold:
        cold = cold_costs(
            args.objects,
            args.store_bytes,
            args.cold,
            args.rounds,
            prealloc=args.preallocate,
            host=args.host,
        )
        for name, value in cold.items():
            print(f"{name:40s} {value:7.2f} µs")
        return
    if args.stores:
        costs = store_costs(
            args.objects,
            args.store_bytes,
            args.stores,
            args.rounds,
            prealloc=args.preallocate,
            host=args.host,
            evicting=args.evicting,
        )
        for name, value in costs.items():
            print(f"{name:40s} {value:7.2f}")
        return
    costs = asyncio.run(memo_hit_costs(args.objects, args.rounds))
    for name, us in costs.items():
        print(f"{name:40s} {us:6.2f} µs")
    l1 = costs["L1 memo hit + hit_bytes"]
    print(f"{'ratio node-tier / L1':40s} {costs['node-tier memo hit + hit_bytes'] / l1:6.2f}")


if __name__ == "__main__":
    main()
