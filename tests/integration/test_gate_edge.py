"""The go-live gate end to end (issue 15): a real edge node (two workers, `[gate]` on) and the
real takedown service. A customer's site is held (421, or its holding page) until its identity
is checked and its domain validated through the edge; then it is live on every worker; when the
evidence expires it is held again. A roster that fails its signature is refused and the last
good one kept."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy import gate
from proxy.blocklist.format import generate_keypair
from proxy.takedown import accounts
from proxy.takedown.accounts import Role
from proxy.takedown.api import build_app
from proxy.takedown.config import Verification
from proxy.takedown.service import TakedownService
from tests.integration.conftest import raw_request
from tests.integration.node import TOKEN, Node
from tests.takedown.conftest import FakeClock, fast_config

HOLDING = b"<!doctype html><title>Coming soon</title><p>This site is being set up.</p>"
IDENTITY = {
    "legal_name": "Acme Hosting GmbH",
    "address": "Hauptstr. 1, 10115 Berlin",
    "country": "DE",
    "contact_email": "legal@acme.example",
}


def origin_app(challenges: dict[str, bytes]) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=f"hello from {request.host}", headers={"Cache-Control": "max-age=600"}
        )

    async def challenge(request: web.Request) -> web.Response:
        body = challenges.get(request.match_info["token"])
        return web.Response(body=body) if body is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/.well-known/edgeproxy-challenge/{token}", challenge)
    app.router.add_get("/{tail:.*}", page)
    return app


def edge_config(tmp: Path, origin: str, public: Path, roster_dir: Path, poll_s: float) -> Path:
    (tmp / "holding.html").write_bytes(HOLDING)
    cfg = tmp / "edge.toml"
    cfg.write_text(
        f"""
[[sites]]
name = "acme"
hosts = ["a.example"]
origin = "{origin}"

[[sites]]
name = "beta"
hosts = ["b.example"]
origin = "{origin}"
holding_page_file = "{tmp / "holding.html"}"

[gate]
enabled = true
public_key = "{public}"
roster_dir = "{roster_dir}"
poll_interval_s = {poll_s}
"""
    )
    return cfg


async def get(node: Node, host: str, path: str = "/") -> tuple[int, bytes]:
    # A fresh connection each time: successive ones land on either worker.
    async with aiohttp.ClientSession() as s:
        async with s.get(node.url + path, headers={"Host": host}) as r:
            return r.status, await r.read()


@pytest.fixture
async def world(
    origin_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[dict[str, Any]]:
    # By default workers never poll within the test: only the admin's push reaches them.
    poll_s = getattr(request, "param", 3600.0)
    challenges: dict[str, bytes] = {}
    origin = await origin_server(origin_app(challenges))
    private, public = generate_keypair()
    (tmp_path / "key.pem").write_bytes(private)
    (tmp_path / "key.pub").write_bytes(public)
    roster_dir = tmp_path / "roster"
    node = Node(
        [
            "--config",
            str(edge_config(tmp_path, origin, tmp_path / "key.pub", roster_dir, poll_s)),
            "--workers",
            "2",
        ]
    )
    await node.start()
    clock = FakeClock()
    policy = Verification(
        roster_signing_key=str(tmp_path / "key.pem"),
        dcv_http_via=f"127.0.0.1:{node.port}",
        check_interval_s=3600.0,
    )
    svc = TakedownService(
        tmp_path / "takedown.db",
        fast_config(verification=policy),
        edge_urls=[node.admin],
        admin_token=TOKEN,
        clock=clock,
    )
    admin = svc.store.run_sync(accounts.create_account, "desk", Role.ADMIN, clock())
    client = TestClient(TestServer(build_app(svc), host="127.0.0.1"))
    await client.start_server()
    try:
        yield {
            "node": node,
            "svc": svc,
            "client": client,
            "clock": clock,
            "auth": {"Authorization": f"Bearer {admin}"},
            "challenges": challenges,
            "private": private,
            "roster_dir": roster_dir,
        }
    finally:
        await client.close()
        await node.stop()


Call = Callable[..., Awaitable[tuple[int, Any]]]


def caller(w: dict[str, Any]) -> Call:
    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else msgspec.json.encode(body)
        r = await w["client"].request(method, path, data=data, headers=w["auth"])
        return r.status, await r.json()

    return call


async def verify(w: dict[str, Any], expires_in_s: float) -> None:
    call = caller(w)
    assert (await call("POST", "/sites", {"host": "a.example", "customer": "Acme"}))[0] == 200
    assert (await call("PUT", "/customers/Acme/identity", IDENTITY))[0] == 200
    doc = hashlib.sha256(b"register extract").hexdigest()
    status, _ = await call(
        "POST",
        "/customers/Acme/evidence",
        {
            "method": "company-register",
            "document_sha256": doc,
            "expires_at": w["clock"]() + expires_in_s,
        },
    )
    assert status == 201
    # The challenge is fetched through the edge, while the site is still held there.
    status, ch = await call("POST", "/sites/a.example/validations", {"method": "http-01"})
    assert status == 201
    w["challenges"][ch["token"]] = ch["challenge"]["body"].encode()
    status, out = await call("POST", f"/sites/a.example/validations/{ch['id']}/check")
    assert status == 200 and out["state"] == "valid", out


async def delivered(w: dict[str, Any], hosts: list[str], timeout_s: float = 15.0) -> dict[str, Any]:
    """Wait until the service's newest roster names `hosts` and is recorded as taken by the
    edge (whose admin answers only once every worker holds it)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        _, rs = await caller(w)("GET", "/roster")
        if rs["hosts"] == hosts and any(e["delivered_at"] for e in rs["edges"]):
            return dict(rs)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"roster not delivered: {rs}")
        await asyncio.sleep(0.05)


