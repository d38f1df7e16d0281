"""benchmarks.load's client policy (SCHED_BATCH) and the drop's per-window machine CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks import cpu, load
from benchmarks.blocklist_scale import _machine_cpu, _machine_delta

POLICY = "import os; print(os.sched_getscheduler(0))"


def _policy_of(argv: list[str]) -> int:
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def test_a_batch_client_runs_under_sched_batch() -> None:
    argv = [sys.executable, "-c", POLICY]
    assert _policy_of(load.client_argv(argv, batch=True)) == os.SCHED_BATCH
    assert _policy_of(load.client_argv(argv, batch=False)) == os.SCHED_OTHER


def test_the_sessions_choice_holds_unless_a_run_says_otherwise() -> None:
    argv = [sys.executable, "-c", POLICY]
    load.batch_client(True)
    try:
        assert _policy_of(load.client_argv(argv)) == os.SCHED_BATCH
        assert _policy_of(load.client_argv(argv, batch=False)) == os.SCHED_OTHER
    finally:
        load.batch_client(False)
    assert _policy_of(load.client_argv(argv)) == os.SCHED_OTHER


def test_a_window_names_the_process_that_took_the_cpu() -> None:
    spin = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    before = _machine_cpu(cpu.snapshot())
    proc = subprocess.Popen([sys.executable, "-c", spin + "input()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:  # its CPU, read while it is still there to be read
            after = _machine_cpu(cpu.snapshot())
            mine = after[0].get(proc.pid)
            if mine is not None and mine[1] * 1000 // os.sysconf("SC_CLK_TCK") >= 400:
                break
            assert time.monotonic() < deadline, "the spinner never showed its CPU"
            time.sleep(0.05)
    finally:
        proc.communicate(b"\n")
    window = _machine_delta(before, after)
    took = dict(window["top_cpu"])
    name = next(k for k in took if k.endswith(f"[{proc.pid}]"))
    assert took[name] >= 400
    assert window["softirq_ms"] >= 0
