"""The public HTTP caching test suite (github.com/http-tests/cache-tests, cache-tests.fyi) run
against an edge node and scored the way the site scores it.

    git clone https://github.com/http-tests/cache-tests ../cache-tests   # outside this repo
    (cd ../cache-tests && npm install)
    python -m benchmarks.cache_tests --suite ../cache-tests [--workers 1] [--id TEST-ID]

Starts the suite's origin server on 127.0.0.1 (its own code, with `cache_tests_loopback.mjs`
preloaded so it cannot listen on other interfaces), an edge node in front of it, runs the
suite's CLI against the edge, and scores the raw results with the suite's `determineTestResult`
(`cache_tests_score.mjs`), as well as the peers' published results shipped in the suite's
`results/*.json`. Prints the counts per category, every test not passed, and the tests a peer
passes that the edge does not; writes `benchmarks/results/cache-tests-<UTC time>.json`.

One worker by default: each worker keeps its own memory tier, so with more a later request of a
test may reach a worker that never saw the first, which measures connection placement rather
than HTTP caching. `--id` runs one test and prints the suite's request/response dump instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.targets import EdgeTarget, Target, http_status

HERE = Path(__file__).parent
REPO = HERE.parent
RESULTS = HERE / "results"
LOOPBACK = HERE / "cache_tests_loopback.mjs"
SCORE = HERE / "cache_tests_score.mjs"
PEERS = ("nginx", "squid", "trafficserver", "varnish")
EDGE = "edgeproxy"

# The suite's result categories (keys of resultTypes in test-engine/lib/results.mjs), in the
# order the report shows them.
CATEGORIES = (
    "pass", "fail", "optional_fail", "yes", "no",
    "setup_fail", "harness_fail", "dependency_fail", "retry", "untested",
)  # fmt: skip
PASSED = frozenset({"pass", "yes"})  # the suite's passTypes: what a dependency must reach
# Not a failure: a check answered "no" is information, and browser-only tests are not run.
NOT_FAILED = PASSED | {"no", "untested"}
KIND_ORDER = {"required": 0, "optimal": 1, "check": 2}


@dataclass(frozen=True, slots=True)
class SuiteTest:
    id: str
    name: str
    suite: str
    kind: str  # required, optimal or check
    depends_on: tuple[str, ...] = ()


def tally(categories: Mapping[str, str]) -> dict[str, int]:
    """How many tests fell in each of the suite's categories, every category present."""
    counts = dict.fromkeys(CATEGORIES, 0)
    for category in categories.values():
        counts[category] = counts.get(category, 0) + 1
    return counts


def not_passed(tests: Sequence[SuiteTest], ours: Mapping[str, str]) -> list[SuiteTest]:
    """Tests that failed in any way (retry, setup and dependency results included), required
    first, then optimal, then checks; within a kind, in the suite's order."""
    failed = [t for t in tests if ours.get(t.id, "untested") not in NOT_FAILED]
    return sorted(failed, key=lambda t: KIND_ORDER.get(t.kind, 3))


def peer_wins(
    tests: Sequence[SuiteTest], ours: Mapping[str, str], peers: Mapping[str, Mapping[str, str]]
) -> dict[str, list[str]]:
    """Test id -> the peers that pass it, for tests we do not pass (a check a peer answers
    "yes" and we answer "no" counts: the peer showed the behaviour the check looks for)."""
    wins: dict[str, list[str]] = {}
    for t in tests:
        if ours.get(t.id, "untested") in PASSED | {"untested"}:
            continue
        passing = [p for p, results in peers.items() if results.get(t.id) in PASSED]
        if passing:
            wins[t.id] = passing
    return wins


def detail(raw: Any) -> str:
    """The suite's raw result for one test as one line: `true`, or [error name, message]."""
    if raw is True:
        return "passed"
    if isinstance(raw, list) and len(raw) == 2:
        return f"{raw[0]}: {raw[1]}"
    return json.dumps(raw)


