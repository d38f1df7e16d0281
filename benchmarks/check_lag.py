"""A serving loop's lag while its worker checks a new compiled table (issue 12).

    PYTHONPATH=. python -m benchmarks.check_lag --size 10000000 --rounds 3

A worker checks every table it is told to map (its checksum: every byte) before it enforces
it. This runs an asyncio loop that ticks every millisecond with a little work per tick (a
stand-in for serving) while a table of `--size` entries (`benchmarks.blocklists`' signed
10M-entry table: 2.9 GB) is checked, with `--busy` processes spinning so the cores are
saturated as under a hit load, and prints the loop's lag (how late each tick ran) for each
way of checking:

- `thread`: `in_low_priority_thread(table.verify)`, a thread of the worker at nice +10, what
  workers did before `blocklist.check_in_child_min_bytes`;
- `child`: `tablecheck.check_in_child`, a process of its own at nice +10.

Each way runs `--rounds` times, alternating. What it shows is the loop's wait for the GIL on
top of the scheduler's own latency (both ways share that).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.blocklists import shipped_file
from proxy.blocklist import shipped
from proxy.blocklist.mapped import VERIFY_NICE, in_low_priority_thread
from proxy.blocklist.table import MappedTable
from proxy.blocklist.tablecheck import check_in_child

TICK_S = 0.001


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(time.perf_counter() - t - TICK_S)
        sum(range(2000))  # a request's worth of work per tick


async def one(way: str, path: Path) -> dict[str, float]:
    stop, lags = asyncio.Event(), []
    ticker = asyncio.ensure_future(_ticker(lags, stop))
    await asyncio.sleep(0.2)
    lags.clear()
    t0 = time.perf_counter()
    table = MappedTable(path)
    if way == "thread":
        await in_low_priority_thread(table.verify, VERIFY_NICE)
    else:
        await check_in_child(table, VERIFY_NICE)
    took = time.perf_counter() - t0
    stop.set()
    await ticker
    lags.sort()
    n = len(lags)
    return {
        "took_s": took,
        "ticks": n,
        "p50_ms": lags[n // 2] * 1e3,
        "p99_ms": lags[int(n * 0.99)] * 1e3,
        "p999_ms": lags[int(n * 0.999)] * 1e3,
        "max_ms": lags[-1] * 1e3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=10_000_000, help="entries of the table")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, default=2, help="spinning processes beside the loop")
    ap.add_argument("--bound-s", type=float, default=600.0, help="the spinners stop after this")
    args = ap.parse_args()
    path = shipped.companions(shipped_file(args.size))[0]
    print(f"table: {path} ({path.stat().st_size / 2**30:.2f} GiB), {args.busy} busy processes")
    spin = f"import time\nt = time.time() + {args.bound_s}\nwhile time.time() < t: pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(args.busy)]
    results: dict[str, list[dict[str, float]]] = {"thread": [], "child": []}
    try:
        for r in range(args.rounds):
            for way in ("thread", "child") if r % 2 == 0 else ("child", "thread"):
                got = asyncio.run(one(way, path))
                results[way].append(got)
                print(f"round {r + 1} {way:6s} " + "  ".join(f"{k} {v:.2f}" for k, v in got.items()),
                      flush=True)  # fmt: skip
    finally:
        for b in busy:
            b.kill()
            b.wait()
    for way, runs in results.items():
        med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        print(f"median {way:6s} " + "  ".join(f"{k} {v:.2f}" for k, v in med.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
