"""Blocklist at scale (issue 12): memory per worker, compile and load times, lookup cost,
for the dict snapshot each worker builds (msgpack) and the mapped table every worker shares;
and, with --supervisor, the supervisor's own memory as it loads versions.

    PYTHONPATH=. python -m benchmarks.blocklist_scale --sizes 10 1000000 10000000 --workers 2
    PYTHONPATH=. python -m benchmarks.blocklist_scale --supervisor --sizes 100000 1000000
    PYTHONPATH=. python -m benchmarks.blocklist_scale --loader --sizes 100000 1000000 10000000
    PYTHONPATH=. python -m benchmarks.blocklist_scale --lookups --sizes 1000000 10000000
    PYTHONPATH=. python -m benchmarks.blocklist_scale --drop local shipped [--loaded] --sizes 1000000

--drop starts a real node (2 workers) and drops version 2 of N entries into its directory,
either alone (the node compiles it) or with the companions `blocklist sign --table` writes
(the node verifies and maps the signer's table, proxy/blocklist/shipped.py), and reports the
seconds from the drop to a probe answered 451 and to the node's applied_at; with --loaded,
under a wrk hit load, with the throughput and p99 before and during.

--loader runs the compile child (proxy/blocklist/loader.py) on a signed version of N entries, as
the supervisor does on a file drop, and reports its time and peak memory. `--kinds mapped-v2`
writes the table without per-host summaries (the format before them: every probe runs), to
compare with `mapped`; --lookups times the two in turns in one process, per request class.

--supervisor runs a `NodeBlocklist` (proxy/blocklist/node.py, the supervisor's part) in a fresh
process per size, with no workers (their answers are faked): it loads a signed version of N
entries as at start-up, then a second full version of 1.25 N (the soak's step: too large a
change to go as a delta), and reports VmRSS and RssAnon from /proc after each, with how long
each took from the call to the (faked) broadcast: the supervisor's share of "time to enforce".

Each measurement runs in fresh processes: the parent compiles (as the supervisor does), then
`--workers` child processes load what it wrote and report their memory from /proc (RssAnon is
private to the process; RssFile is mapped file pages, shared through the page cache; Pss
splits shared pages between their users) and their lookup cost. Lookups are timed on match
keys computed beforehand (`check_keys`, what every implementation shares is left out): a mix
of misses on the listed host (every probe runs), misses elsewhere, and hits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.blocklists import entries as make_entries


def _memory() -> dict[str, int]:
    out: dict[str, int] = {}
    for name in ("status", "smaps_rollup"):
        for line in Path(f"/proc/self/{name}").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "Pss") and rest.strip().endswith("kB"):
                out[key] = int(rest.split()[0]) << 10
    return out


def _requests(n: int, count: int, seed: int = 7) -> list[tuple[str, str, str | None]]:
    rng = random.Random(seed)
    out: list[tuple[str, str, str | None]] = []
    for _ in range(count):
        i = rng.randrange(max(1, n))
        roll = rng.random()
        if roll < 0.45:  # the listed host, an unlisted path: every probe runs
            out.append(("127.0.0.1", f"/assets/img/{i}/photo.jpg", f"w={i}" if i % 2 else None))
        elif roll < 0.9:  # another site
            out.append((f"www.site{i}.example", f"/a/b/{i}", None))
        elif roll < 0.95:  # hits: a prefix, a url with its query
            out.append(("127.0.0.1", f"/listed/tree/{i - i % 10 + 4}/x", None))
        else:
            j = i - i % 10
            out.append(("127.0.0.1", f"/listed/url/{j}", f"v={j % 97}&z=1"))
    return out


def request_classes(reqs: list[tuple[str, str, str | None]]) -> dict[str, list[Any]]:
    """The match keys of `_requests`, by class ("mix": all of them, in order)."""
    from proxy.blocklist.keys import match_keys

    keys = [match_keys(*r) for r in reqs]
    pairs = list(zip(reqs, keys, strict=True))
    return {
        "other host": [k for r, k in pairs if r[0] != "127.0.0.1"],
        "listed host, unlisted path": [k for r, k in pairs if r[1].startswith("/assets")],
        "hits": [k for r, k in pairs if r[1].startswith("/listed")],
        "mix": keys,
    }


def child(kind: str, path: str, n: int, version: int) -> dict[str, Any]:
    """One worker: load, then measure memory and lookups."""
    from proxy.blocklist.keys import match_keys

    before = _memory()
    started = time.perf_counter()
    snap: Any
    if kind.startswith("mapped"):
        from proxy.blocklist.mapped import load_mapped

        snap = asyncio.run(load_mapped(Path(path), version, time.time()))
    else:
        from proxy.blocklist.compiled import load_compiled

        snap = asyncio.run(load_compiled(Path(path), version, time.time()))
    load_s = time.perf_counter() - started
    reqs = _requests(n, 20000)
    keys = [match_keys(*r) for r in reqs]
    hits = sum(snap.check_keys(k) is not None for k in keys)  # also warms the pages probed
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for k in keys:
            snap.check_keys(k)
        best = min(best, time.perf_counter() - t)
    digests = [os.urandom(32) for _ in range(5000)]
    t = time.perf_counter()
    for d in digests:
        snap.check_digest(d)
    digest_us = (time.perf_counter() - t) / len(digests) * 1e6
    after = _memory()
    return {
        "load_s": load_s,
        "lookup_us": best / len(keys) * 1e6,
        "digest_us": digest_us,
        "hit_share": hits / len(keys),
        "mem_before": before,
        "mem_after": after,
        "entries": len(snap),
    }


def _verified(n: int, workdir: Path) -> tuple[list[Any], float]:
    """The entries of a signed version of `n` entries as the supervisor reads them (signature,
    hash, every entry validated), and how long that took."""
    from benchmarks.blocklists import blocklist_dir
    from proxy.blocklist.format import load_newest

    directory, public = blocklist_dir(workdir, n)
    t = time.perf_counter()
    found, errors = load_newest(
        directory,
        public.read_bytes(),
        current_sequence=None,
        max_bytes=sum(p.stat().st_size for p in directory.iterdir()),
    )
    assert found is not None, errors
    return found[0], time.perf_counter() - t


def measure(kind: str, n: int, workers: int, workdir: Path, signed: bool) -> dict[str, Any]:
    from proxy.blocklist.compiled import write_compiled
    from proxy.blocklist.table import write_table

    verify_s = 0.0
    if signed:
        listed, verify_s = _verified(n, workdir)
    else:
        listed = make_entries(n)
    path = workdir / (f"v{n}.map" if kind.startswith("mapped") else f"v{n}.msgpack")
    t = time.perf_counter()
    if kind.startswith("mapped"):
        # "mapped-v2": the table without host summaries (format 2), every probe run
        write_table(path, listed, 1, time.time(), summaries=kind == "mapped")
    else:
        write_compiled(path, listed)
    compile_s = time.perf_counter() - t
    del listed
    supervisor = _memory()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.blocklist_scale",
                "--child",
                kind,
                str(path),
                str(n),
            ],
            stdout=subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    results = [json.loads(p.communicate()[0]) for p in procs]
    file_bytes = path.stat().st_size
    path.unlink()
    return {
        "kind": kind,
        "entries": n,
        "compile_s": compile_s,
        "verify_s": verify_s,
        "file_bytes": file_bytes,
        "supervisor_rss": supervisor.get("VmRSS", 0),
        "workers": results,
    }


def report(r: dict[str, Any]) -> str:
    mib = 1 << 20
    ws = r["workers"]
    anon = [w["mem_after"]["RssAnon"] - w["mem_before"]["RssAnon"] for w in ws]
    files = [w["mem_after"].get("RssFile", 0) for w in ws]
    pss = [w["mem_after"].get("Pss", 0) for w in ws]
    return (
        f"{r['kind']:7} {r['entries']:>10,}  verify {r['verify_s']:6.1f} s  "
        f"compile {r['compile_s']:7.1f} s  "
        f"file {r['file_bytes'] / mib:8.1f} MiB  "
        f"load/worker {max(w['load_s'] for w in ws):7.2f} s  "
        f"private/worker +{max(anon) / mib:8.1f} MiB  file pages/worker {max(files) / mib:7.1f} MiB  "
        f"Pss/worker {max(pss) / mib:8.1f} MiB  workers total RSS "
        f"{sum(w['mem_after']['VmRSS'] for w in ws) / mib:8.1f} MiB  "
        f"lookup {min(w['lookup_us'] for w in ws):5.2f} µs (hits {ws[0]['hit_share']:.0%})  "
        f"digest {min(w['digest_us'] for w in ws):5.2f} µs"
    )


def lookups(n: int, workdir: Path, rounds: int = 7) -> dict[str, Any]:
    """`check_keys` on one list compiled twice, without host summaries (format 2: every probe
    runs, as before them) and with, in one process, the two timed in turns (best of
    `rounds`): on a shared machine the load moves between runs, less within one. Per request
    class of `_requests`."""
    from proxy.blocklist.mapped import MappedSnapshot
    from proxy.blocklist.table import MappedTable, write_table

    listed = make_entries(n)
    snaps = {}
    for kind, summaries in (("without", False), ("with", True)):
        path = workdir / f"lookups-{kind}.map"
        write_table(path, listed, 1, time.time(), summaries=summaries)
        table = MappedTable(path)
        table.verify()
        snaps[kind] = MappedSnapshot.open(table, 1, time.time())
    del listed
    classes = request_classes(_requests(n, 20000))
    keys = classes["mix"]
    for snap in snaps.values():  # the pages these requests probe, mapped in
        for k in keys:
            snap.check_keys(k)
    best: dict[str, dict[str, float]] = {kind: {} for kind in snaps}
    for _ in range(rounds):
        for kind, snap in snaps.items():
            for name, ks in classes.items():
                t = time.perf_counter()
                for k in ks:
                    snap.check_keys(k)
                us = (time.perf_counter() - t) / len(ks) * 1e6
                best[kind][name] = min(best[kind].get(name, us), us)
    for kind in snaps:
        (workdir / f"lookups-{kind}.map").unlink()
    return {"kind": "lookups", "entries": n, "best_us": best, "load": os.getloadavg()}


def report_lookups(r: dict[str, Any]) -> str:
    b = r["best_us"]
    parts = [f"{name} {b['without'][name]:5.2f} -> {b['with'][name]:5.2f}" for name in b["with"]]
    load = ", ".join(f"{x:.1f}" for x in r["load"])
    return (
        f"lookups {r['entries']:>10,}  µs without -> with summaries: "
        + "; ".join(parts)
        + (f"  (load {load})")
    )


def loader(n: int, workdir: Path) -> dict[str, Any]:
    """The compile child as the supervisor runs it on a file drop (`python -m
    proxy.blocklist.loader`, a "dir" job: read, verify, canonicalise, write the file layer's
    table, the node table linked to it), its wall time and its peak memory, sampled from /proc
    every 20 ms (RssFile: pages of the mapped version and table, the page cache's; RssAnon:
    its own)."""
    import msgspec

    from benchmarks.blocklists import blocklist_dir
    from proxy.blocklist.loader import DirSource, Job

    directory, public = blocklist_dir(workdir, n)
    out = workdir / f"loaded-{n}"
    job = Job(
        version=1,
        now=time.time(),
        source="dir",
        dir=DirSource(
            dir=str(directory),
            public_key=str(public),
            current_sequence=None,
            current_sha256="",
            max_bytes=1 << 40,
            max_sequence_step=0,
            require_valid_until=False,
        ),
        file_out=str(out) + ".file",
        node_out=str(out) + ".node",
        nice=0,
    )
    peak: dict[str, int] = {}
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.blocklist.loader"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(msgspec.msgpack.encode(job))
    proc.stdin.close()
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    peak[key] = max(peak.get(key, 0), int(rest.split()[0]) << 10)
        except OSError:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t
    last = proc.stdout.read().splitlines()[-1]
    assert proc.returncode == 0 and b'"summary"' in last, last
    size = Path(job.file_out).stat().st_size
    for path in (job.file_out, job.node_out, *directory.iterdir()):
        Path(path).unlink(missing_ok=True)
    return {"kind": "loader", "entries": n, "wall_s": wall, "peak": peak, "file_bytes": size}


def report_loader(r: dict[str, Any]) -> str:
    mib = 1 << 20
    p = r["peak"]
    return (
        f"loader {r['entries']:>10,}  file drop to tables {r['wall_s']:7.1f} s "
        f"({r['wall_s'] / r['entries'] * 1e6:5.1f} µs an entry)  peak VmRSS "
        f"{p.get('VmRSS', 0) / mib:7.1f} MiB  RssAnon {p.get('RssAnon', 0) / mib:7.1f} MiB  "
        f"RssFile {p.get('RssFile', 0) / mib:7.1f} MiB  table {r['file_bytes'] / mib:8.1f} MiB"
    )


def supervisor(n: int, workdir: Path) -> dict[str, Any]:
    """One supervisor's blocklist, in this process: start-up load of n, then a full 1.25 n."""
    import shutil

    import msgspec

    from benchmarks.blocklists import blocklist_dir, version_file
    from proxy.blocklist.node import NodeBlocklist
    from proxy.config import BlocklistConfig, Config

    directory, public = blocklist_dir(workdir, n)
    second = version_file(n + n // 4, 2)  # signed before anything is measured
    cfg = msgspec.structs.replace(
        Config(),
        blocklist=BlocklistConfig(
            dir=str(directory), public_key=str(public), max_file_bytes=1 << 34
        ),
    )

    async def broadcast(op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"applied_at": time.time()}]

    out: dict[str, Any] = {"kind": "supervisor", "entries": n, "idle": _memory()}
    node = NodeBlocklist(cfg, workdir / f"state-{n}", broadcast)
    t = time.perf_counter()
    node.load_initial()
    out["first_s"] = time.perf_counter() - t
    out["first"] = _memory()
    shutil.copyfile(second, directory / second.name)
    t = time.perf_counter()
    assert asyncio.run(node.reload_dir()) is not None, node.last_errors
    out["second_s"] = time.perf_counter() - t
    out["second"] = _memory()
    out["counts"] = node.counts()
    for path in node.compiled_files():
        path.unlink(missing_ok=True)
    return out


