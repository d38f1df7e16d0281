"""Operator actions against the edge during a benchmark: admin pushes and enforcement probes."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

from benchmarks.targets import EdgeTarget


def probe_status(port: int, path: str, timeout_s: float = 2.0) -> int:
    """Status of one GET on a fresh connection (so SO_REUSEPORT may pick any worker)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            head = s.recv(64)
            return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return 0


def push(edge: EdgeTarget, entries: list[dict[str, str]], timeout_s: float = 120.0) -> Any:
    """POST /blocklist/entries; returns the decoded answer (raises on a non-2xx answer)."""
    request = urllib.request.Request(
        edge.admin_url + "/blocklist/entries",
        data=json.dumps({"entries": entries}).encode(),
        headers={
            "Authorization": f"Bearer {edge.admin_token}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"null")


def entry(entry_id: str, etype: str, value: str) -> dict[str, str]:
    return {"id": entry_id, "type": etype, "value": value, "notice": "BENCH", "reason": "bench"}


def list_prefix(edge: EdgeTarget, path: str) -> str | None:
    """Push a prefix entry for `path`; returns the value form the edge enforced, or None.

    Tries the host without a port first (what an operator writes), then with the listener's port.
    """
    for host in ("127.0.0.1", f"127.0.0.1:{edge.port}"):
        value = f"http://{host}{path}"
        push(edge, [entry(f"bench-prefix-{host}", "prefix", value)])
        if all(probe_status(edge.port, path + f"item-{i}") == 451 for i in range(4)):
            return value
    return None


def wait_enforced(port: int, path: str, timeout_s: float, consecutive: int = 4) -> float | None:
    """perf_counter time when `consecutive` fresh-connection probes in a row answered 451."""
    deadline = time.perf_counter() + timeout_s
    streak, first = 0, 0.0
    while time.perf_counter() < deadline:
        if probe_status(port, path) == 451:
            if streak == 0:
                first = time.perf_counter()
            streak += 1
            if streak >= consecutive:
                return first
        else:
            streak = 0
            time.sleep(0.01)
    return None


def metrics_text(edge: EdgeTarget) -> str:
    """The edge's /metrics, as its admin API serves them."""
    request = urllib.request.Request(
        edge.admin_url + "/metrics", headers={"Authorization": f"Bearer {edge.admin_token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return str(r.read().decode())


def metric(edge: EdgeTarget, name: str) -> float:
    """The sum of a counter's samples (`name` or `name_total`) on the edge's /metrics."""
    total = 0.0
    for line in metrics_text(edge).splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.partition("{")[0] in (name, name + "_total"):
            total += float(value)
    return total


def wait_list_loaded(
    edge: EdgeTarget, entries: int, workers: int, timeout_s: float
) -> float | None:
    """Seconds until `GET /blocklist` counts at least `entries` and `workers` workers enforce
    the node's version (its signed list loaded everywhere), or None after `timeout_s`."""
    request = urllib.request.Request(
        edge.admin_url + "/blocklist", headers={"Authorization": f"Bearer {edge.admin_token}"}
    )
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                answer = json.loads(r.read())
        except (OSError, ValueError):
            answer = {}
        listed = sum((answer.get("counts") or {}).values())
        enforcing = [w for w in answer.get("workers") or [] if w["version"] == answer["version"]]
        if listed >= entries and len(enforcing) >= workers:
            return time.perf_counter() - start
        time.sleep(0.2)
    return None
