"""Where a worker's waiting comes from: loop lag and GC pauses, per worker (issue 18's tail).

A request on a kept-alive connection can wait without any code of ours running for it: its
bytes sit in the socket while the worker's loop works through other connections' requests,
while the worker collects garbage, or while the kernel runs another process on the worker's
core. The per-request latency histogram (`edgeproxy_request_duration_seconds`) starts when the
request's bytes are parsed, so it sees none of that. Two samples here do:

- **Loop lag.** A thread of the probe wakes every `tail_sample_interval_s`, notes the time at
  whatever moment the worker's main thread let it run (any bytecode boundary: a random moment
  as seen from the loop) and hands the loop a callback (`call_soon_threadsafe`) that records
  how long it took to run: the rest of the loop's current iteration, the next iteration's I/O
  work, and any time the process was descheduled or collecting garbage in between. That is
  what a request arriving at a random moment waits before the loop reads it, with no cost per
  request. A timer inside the loop could not do it: it fires at the start of an iteration
  (never in the middle of one), and uvloop's timers have a millisecond's resolution.
- **GC pauses**, by generation, from `gc.callbacks` (each collection timed start to stop).
- **What stalls the loop** (`tail_stall_log_s`, off by default): the probe's thread waits for
  each sample to land, and one still waiting after that long logs the stack the worker's main
  thread is in at that moment (at most once a second). A stall in Python code is caught in
  it (the thread gets the GIL back within the switch interval); one inside a C call that
  holds the GIL is caught as it ends; one where the process is off its core shows whatever
  frame it was preempted in.

Both are cumulative histogram counts, reported to the supervisor with the worker's stats and
exported per worker (`edgeproxy_worker_loop_lag_seconds`, `edgeproxy_worker_gc_pause_seconds`),
beside the worker's own request latency (`edgeproxy_worker_request_duration_seconds`). Like
`process_*`, these series start again from 0 when their worker is replaced.
Whether the kernel kept the worker waiting for a core is the kernel's to say
(/proc/PID/schedstat); `benchmarks.run` reads it beside these.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import msgspec
from prometheus_client.core import HistogramMetricFamily

from proxy.metrics import cumulative_buckets

log = logging.getLogger("edgeproxy.tail")

# 10 µs to 100 ms, 1-2.5-5 steps: a loop iteration of hits is tens of µs, a descheduled
# worker waits milliseconds (a CFS slice on a busy 2-core machine is 3-6 ms).
TAIL_BUCKETS_S = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1,
]  # fmt: skip
GENERATIONS = 3
# The per-worker families: a replaced worker's series start again from 0.
PER_WORKER_FAMILIES = (
    "edgeproxy_worker_request_duration_seconds",
    "edgeproxy_worker_loop_lag_seconds",
    "edgeproxy_worker_gc_pause_seconds",
)


class TailReport(msgspec.Struct, forbid_unknown_fields=True):
    """Cumulative counts since the worker started; `*_counts` has one slot per bucket of
    TAIL_BUCKETS_S and one above it."""

    lag_counts: list[int]
    lag_sum_s: float
    gc_counts: list[list[int]]  # per generation
    gc_sum_s: list[float]
    gc_max_s: list[float]


def _zeros() -> list[int]:
    return [0] * (len(TAIL_BUCKETS_S) + 1)


def empty_report() -> TailReport:
    return TailReport(
        lag_counts=_zeros(),
        lag_sum_s=0.0,
        gc_counts=[_zeros() for _ in range(GENERATIONS)],
        gc_sum_s=[0.0] * GENERATIONS,
        gc_max_s=[0.0] * GENERATIONS,
    )


class TailProbe:
    """Samples one worker's loop lag and times its garbage collections."""

    def __init__(self, sample_interval_s: float, *, stall_log_s: float = 0.0) -> None:
        self.interval_s = sample_interval_s
        self.stall_log_s = stall_log_s
        self.report = empty_report()
        self._main = threading.main_thread().ident
        self._last_stall_log = 0.0
        self._gc_started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.interval_s <= 0:
            return
        gc.callbacks.append(self._on_gc)
        self._thread = threading.Thread(
            target=self._sample, args=(loop,), name="tail-probe", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        landed = threading.Event()
        while not self._stop.wait(self.interval_s):
            landed.clear()
            scheduled = time.perf_counter()
            try:
                loop.call_soon_threadsafe(self._landed, scheduled, landed)
            except RuntimeError:
                return  # the loop is closed: the worker is ending
            if self.stall_log_s > 0 and not landed.wait(self.stall_log_s):
                self._log_stall(scheduled, landed)

    def _log_stall(self, scheduled: float, landed: threading.Event) -> None:
        """The main thread's stack now, while a sample waits past `stall_log_s`; logged once
        the sample lands (or the probe stops), with how long it waited in all."""
        frame = sys._current_frames().get(self._main or 0)
        stack = "".join(traceback.format_stack(frame, limit=16)) if frame else "(no frame)\n"
        held = time.perf_counter() - scheduled
        while not landed.wait(0.1) and not self._stop.is_set():
            pass
        if scheduled - self._last_stall_log < 1.0:
            return
        self._last_stall_log = scheduled
        log.warning(
            "worker loop stalled: a lag sample waited %.1f ms (%.1f ms when this stack was "
            "taken from the main thread):\n%s",
            (time.perf_counter() - scheduled) * 1e3,
            held * 1e3,
            stack.rstrip(),
        )

    def _landed(self, scheduled: float, landed: threading.Event) -> None:
        landed.set()
        waited = time.perf_counter() - scheduled
        r = self.report
        r.lag_counts[bisect.bisect_left(TAIL_BUCKETS_S, waited)] += 1
        r.lag_sum_s += waited

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        gen = info.get("generation", 0)
        r = self.report
        r.gc_counts[gen][bisect.bisect_left(TAIL_BUCKETS_S, took)] += 1
        r.gc_sum_s[gen] += took
        if took > r.gc_max_s[gen]:
            r.gc_max_s[gen] = took


def families(
    workers: list[tuple[str, TailReport | None, dict[str, Any]]], request_bounds: list[float]
) -> Iterator[HistogramMetricFamily]:
    """Per worker: request duration (the worker's sites and results summed), loop lag and GC
    pauses. `workers` is (worker label, its TailReport or None, its WorkerStats snapshot)."""
    req = HistogramMetricFamily(
        PER_WORKER_FAMILIES[0],
        "Request latency in this worker, from its head parsed to its answer written",
        labels=["worker"],
    )
    lag = HistogramMetricFamily(
        PER_WORKER_FAMILIES[1],
        "How long a callback made ready at a random moment waited for this worker's loop",
        labels=["worker"],
    )
    pause = HistogramMetricFamily(
        PER_WORKER_FAMILIES[2],
        "Garbage collections in this worker, by generation, timed start to stop",
        labels=["worker", "generation"],
    )
    for label, tail, snap in workers:
        counts = [0] * (len(request_bounds) + 1)
        total = 0.0
        for site in snap.get("sites", {}).values():
            for per_result, s in zip(site["latency"], site["latency_sum"], strict=True):
                counts = [a + b for a, b in zip(counts, per_result, strict=True)]
                total += s
        req.add_metric([label], cumulative_buckets(request_bounds, counts), total)
        if tail is None:
            continue
        lag.add_metric([label], cumulative_buckets(TAIL_BUCKETS_S, tail.lag_counts), tail.lag_sum_s)
        for gen in range(GENERATIONS):
            pause.add_metric(
                [label, str(gen)],
                cumulative_buckets(TAIL_BUCKETS_S, tail.gc_counts[gen]),
                tail.gc_sum_s[gen],
            )
    yield from (req, lag, pause)