def report_supervisor(r: dict[str, Any]) -> str:
    mib = 1 << 20
    m = {k: r[k] for k in ("idle", "first", "second")}
    return (
        f"supervisor {r['entries']:>10,}  "
        f"idle RSS {m['idle']['VmRSS'] / mib:6.1f} MiB (anon {m['idle']['RssAnon'] / mib:6.1f})  "
        f"after {r['entries']:,}: RSS {m['first']['VmRSS'] / mib:7.1f} MiB "
        f"(anon {m['first']['RssAnon'] / mib:7.1f}) in {r['first_s']:6.1f} s  "
        f"after {sum(r['counts'].values()):,}: RSS {m['second']['VmRSS'] / mib:7.1f} MiB "
        f"(anon {m['second']['RssAnon'] / mib:7.1f}) in {r['second_s']:6.1f} s"
    )


DROP_PROBE = "/blocked/drop-probe"
IDLE_WINDOWS = 5  # 1 s windows of the hit load measured before a drop: its idle


def shipped_version(n: int) -> Path:
    """A signed full version of `n` entries (+ a probe prefix) with its companions, the table
    and signed manifest `blocklist sign --table` writes (proxy/blocklist/shipped.py); built
    once and cached beside the version."""
    from benchmarks.blocklists import shipped_file

    return shipped_file(n, 2, probes=[("prefix", f"http://127.0.0.1{DROP_PROBE}")])


