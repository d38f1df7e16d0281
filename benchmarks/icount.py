"""Instructions per request in process, counted by valgrind: a measure of this project's code
that a noisy machine does not move.

    .venv/bin/python -m benchmarks.icount [--scenarios pass,cold,coldnode,noderead,hit,loggedhit] [--requests 2000]

Each scenario runs in-process harnesses under `valgrind --tool=cachegrind --cache-sim=no`
twice, with `--base` (default 1,000) and `--base` + `--requests` requests, and reports the
difference in user-space instructions divided by `--requests`: start-up, imports and warm-up
cancel out. `pass`, `cold`, `coldnode` and `noderead` are `benchmarks.passpath`'s pass-through,
cold miss, cold miss with a node tier and a worker's first read of what another stored there
(front, pipeline, origin client, fake transports; the node tier's LMDB in a temporary
directory), `hit` is `benchmarks.hitpath`'s hot hit and `loggedhit` the same with every hit
in the JSON access log (formatted and written to /dev/null every 1,000 hits).

Why: in-process timings (passpath, hitpath) vary 20-80% on this VM between runs minutes apart
(other tenants; it exposes no hardware counters to `perf stat`), which hides changes of a few
per cent. Instruction counts repeat to ~0.2%, so two builds can be compared one after the
other. They are not time: a cache miss or a syscall costs more than an instruction, and the
kernel's share (the sockets) is not in them at all. Use them to compare builds of the same
path; use `make bench` for what a server spends. Needs valgrind (`apt-get install valgrind`);
about 15 s a scenario.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("pass", "cold", "coldnode", "noderead", "hit", "loggedhit")
_REFS = re.compile(rb"I\s+refs:\s+([\d,]+)")


def _child(scenario: str, requests: int, stored: int) -> None:
    """Run `requests` requests of `scenario` once (under valgrind, from `count`)."""
    if scenario in ("hit", "loggedhit"):
        from benchmarks import hitpath

        hitpath.per_hit_s(requests, 1, access_log=scenario == "loggedhit")
    else:
        from benchmarks import passpath

        # noderead's objects are stored first: as many for either count, so that their
        # stores cancel out and the difference is the reads'.
        passpath.per_request_s(scenario, requests, 1, stored=stored)


def count(scenario: str, requests: int, stored: int = 0) -> int:
    """User-space instructions of a child process that runs `requests` of `scenario`."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    argv = [
        valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.icount", "--child", scenario, str(requests), str(stored),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=900, check=False)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"{scenario}: valgrind run failed ({done.returncode}):\n{tail}")
    return int(found.group(1).replace(b",", b""))


def per_request(scenario: str, base: int, requests: int) -> float:
    stored = base + requests + 3  # noderead: the same stores in both runs
    return (count(scenario, base + requests, stored) - count(scenario, base, stored)) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--base", type=int, default=1000, help="requests of the shorter run")
    parser.add_argument("--requests", type=int, default=2000, help="requests counted")
    parser.add_argument(
        "--child", nargs=3, metavar=("SCENARIO", "N", "STORED"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    for scenario in args.scenarios.split(","):
        if scenario not in SCENARIOS:
            raise SystemExit(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
        n = per_request(scenario, args.base, args.requests)
        print(f"{scenario}: {n:,.0f} instructions per request (valgrind, in process)", flush=True)


if __name__ == "__main__":
    main()
