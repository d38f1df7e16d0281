"""Fixtures: a fake clock, fake edge admin APIs on 127.0.0.1, and the service under test."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.takedown import accounts
from proxy.takedown.accounts import Role, Verification
from proxy.takedown.api import build_app
from proxy.takedown.config import Publish, TakedownConfig
from proxy.takedown.service import TakedownService

TOKEN = "edge-admin-token"
# Monday 2026-01-05 10:00 UTC
T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC).timestamp()


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeEdge:
    """Behaves like the edge admin API: answers once the version is 'enforced'."""

    clock: FakeClock
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    down: bool = False
    log: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""
    audit_heads: list[dict[str, Any]] = field(default_factory=list)  # as sent with each change

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/blocklist/entries", self.post)
        app.router.add_delete("/blocklist/entries/{id}", self.delete)
        app.router.add_get("/blocklist", self.get)
        return app

    def _check(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized()
        if self.down:
            raise web.HTTPServiceUnavailable()
        if head := request.headers.get("X-Edgeproxy-Audit-Head"):
            self.audit_heads.append(json.loads(head))

    def _ack(self) -> web.Response:
        self.version += 1
        return web.json_response(
            {
                "version": self.version,
                "applied_at": self.clock(),
                "workers": [{"pid": 1, "version": self.version}],
            }
        )

    async def post(self, request: web.Request) -> web.Response:
        self._check(request)
        body = await request.json()
        for e in body["entries"]:
            assert set(e) >= {"id", "type", "value", "notice", "reason"}
            self.entries[e["id"]] = e
            self.log.append(("POST", e["id"]))
        return self._ack()

    async def delete(self, request: web.Request) -> web.Response:
        self._check(request)
        eid = request.match_info["id"]
        self.log.append(("DELETE", eid))
        if self.entries.pop(eid, None) is None:
            raise web.HTTPNotFound()
        return self._ack()

    async def get(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.json_response({"version": self.version, "entries": len(self.entries)})


@dataclass
class Env:
    svc: TakedownService
    client: TestClient[web.Request, web.Application]
    clock: FakeClock
    edges: list[FakeEdge]
    keys: dict[str, str]
    db: Path

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def post(self, path: str, who: str, body: Any) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        r = await self.client.post(path, data=data, headers=self.auth(who))
        return r.status, await r.json()

    async def get(self, path: str, who: str = "operator") -> tuple[int, Any]:
        r = await self.client.get(path, headers=self.auth(who))
        return r.status, await r.json()

    async def wait_state(self, case: int, *states: str, timeout_s: float = 5.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            _, view = await self.get(f"/cases/{case}")
            if view["state"] in states:
                return dict(view)
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"case {case} stuck in {view['state']}: {view}")
            await asyncio.sleep(0.02)


def notice(*targets: dict[str, str], basis: str = "cache", **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "complainant": {
            "name": "Rights Org",
            "email": "legal@rights.example",
            "address": "1 Main St",
            "phone": "+1 555 0100",
        },
        "works": [{"title": "Song A"}],
        "targets": list(targets) or [{"url": "https://cdn.example/a.mp3"}],
        "legal_basis": basis,
        "statements": {"good_faith": True, "accurate": True},
        "signature": "R. Holder",
    }
    doc.update(over)
    return doc


def fast_config(**over: Any) -> TakedownConfig:
    cfg = TakedownConfig(
        publish=Publish(retry_initial_s=0.02, retry_max_s=0.1, request_timeout_s=2.0)
    )
    return msgspec.structs.replace(cfg, **over) if over else cfg


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[MakeEnv]:
    started: list[tuple[TestClient[web.Request, web.Application], list[TestServer]]] = []

    async def make(n_edges: int = 2, cfg: TakedownConfig | None = None) -> Env:
        clock = FakeClock()
        edges = [FakeEdge(clock) for _ in range(n_edges)]
        servers = []
        for e in edges:
            srv = TestServer(e.app(), host="127.0.0.1")
            await srv.start_server()
            e.url = str(srv.make_url("")).rstrip("/")
            servers.append(srv)
        db = tmp_path / f"takedown{len(started)}.sqlite"
        svc = TakedownService(
            db,
            cfg or fast_config(),
            edge_urls=[e.url for e in edges],
            admin_token=TOKEN,
            clock=clock,
        )
        keys = {
            r.value: svc.store.run_sync(accounts.create_account, r.value, r, clock())
            for r in Role
            if r is not Role.CUSTOMER
        }
        keys["submitter2"] = svc.store.run_sync(
            accounts.create_account, "other", Role.SUBMITTER, clock()
        )
        svc.store.run_sync(
            accounts.add_site,
            "cdn.example",
            "Acme",
            clock(),
            Verification.VERIFIED_ENTITY,
            "company registry",
        )
        svc.store.run_sync(accounts.add_site, "shady.example", "Shady", clock(), None, None)
        # The customer whose site cdn.example the default notice targets, and another one.
        keys["customer"] = svc.store.run_sync(
            accounts.create_account, "acme", Role.CUSTOMER, clock(), "Acme"
        )
        keys["customer2"] = svc.store.run_sync(
            accounts.create_account, "shady", Role.CUSTOMER, clock(), "Shady"
        )
        client = TestClient(TestServer(build_app(svc), host="127.0.0.1"))
        await client.start_server()
        started.append((client, servers))
        return Env(svc, client, clock, edges, keys, db)

    yield make
    for client, servers in started:
        await client.close()
        for s in servers:
            await s.close()