def drop(
    n: int,
    workdir: Path,
    *,
    ship: bool,
    loaded: bool,
    connections: int,
    pushes: int = 0,
    table_install: str = "copy",
    compile_idle_s: float | None = None,
    detail: bool = False,
    client_batch: bool = True,
) -> dict[str, Any]:
    """A real node (2 workers) enforcing 10 entries; version 2 of `n` entries dropped into its
    directory, with its companions (`ship`) or without (compiled by the node): seconds from
    the drop to the probe answered 451 on fresh connections, and to the node's applied_at
    (every worker answered that it enforces the version), idle or under a hit load (1 s
    windows of `/bytes/1024` hits: throughput and p99 before and during). `pushes` entries are
    pushed before the drop (kept over the new version: the shipped table's overlay).

    wrk runs under SCHED_BATCH unless `client_batch` is false: on this 2-core machine the
    client shares the cores with the node, and each answer a worker wrote woke wrk, which then
    took that worker's core in mid-iteration; a worker so paired served one request a
    millisecond for tens of ms (a "stall"), in idle windows as in the swap's. A window is held
    to a 5 s idle run, so such a stall in any one of a swap's dozen windows failed it, while
    the idle run diluted its own (benchmarks/README.md, "What stalled a worker's loop")."""
    import shutil
    import statistics
    import threading

    from benchmarks import cpu, edge_ops, tail
    from benchmarks.blocklists import LIST_CONFIG, blocklist_dir
    from benchmarks.load import Workload, drive
    from benchmarks.origin import Origin
    from benchmarks.soak import admin_get
    from benchmarks.targets import EdgeTarget
    from proxy.blocklist.shipped import companions

    version = shipped_version(n)
    directory, public = blocklist_dir(workdir / "lists", 10, sequence=1)
    origin = Origin(workdir)
    config = workdir / "edge.toml"  # max_file_bytes: a 10M-entry version is 1.3 GiB
    max_bytes = max(1 << 30, 2 * version.stat().st_size)
    # With the window detail, a worker whose loop a lag sample finds held 20 ms logs the
    # stack it is in (proxy/node/tail.py); the record keeps those lines ("stalls").
    config.write_text(
        ("tail_stall_log_s = 0.02\n" if detail else "")
        + LIST_CONFIG.format(max_file_bytes=max_bytes, origin_port=origin.port,
                           extra=f'table_install = "{table_install}"'
                           + ("" if compile_idle_s is None else
                              f"\ncompile_idle_s = {compile_idle_s}"))
    )  # fmt: skip
    edge = EdgeTarget(
        "edgeproxy-drop",
        blocklist_dir=directory,
        blocklist_key=public,
        extra_args=["--config", str(config)],
    )
    edge.start_timeout_s = 120.0
    windows: list[tuple[float, float, Any]] = []
    stop = threading.Event()

    steals: list[float] = []  # per window: CPU time the hypervisor gave others (ms)
    # per window (`detail`): the workers' run-queue wait (ms: runnable, not running), the
    # largest loop lag bucket any worker's histogram gained (ms), the CPU of the node's other
    # processes (ms), the kernel's memory stalls (`_VM_EVENTS`), and what took the cores
    # (`_machine_delta`: the busiest processes of the machine, softirq)
    details: list[dict[str, Any]] = []

    def load() -> None:
        workers: list[int] = []
        root = 0
        if detail and edge.proc is not None:  # the supervisor's children: its workers
            root = edge.proc.pid
            workers = [st.pid for st in cpu.tree([root]) if st.ppid == root]

        def sample() -> tuple[float, tail.Histograms, dict[str, int], float, _MachineCpu]:
            procs = cpu.snapshot()  # one read of /proc for the node's others and the machine
            return (sum(tail.process_wait_s(w) for w in workers),
                    tail.histograms(edge_ops.metrics_text(edge)), _vm_events(),
                    _others_cpu_s(root, workers, procs), _machine_cpu(procs))  # fmt: skip

        before = sample() if detail else None  # a window's end is the next one's start
        while not stop.is_set():
            t0, s0 = time.perf_counter(), _steal_s()
            m = drive(edge.base_url, Workload("url", "/bytes/1024"), duration_s=1.0,
                      connections=connections, use_wrk=True, batch=client_batch)  # fmt: skip
            windows.append((t0, time.perf_counter(), m))
            steals.append((_steal_s() - s0) * 1e3)
            if before is not None:
                after = sample()
                (rq0, h0, vm0, others0, m0), (rq1, h1, vm1, others1, m1) = before, after
                lag = tail.delta(h0, h1)
                largest = max((tail.largest(b) or 0.0 for (f, _w), b in lag.items()
                               if f == "edgeproxy_worker_loop_lag_seconds"), default=0.0)  # fmt: skip
                vm = {k: v - vm0.get(k, 0) for k, v in vm1.items()}
                details.append({"rq_ms": round((rq1 - rq0) * 1e3, 1), "lag_ms": largest * 1e3,
                                "others_cpu_ms": round((others1 - others0) * 1e3), **vm,
                                **_machine_delta(m0, m1)})  # fmt: skip
                before = after

    thread = threading.Thread(target=load, daemon=True)
    try:
        edge.start(workdir / "edge", origin.port, 2)
        for _ in range(2):
            edge_ops.probe_status(edge.port, "/bytes/1024")
        if pushes:
            pushed = [{"id": f"push-{i}", "type": "url", "value": f"http://127.0.0.1/pushed/{i}"}
                      for i in range(pushes)]  # fmt: skip
            edge_ops.push(edge, pushed)
        staging = workdir / "staging"
        staging.mkdir(exist_ok=True)
        files = [version]
        if ship:
            files = [*companions(version), version]  # companions first, as the signer does
        for f in files:
            shutil.copyfile(f, staging / f.name)
        # The copies and their writeback (4 GB at 10M) are done before the load starts: made
        # under it, they were the "idle" windows (p99 3-5 ms against ~1 ms idle, half the
        # req/s), and every window of the swap was held to that.
        os.sync()
        if loaded:
            # Idle as one run over IDLE_WINDOWS seconds: the p99 of all its requests. A 1 s
            # window's p99 flips between ~1.5 and ~5 ms with where the kernel has put the two
            # workers and wrk on the two cores (their run-queue wait), so a median of five
            # windows could land on either.
            idle_run = drive(edge.base_url, Workload("url", "/bytes/1024"),
                             duration_s=float(IDLE_WINDOWS), connections=connections,
                             use_wrk=True, batch=client_batch)  # fmt: skip
            thread.start()
            while len(windows) < IDLE_WINDOWS + 1:  # the first is wrk's warm-up
                time.sleep(0.05)
        hists_before = tail.histograms(edge_ops.metrics_text(edge))
        assert edge.proc is not None
        cpu_before = _cpu_by_process(edge.proc.pid)
        t_drop, wall_drop = time.perf_counter(), time.time()
        for f in files:
            os.replace(staging / f.name, directory / f.name)
        t_enforced = edge_ops.wait_enforced(edge.port, DROP_PROBE, timeout_s=600.0)
        applied_at = 0.0  # the node's proof: when the last worker answered for version 2
        deadline = time.monotonic() + 600
        while not applied_at and time.monotonic() < deadline:
            history = admin_get(edge, "/blocklist").get("history", [])
            applied_at = next((h["applied_at"] for h in history if h["source"] == "file:2"), 0.0)
            time.sleep(0.1)
        metrics = edge_ops.metrics_text(edge)
        cpu_swap = _cpu_by_process(edge.proc.pid)
        cpu_swap = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in cpu_swap.items()}
        swap = tail.delta(hists_before, tail.histograms(metrics))
        if loaded:
            seen = len(windows)
            while len(windows) < seen + 2:
                time.sleep(0.05)
            stop.set()
            thread.join(timeout=30)
            # Idle again, once the swap is over: a second sample of the state the node is held
            # to. Idle's p99 has two modes (~1.5 and ~5 ms, with where the kernel puts the two
            # workers and wrk), and one run before the drop landed in the low one while the
            # swap's windows sat in the high one (worst window 7.4 ms, 2.5x a 3.0 ms idle run).
            idle_after = drive(edge.base_url, Workload("url", "/bytes/1024"),
                               duration_s=float(IDLE_WINDOWS), connections=connections,
                               use_wrk=True, batch=client_batch)  # fmt: skip
    finally:
        stop.set()
        if thread.is_alive():  # its last window ends before the edge stops (not its errors)
            thread.join(timeout=30)
        edge.stop()
        origin.stop()
    stalls = _stalls(workdir / "edge" / "server.log", wall_drop) if detail else []
    shipped_total = next(
        (line.split()[-1] for line in metrics.splitlines()
         if line.startswith("edgeproxy_blocklist_tables_shipped_total")), "?"
    )  # fmt: skip
    enforced_s = None if t_enforced is None else t_enforced - t_drop
    out: dict[str, Any] = {
        "kind": "drop",
        "entries": n,
        "shipped": ship,
        "loaded": loaded,
        "pushes": pushes,
        "table_install": table_install,
        "client_batch": client_batch,
        "compile_idle_s": compile_idle_s,
        "tables_shipped": shipped_total,
        "enforced_s": enforced_s,
        "applied_s": applied_at - wall_drop if applied_at else None,
        # the drop on CLOCK_MONOTONIC (perf_counter's clock): places it in a trace taken with
        # `perf sched record -k CLOCK_MONOTONIC`
        "drop_monotonic_s": t_drop,
        # with the window detail: each logged stall of a worker's loop (s from the drop, how
        # long, the stack its main thread was in)
        "stalls": stalls,
        # per worker, from the drop to every worker's swap (their /metrics histograms): where
        # a bad window's time went (the loop's largest lag, the largest GC pause)
        "workers": {
            w: {
                "lag_largest_s": tail.largest(
                    swap.get(("edgeproxy_worker_loop_lag_seconds", w), {})
                ),
                **{
                    k: v
                    for k, v in s.items()
                    if k in ("lag_p99_s", "gc_collections", "gc_largest_s")
                },
            }
            for w, s in tail.edge_summary(swap).items()
        },
        "load": os.getloadavg(),
        # CPU seconds from the drop to applied_at, by process (reaped children included: the
        # supervisor's compile or adoption job, each worker's check child)
        "cpu_s": cpu_swap,
    }
    if loaded and t_enforced is not None:
        before = [m for a, b, m in windows[1:] if b <= t_drop]
        # every window that overlaps the swap, from the drop to the later of the probe's 451
        # and the last worker's swap
        t_end = max(t_enforced, t_drop + (applied_at - wall_drop if applied_at else 0.0))
        during = [m for a, b, m in windows if b > t_drop and a < t_end]
        out["idle_run"] = {"rps": round(idle_run.rps), "p99_ms": round(idle_run.p99_us / 1e3, 2)}
        out["idle_after"] = {"rps": round(idle_after.rps),
                             "p99_ms": round(idle_after.p99_us / 1e3, 2)}  # fmt: skip
        out["rps_before"] = statistics.median(m.rps for m in before) if before else 0.0
        out["rps_during"] = statistics.median(m.rps for m in during) if during else 0.0
        out["p99_before_ms"] = statistics.median(m.p99_us for m in before) / 1e3 if before else 0
        out["p99_during_max_ms"] = max((m.p99_us for m in during), default=0.0) / 1e3
        out["errors"] = sum(m.errors + m.unexpected for _a, _b, m in windows)
        out["windows"] = [
            {"t_s": round(a - t_drop, 1), "rps": round(m.rps), "p99_ms": round(m.p99_us / 1e3, 2),
             "errors": m.errors, "unexpected": m.unexpected, "steal_ms": round(st, 1),
             **(details[i] if i < len(details) else {})}
            for i, ((a, _b, m), st) in enumerate(zip(windows, steals, strict=False))
        ]  # fmt: skip
    return out