async def all_answer(node: Node, host: str, status: int) -> None:
    """Every worker, now (no waiting): fresh connections land on either."""
    assert [(await get(node, host))[0] for _ in range(10)] == [status] * 10


async def test_site_held_until_verified_then_live_then_held_on_expiry(
    world: dict[str, Any],
) -> None:
    node = world["node"]
    # No roster yet: every host is held; a site with a holding page shows it.
    status, body = await get(node, "a.example")
    assert status == 421 and b"not live" in body
    status, body = await get(node, "b.example")
    assert (status, body) == (503, HOLDING)
    # Only the challenge path itself passes a held site, not a path that leaves it.
    for target in (
        b"/.well-known/edgeproxy-challenge/../../secret",
        b"/.well-known/edgeproxy-challenge/%2e%2e/%2E%2E/secret",
        b"/.well-known/edgeproxy-challengex",
        b"/.WELL-KNOWN/edgeproxy-challenge/t",
    ):
        raw = b"GET " + target + b" HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n"
        answer = await raw_request(node.port, raw)
        assert answer.startswith(b"HTTP/1.1 421 "), (target, answer[:80])
    await verify(world, expires_in_s=3600)
    rs = await delivered(world, ["a.example"])
    await all_answer(node, "a.example", 200)
    status, body = await get(node, "a.example")
    assert body.startswith(b"hello from ")
    assert (await get(node, "b.example"))[0] == 503  # its customer is not verified
    _, edge_gate = await node.admin_json("GET", "/gate")
    assert edge_gate["hosts"] == ["a.example"] and edge_gate["sequence"] == rs["sequence"]
    # A worker that dies is replaced by one that reads the roster before it serves.
    await node.kill_worker_and_wait(0)
    await all_answer(node, "a.example", 200)
    # The evidence expires: the next pass lowers the level and the edge holds the site again,
    # cached copy and remembered hits included, on every worker once the edge has answered.
    world["clock"].advance(3601)
    world["svc"].kyc.roster.kick()
    await delivered(world, [])
    await all_answer(node, "a.example", 421)
    _, site = await caller(world)("GET", "/sites/a.example")
    assert (site["level"], site["live"]) == ("self-declared", False)


@pytest.mark.parametrize("world", [0.05], indirect=True)  # workers poll the directory too
async def test_bad_roster_is_refused_and_last_good_kept(world: dict[str, Any]) -> None:
    node = world["node"]
    await verify(world, expires_in_s=3600)
    await delivered(world, ["a.example"])
    await all_answer(node, "a.example", 200)
    _, held = await node.admin_json("GET", "/gate")
    good = gate.render_roster(held["sequence"] + 1, [], world["private"])
    variants = [
        good.replace(b'"hosts":[]', b'"hosts":["b.example"]'),  # edited after signing
        gate.render_roster(held["sequence"] + 1, [], generate_keypair()[0]),  # another key
        good.split(b"\n")[0] + b"\n",  # unsigned
    ]
    for data in variants:
        status, out = await node.admin_json("PUT", "/gate/roster", {"roster": data.decode()})
        assert status == 400, out
    older = gate.render_roster(held["sequence"] - 1, [], world["private"])
    status, _ = await node.admin_json("PUT", "/gate/roster", {"roster": older.decode()})
    assert status == 409
    # A bad file dropped straight into the directory is refused by every worker too.
    bad = variants[0]
    (world["roster_dir"] / gate.roster_filename(held["sequence"] + 5)).write_bytes(bad)
    for _ in range(10):
        assert (await get(node, "a.example"))[0] == 200
        assert (await get(node, "b.example"))[0] == 503
    _, after = await node.admin_json("GET", "/gate")
    assert after["sequence"] == held["sequence"] and after["hosts"] == ["a.example"]