class SuiteOrigin(Target):
    """The suite's origin server (test-engine/server/server.mjs), loopback only, run in an
    empty directory so its static file handler has nothing to serve."""

    kind = "cache-tests-origin"
    needs = ("node",)
    in_workdir = True

    def __init__(self, suite: Path) -> None:
        super().__init__("cache-tests origin")
        self.suite = suite

    def command(self, origin_port: int, workers: int) -> tuple[list[str], dict[str, str]]:
        argv = [
            "node", "--import", LOOPBACK.as_uri(),
            str(self.suite / "test-engine" / "server" / "server.mjs"),
        ]  # fmt: skip
        env = {
            "PATH": _env_path(),
            "npm_config_protocol": "http",
            "npm_config_port": str(self.port),
            "npm_config_pidfile": str(self.workdir / "origin.pid"),
        }
        return argv, env

    def is_ready(self) -> bool:
        return http_status(self.base_url + "/state/ready", timeout_s=0.5) != 0  # 404: up


def _env_path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")


def run_cli(suite: Path, base_url: str, test_id: str, timeout_s: float) -> tuple[str, str]:
    """The suite's CLI against `base_url`: (stdout, stderr). Without an id, stdout is the raw
    results as JSON; with one, the request/response dump of that test."""
    env = {
        "PATH": _env_path(),
        "npm_config_base": base_url,
        "npm_config_id": test_id,
        "npm_package_config_id": test_id,  # the CLI falls back to it when the first is empty
    }
    argv = ["node", "--no-warnings", str(suite / "test-engine" / "cli.mjs")]
    done = subprocess.run(
        argv, cwd=suite, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"cache-tests CLI exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout, done.stderr


def score(
    suite: Path, raw_files: Mapping[str, Path]
) -> tuple[list[SuiteTest], dict[str, dict[str, str]]]:
    """Every test of the suite, and per label the category the suite's determineTestResult
    gives each test in that label's raw results."""
    argv = ["node", str(SCORE), str(suite)] + [
        f"{label}={path}" for label, path in raw_files.items()
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scoring failed:\n{done.stderr[-4000:]}")
    scored = json.loads(done.stdout)
    tests = [
        SuiteTest(t["id"], t["name"], t["suite"], t["kind"], tuple(t["depends_on"]))
        for t in scored["tests"]
    ]
    return tests, scored["results"]


def with_site(settings: Path, origin_url: str, work: Path) -> Path:
    """`--config` holds settings only; a config file must name a site, and the suite's origin
    port is known only now: append one that takes every Host (`--origin` replaces it anyway)."""
    config = work / "edge.toml"
    site = f'\n[[sites]]\nname = "cache-tests"\nhosts = ["*"]\norigin = "{origin_url}"\n'
    config.write_text(settings.read_text() + site)
    return config


def git_commit(path: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def format_report(
    tests: Sequence[SuiteTest],
    results: Mapping[str, Mapping[str, str]],
    raw: Mapping[str, Any],
    header: str,
) -> str:
    ours = results[EDGE]
    peers = {label: r for label, r in results.items() if label != EDGE}
    by_id = {t.id: t for t in tests}
    lines = [header, ""]
    width = max(len(label) for label in results)
    lines.append(" " * width + "".join(f"  {c}" for c in CATEGORIES))
    for label, categories in results.items():
        counts = tally(categories)
        lines.append(
            f"{label:<{width}}" + "".join(f"{counts[c]:>{len(c) + 2}}" for c in CATEGORIES)
        )

    failed = not_passed(tests, ours)
    lines += ["", f"Not passed by {EDGE} ({len(failed)}; required first):"]
    for t in failed:
        lines.append(f"  {t.kind:<8} {ours[t.id]:<15} {t.id}")
        lines.append(f"  {'':<8} {'':<15} {t.name}")
        lines.append(f"  {'':<8} {'':<15} ({detail(raw.get(t.id))})")

    wins = peer_wins(tests, ours, peers)
    kind_first = sorted(wins.items(), key=lambda w: KIND_ORDER[by_id[w[0]].kind])
    failed_here = [(i, p) for i, p in kind_first if ours[i] != "no"]
    answered_no = [(i, p) for i, p in kind_first if ours[i] == "no"]
    lines += ["", f"Passed by a peer, not passed by {EDGE} ({len(failed_here)}):"]
    for test_id, passing in failed_here:
        t = by_id[test_id]
        lines.append(f"  {t.kind:<8} {ours[test_id]:<15} {test_id}  [{', '.join(passing)}]")
    lines += ["", f"Checks a peer answers yes and {EDGE} no (behaviour, not failures) "
              f"({len(answered_no)}):"]  # fmt: skip
    for test_id, passing in answered_no:
        lines.append(f"  {test_id}  [{', '.join(passing)}]")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cache_tests",
        description="Run the public HTTP caching test suite (cache-tests.fyi) against the edge.",
    )
    p.add_argument(
        "--suite",
        type=Path,
        required=True,
        help="a checkout of http-tests/cache-tests, npm-installed",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="edge workers (default 1; see the module doc)"
    )
    p.add_argument(
        "--peers", default=",".join(PEERS), help="result files of the suite to compare with"
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML file of edge settings, no [[sites]] (default: the embedded ones)",
    )
    p.add_argument("--id", default="", help="run this one test and print the suite's dump of it")
    p.add_argument("--timeout-s", type=float, default=600.0, help="bound on the whole suite run")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON results file (default benchmarks/results/…)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suite: Path = args.suite.resolve()
    if shutil.which("node") is None:
        print(
            "node is not installed (the suite is JavaScript; Node.js 20 or later)", file=sys.stderr
        )
        return 2
    if not (suite / "test-engine" / "cli.mjs").exists() or not (suite / "node_modules").exists():
        print(f"{suite} is not an npm-installed cache-tests checkout: git clone "
              "https://github.com/http-tests/cache-tests there, then `npm install` in it",
              file=sys.stderr)  # fmt: skip
        return 2
    if not EdgeTarget.available():
        print("`edgeproxy serve --help` failed: install the project (make) first", file=sys.stderr)
        return 2
    peers = [p for p in args.peers.split(",") if p]
    missing = [p for p in peers if not (suite / "results" / f"{p}.json").exists()]
    if missing:
        print(f"no published results for {missing} in {suite / 'results'}", file=sys.stderr)
        return 2

    started = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="edgeproxy-cache-tests-"))
    origin, edge = SuiteOrigin(suite), EdgeTarget()
    try:
        origin.start(work / "origin", 0, 0)
        if args.config:
            edge.extra_args = ["--config", str(with_site(args.config, origin.base_url, work))]
        edge.start(work / "edge", origin.port, args.workers)
        stdout, stderr = run_cli(suite, edge.base_url, args.id, args.timeout_s)
    finally:
        edge.stop()
        origin.stop()
    if args.id:  # the client's dump, then the origin's view of the same requests
        print(stdout + stderr)
        print("=== the origin's log\n" + (origin.workdir / "server.log").read_text())
        return 0

    raw = json.loads(stdout)
    raw_file = work / "edgeproxy.json"
    raw_file.write_text(json.dumps(raw))
    files = {EDGE: raw_file} | {p: suite / "results" / f"{p}.json" for p in peers}
    tests, results = score(suite, files)
    suite_commit, edge_commit = git_commit(suite), git_commit(REPO)
    header = (
        f"cache-tests {suite_commit} ({len(tests)} tests), {started:%Y-%m-%d %H:%M} UTC, "
        f"against {EDGE} {edge_commit} ({args.workers} worker{'s' * (args.workers != 1)}"
        f"{', config ' + str(args.config) if args.config else ''}); "
        f"peers from the suite's results/*.json"
    )
    print(format_report(tests, results, raw, header))

    ours = results[EDGE]
    out = args.out or RESULTS / f"cache-tests-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": started.isoformat(timespec="seconds"),
        "suite_commit": suite_commit,
        "edge_commit": edge_commit,
        "workers": args.workers,
        "config": str(args.config) if args.config else None,
        "tests": len(tests),
        "counts": {label: tally(categories) for label, categories in results.items()},
        "not_passed": [
            {"id": t.id, "name": t.name, "kind": t.kind, "result": ours[t.id],
             "detail": detail(raw.get(t.id))}
            for t in not_passed(tests, ours)
        ],
        "peer_wins": peer_wins(tests, ours, {p: results[p] for p in peers}),
        "categories": results,
        "raw": raw,
        "cli_stderr": stderr,
    }, indent=1))  # fmt: skip
    print(f"\nresults: {out}   (work files: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