# the kernel's memory events that stall whoever allocates or touches a page: reclaim and
# compaction done in the faulting process, and page faults that waited for the disk
_VM_EVENTS = ("allocstall_normal", "allocstall_movable", "compact_stall", "pgscan_direct",
              "pgscan_kswapd", "pgmajfault")  # fmt: skip


def _stalls(server_log: Path, wall_drop: float) -> list[dict[str, Any]]:
    """The workers' "worker loop stalled" records in the node's log (one line each, its
    newlines escaped): when (s from the drop, by the line's clock), how long, and the last
    frames of the stack."""
    from datetime import datetime

    try:
        lines = server_log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for line in lines:
        if "worker loop stalled" not in line:
            continue
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            stamp = wall_drop
        waited = re.search(r"waited ([0-9.]+) ms", line)
        frames = [f.strip() for f in line.split("\\n") if f.strip().startswith("File")]
        out.append({"t_s": round(stamp - wall_drop, 2), "who": line[24:].split(" ")[0],
                    "waited_ms": float(waited.group(1)) if waited else None,
                    "frames": frames[-6:]})  # fmt: skip
    return out


def _vm_events() -> dict[str, int]:
    """/proc/vmstat's counters of `_VM_EVENTS`, so far."""
    out: dict[str, int] = {}
    with open("/proc/vmstat") as f:
        for line in f:
            name, _, value = line.partition(" ")
            if name in _VM_EVENTS:
                out[name] = int(value)
    return out


