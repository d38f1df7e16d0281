"""A small NodeView for admin API tests: the real admin app on a real 127.0.0.1 socket, in front
of a node whose workers' reports the test sets. What the admin does with requests (refuse, read,
pass on) is what these tests see; the node behind it is not the point."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiohttp import web

from proxy.admin.app import start_admin
from proxy.blocklist.pin import Pinner
from proxy.config import AdminConfig, Config, Site
from proxy.metrics import WorkerStats
from proxy.node.control import BlocklistReport, CacheReport, StatsReply
from proxy.node.health import NodeHealth

TOKEN = "fake-node-token"


@dataclass
class FakeBlocklist:
    version: int = 1
    applied_at: float = 1.0
    file_sequence: int | None = None
    reload_failures: int = 0
    last_errors: list[str] = field(default_factory=list)
    pushed: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    audit_head: dict[str, Any] | None = None
    compiles: int = 0
    tables_shipped: int = 0
    table_rejections: dict[str, int] = field(default_factory=dict)
    loading: dict[str, Any] | None = None  # what loading_status answers (a compile running)
    pinner: Pinner = field(default_factory=lambda: Pinner(enabled=False))

    def loading_status(self, now: float | None = None) -> dict[str, Any] | None:
        return self.loading

    def keep_audit_head(self, head: dict[str, Any] | None, via: str) -> None:
        if head is not None:
            self.audit_head = {**head, "via": via}

    def counts(self) -> dict[str, int]:
        return {"url": len(self.pushed), "prefix": 0, "host": 0, "sha256": 0}

    def stale_since(self, now: float | None = None) -> float | None:
        return None

    def known(self, entry_id: str) -> bool:
        return entry_id in self.pushed

    async def push(
        self, raw_entries: list[dict[str, Any]], audit_head: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        for e in raw_entries:
            self.pushed[e["id"]] = e
        self.keep_audit_head(audit_head, "push")
        self.version += 1
        return {"version": self.version, "applied_at": time.time(), "workers": []}

    async def remove(
        self, entry_id: str, audit_head: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        self.keep_audit_head(audit_head, "remove")
        if self.pushed.pop(entry_id, None) is None:
            return None
        self.version += 1
        return {"version": self.version, "applied_at": time.time(), "workers": []}


def report(worker: int, sites: list[str], *, version: int = 1, hits: int = 1) -> StatsReply:
    ws = WorkerStats(sites)
    for _ in range(hits):
        ws.observe(0, 0, 0, 100, 0.001)  # site 0, GET, hit
    return StatsReply(
        pid=1000 + worker,
        worker=worker,
        stats=msgspec.json.decode(msgspec.json.encode(ws.snapshot())),  # as it crosses the wire
        cache=CacheReport(objects=1, bytes=10, max_bytes=100, evictions=0, purged=0),
        connections=0,
        blocklist=BlocklistReport(version=version, applied_at=1.0, counts={}),
        coalescing_waiters=0,
        origin_requests=0,
        started_at=1.0,
    )


@dataclass
class FakeNode:
    cfg: Config
    admin_token: str = TOKEN
    restarts: int = 0
    tls_reload_failures: int = 0
    started_at: float = field(default_factory=time.time)
    retired_stats: dict[str, Any] | None = None
    blocklist: FakeBlocklist = field(default_factory=FakeBlocklist)
    reports: list[StatsReply] = field(default_factory=list)
    node_health: NodeHealth = NodeHealth(
        wanted=1, running=1, listening=1, behind_config=[], config_generation=0
    )
    purges: list[dict[str, str]] = field(default_factory=list)

    async def gather_stats(self, timeout_s: float = 2.0) -> list[StatsReply]:
        return list(self.reports)

    def health(self) -> NodeHealth:
        return self.node_health

    async def purge(self, *, url: str = "", prefix: str = "", host: str = "") -> tuple[int, int]:
        self.purges.append({"url": url, "prefix": prefix, "host": host})
        return 1, 1


@dataclass
class Admin:
    node: FakeNode
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def make_admin() -> AsyncIterator[Any]:
    """`await make_admin(**admin_config_fields)`: the admin API of a FakeNode, listening."""
    runners: list[web.AppRunner] = []

    async def start(*, sites: list[str] | None = None, **fields: Any) -> Admin:
        port = _free_port()
        admin = AdminConfig(listen=f"127.0.0.1:{port}", **fields)
        names = sites or ["a"]
        cfg = Config(
            admin=admin,
            sites=[Site(name=n, hosts=[f"{n}.test"], origin="http://127.0.0.1:9") for n in names],
        )
        node = FakeNode(cfg, reports=[report(0, names)])
        runners.append(await start_admin(node))
        return Admin(node, port)

    yield start
    for r in runners:
        await r.cleanup()
