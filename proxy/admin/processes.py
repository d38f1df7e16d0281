"""`process_*` metrics (CPU seconds, resident memory, open fds, …) for every process of the node,
labelled `process="supervisor"` or `process="worker-N"`.

prometheus-client's ProcessCollector reads /proc/PID for one pid; the admin listener lives in the
supervisor, which may read its workers' /proc entries (same user), so one scrape of the node
shows each process apart: a worker leaking memory or fds, or one worker hotter than the others,
is visible without a per-worker scrape target. On a platform without /proc there are none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric

SUPERVISOR = "supervisor"


def worker_label(index: int) -> str:
    return f"worker-{index}"


def process_families(processes: Iterable[tuple[str, int]]) -> Iterator[Metric]:
    """One family per ProcessCollector metric, a sample per (label, pid) that /proc still has."""
    current = [0]
    collector = ProcessCollector(pid=lambda: current[0], registry=None)
    merged: dict[str, Metric] = {}
    for label, pid in processes:
        current[0] = pid
        for family in collector.collect():  # nothing for a pid that just exited
            out = merged.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            for s in family.samples:
                out.add_sample(s.name, {**s.labels, "process": label}, s.value)
    yield from merged.values()