# The whole machine's CPU, so far: each process's own (utime + stime) ticks by pid with its
# name, and the kernel's softirq ticks (all CPUs, /proc/stat)
_MachineCpu = tuple[dict[int, tuple[str, int]], int]
TOP_CPU = 6  # processes named in a window's `top_cpu`


def _machine_cpu(procs: dict[int, Any]) -> _MachineCpu:
    """Every process's CPU so far (`procs`, a `cpu.snapshot`: kernel threads such as
    ksoftirqd and kworkers included): what took the cores in a window whose p99 rose, where
    the node's own share did not."""
    with open("/proc/stat") as f:
        softirq = int(f.readline().split()[7])
    return {pid: (st.comm, st.own_ticks) for pid, st in procs.items()}, softirq


def _machine_delta(before: _MachineCpu, after: _MachineCpu) -> dict[str, Any]:
    """A window's `top_cpu` ([name, ms] of the TOP_CPU processes that took most CPU in it:
    one that started or ended within it counts what it had at the window's end, or nothing)
    and `softirq_ms`."""
    from benchmarks import cpu

    (p0, s0), (p1, s1) = before, after
    ms = 1e3 / cpu.TICKS_PER_S
    took = sorted(((ticks - p0.get(pid, (comm, 0))[1], f"{comm}[{pid}]")
                   for pid, (comm, ticks) in p1.items()), reverse=True)[:TOP_CPU]  # fmt: skip
    return {
        "top_cpu": [[who, round(t * ms)] for t, who in took if t > 0],
        "softirq_ms": round((s1 - s0) * ms),
    }


