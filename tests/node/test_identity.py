"""Issue 17, identity of a running node: `ps` names the supervisor and each worker with the
blocklist version it enforces, and /metrics says which build runs."""

from __future__ import annotations

import asyncio
import os
import platform
from importlib import metadata

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.node import Node
from tests.node.conftest import get, origin_app


def title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


async def wait_title(pid: int, want: str, timeout_s: float = 5.0) -> str:
    for _ in range(int(timeout_s / 0.05)):
        if (seen := title(pid)) == want:
            return seen
        await asyncio.sleep(0.05)
    return title(pid)


async def test_process_titles_follow_the_blocklist_version(origin_server, nodes) -> None:
    node = Node(["--origin", await origin_server(origin_app([])), "--workers", "2"])
    nodes.append(node)
    await node.start()
    assert node.proc is not None
    assert title(node.proc.pid) == "edgeproxy: supervisor"
    _, bl = await node.admin_json("GET", "/blocklist")
    v0 = bl["version"]
    for w in bl["workers"]:
        assert title(w["pid"]) == f"edgeproxy: worker {w['worker']} (blocklist v{v0})"
    status, _ = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {"entries": [{"id": "t1", "type": "url", "value": f"{node.url}/gone"}]},
    )
    assert status == 200
    _, bl = await node.admin_json("GET", "/blocklist")
    assert bl["version"] != v0
    for w in bl["workers"]:
        want = f"edgeproxy: worker {w['worker']} (blocklist v{bl['version']})"
        assert await wait_title(w["pid"], want) == want


async def test_build_info_on_metrics(origin_server, nodes) -> None:
    node = Node(["--origin", await origin_server(origin_app([])), "--workers", "1"])
    nodes.append(node)
    await node.start()
    status, _, body = await get(node.admin + "/metrics")
    assert status == 200
    want = (
        f'edgeproxy_build_info{{python="{platform.python_version()}",'
        f'version="{metadata.version("edgeproxy")}"}} 1.0'
    )
    assert want in body.decode()


async def test_process_metrics_per_worker_and_supervisor(origin_server, nodes) -> None:
    """process_* from /proc of each process, told apart by a `process` label."""
    node = Node(["--origin", await origin_server(origin_app([])), "--workers", "2"])
    nodes.append(node)
    await node.start()
    assert node.proc is not None
    pids = await node.worker_pids()
    _, _, body = await get(node.admin + "/metrics")
    rss: dict[str, float] = {}
    fds: dict[str, float] = {}
    starts: dict[str, float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == "process_resident_memory_bytes":
                rss[s.labels["process"]] = s.value
            elif s.name == "process_open_fds":
                fds[s.labels["process"]] = s.value
            elif s.name == "process_start_time_seconds":
                starts[s.labels["process"]] = s.value
            elif s.name == "process_cpu_seconds_total":
                assert s.value > 0
    assert set(rss) == set(fds) == {"supervisor", "worker-0", "worker-1"}
    assert all(v > 10 << 20 for v in rss.values())  # a Python process holds > 10 MiB
    assert all(v >= 3 for v in fds.values())
    # Each process's own values, not the supervisor's read three times: the workers started
    # after it, and each fd count is that process's.
    assert starts["worker-0"] >= starts["supervisor"] and starts["worker-1"] >= starts["supervisor"]
    for label, pid in (("supervisor", node.proc.pid), ("worker-0", pids[0]), ("worker-1", pids[1])):
        assert abs(fds[label] - len(os.listdir(f"/proc/{pid}/fd"))) <= 2, label