def _others_cpu_s(root: int, workers: list[int], procs: dict[int, Any]) -> float:
    """CPU seconds so far of the node's processes other than its workers and their children:
    the supervisor, its threads (the pin), its jobs (live, or reaped into its own count), as
    `procs` (a `cpu.snapshot`) found them."""
    from benchmarks import cpu

    ticks = sum(st.cpu_ticks for st in cpu.tree([root], procs) if st.pid not in workers
                and st.ppid not in workers) if root else 0  # fmt: skip
    return ticks / cpu.TICKS_PER_S


def _steal_s() -> float:
    """CPU seconds the hypervisor has run something else while this VM wanted the CPU (all
    CPUs, /proc/stat's steal): a window with some was not this machine's alone."""
    from benchmarks import cpu

    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / cpu.TICKS_PER_S if len(fields) > 8 else 0.0


def _cpu_by_process(root: int) -> dict[str, float]:
    """CPU seconds so far of the node's supervisor and of each worker, each split into its
    own and its reaped children's (the supervisor's compile or adoption job, a worker's check
    child), named by their process titles."""
    from benchmarks import cpu

    out: dict[str, float] = {}
    for stat in cpu.tree([root]):
        if stat.pid != root and stat.ppid != root:
            continue
        try:
            title = Path(f"/proc/{stat.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        name = title.removeprefix("edgeproxy: ").split(" (")[0]
        own = sum(cpu.user_system_seconds(stat.pid))
        out[name] = own
        out[name + " children"] = stat.cpu_ticks / cpu.TICKS_PER_S - own
    return out


def report_drop(r: dict[str, Any]) -> str:
    how = "shipped table" if r["shipped"] else "local compile"
    enforced = "-" if r["enforced_s"] is None else f"{r['enforced_s']:6.1f} s"
    applied = "-" if r["applied_s"] is None else f"{r['applied_s']:6.1f} s"
    line = (
        f"drop {r['entries']:>10,} {how:13} {'loaded' if r['loaded'] else 'idle  '} "
        f"{r.get('pushes', 0):>5} pushed  "
        f"probe 451 after {enforced}, applied_at after {applied} "
        f"(tables_shipped {r['tables_shipped']})"
    )
    if "rps_before" in r:
        share = r["rps_during"] / r["rps_before"] if r["rps_before"] else 0.0
        line += (
            f"  rps {r['rps_before']:,.0f} -> {r['rps_during']:,.0f} ({share:.0%}), p99 "
            f"{r['p99_before_ms']:.2f} -> max {r['p99_during_max_ms']:.2f} ms, "
            f"errors {r['errors']}"
        )
    line += "  (load " + ", ".join(f"{x:.1f}" for x in r["load"]) + ")"
    if r.get("cpu_s"):
        line += "\n    CPU s during the swap: " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["cpu_s"].items()
        )
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 1_000_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kinds", nargs="+", default=["mapped", "msgpack"])
    ap.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "N"))
    ap.add_argument(
        "--supervisor",
        action="store_true",
        help="measure the supervisor's memory loading N, then a full version of 1.25 N",
    )
    ap.add_argument("--supervisor-child", type=int, metavar="N", help=argparse.SUPPRESS)
    ap.add_argument(
        "--lookups",
        action="store_true",
        help="check_keys with and without host summaries, timed in turns in one process",
    )
    ap.add_argument(
        "--loader",
        action="store_true",
        help="time the compile child on a signed version of N entries, and its peak memory",
    )
    ap.add_argument(
        "--drop",
        nargs="+",
        choices=["local", "shipped"],
        help="a real node: time from the file drop of version 2 (N entries) to enforced, "
        "compiled by the node (local) or with the signer's table (shipped)",
    )
    ap.add_argument("--loaded", action="store_true", help="--drop under a wrk hit load")
    ap.add_argument(
        "--table-install",
        choices=["copy", "link"],
        default="copy",
        help="--drop shipped: how the node takes the table in (blocklist.table_install)",
    )
    ap.add_argument(
        "--compile-idle-s",
        type=float,
        help="--drop: blocklist.compile_idle_s (0: the job at nice +10 only; default: the node's)",
    )
    ap.add_argument("--connections", type=int, default=32, help="--loaded: wrk connections")
    ap.add_argument(
        "--window-detail",
        action="store_true",
        help="--loaded: per window, the workers' run-queue wait and largest loop lag, the "
        "node's other CPU, the kernel's memory stalls, the machine's busiest processes and its "
        "softirq time (reads /metrics and /proc between windows); "
        "the workers log loop stalls past 20 ms (tail_stall_log_s), kept as `stalls`",
    )
    ap.add_argument(
        "--client-batch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--loaded: wrk runs under SCHED_BATCH (the default): it never takes a worker's "
        "core on waking, as clients on other machines never do (benchmarks/README.md)",
    )
    ap.add_argument("--pushes", type=int, default=0, help="--drop: entries pushed before it")
    ap.add_argument("--json", type=Path, help="append each result as a JSON line here")
    ap.add_argument(
        "--signed",
        action="store_true",
        help="read a signed version first (cached under results/.blocklists), timing it",
    )
    args = ap.parse_args()
    if args.child:
        kind, path, n = args.child
        print(json.dumps(child(kind, path, int(n), 1)))
        return
    if args.supervisor_child:
        with tempfile.TemporaryDirectory(prefix="blscale-") as tmp:
            print(json.dumps(supervisor(args.supervisor_child, Path(tmp))))
        return
    if args.drop:
        for n in args.sizes:
            shipped_version(n)  # signed and compiled here once, not timed
            for how in args.drop:
                with tempfile.TemporaryDirectory(prefix="blscale-") as tmp:
                    r = drop(n, Path(tmp), ship=how == "shipped", loaded=args.loaded,
                             connections=args.connections, pushes=args.pushes,
                             table_install=args.table_install,
                             compile_idle_s=args.compile_idle_s,
                             detail=args.window_detail,
                             client_batch=args.client_batch)  # fmt: skip
                print(report_drop(r), flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(r) + "\n")
        return
    if args.lookups or args.loader:
        from benchmarks.blocklists import version_file

        measure_one, report_one = (
            (lookups, report_lookups) if args.lookups else (loader, report_loader)
        )
        for n in args.sizes:
            if args.loader:
                version_file(n, 1)  # signed here, not timed
            with tempfile.TemporaryDirectory(prefix="blscale-") as tmp:
                r = measure_one(n, Path(tmp))
            print(report_one(r), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(r) + "\n")
        return
    if args.supervisor:
        from benchmarks.blocklists import version_file

        for n in args.sizes:
            version_file(n, 1)  # signed here, so the measured process only reads them
            version_file(n + n // 4, 2)
            got = subprocess.run(
                [sys.executable, "-m", "benchmarks.blocklist_scale", "--supervisor-child", str(n)],
                stdout=subprocess.PIPE,
                check=True,
            )
            r = json.loads(got.stdout)
            print(report_supervisor(r), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(r) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="blscale-") as tmp:
        for n in args.sizes:
            for kind in args.kinds:
                r = measure(kind, n, args.workers, Path(tmp), args.signed)
                print(report(r), flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
