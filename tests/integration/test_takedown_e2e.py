"""End to end on one machine: a trusted submitter's notice for a cached URL and for a content
digest; the edge (a real node with two workers) answers 451 for both, and the case shows every
timestamp, enforced within 2 s of the notice."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time

import aiohttp
from aiohttp import web

from tests.integration.conftest import free_port
from tests.integration.node import TOKEN, Node

IMAGE = b"\x89PNG pirated page scan " * 100


def origin_app() -> web.Application:
    async def chapter(request: web.Request) -> web.Response:
        return web.Response(text="chapter 1", headers={"Cache-Control": "max-age=600"})

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=IMAGE, headers={"Cache-Control": "max-age=600"})

    app = web.Application()
    app.router.add_get("/manga/ch1", chapter)
    app.router.add_get("/img/{name}", image)
    app.router.add_get("/mirror/{name}", image)
    return app


async def run_cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_trusted_notice_enforced_on_every_worker_within_2s(origin_server, tmp_path) -> None:
    origin = await origin_server(origin_app())
    edge = Node(["--origin", origin, "--workers", "2"])
    await edge.start()
    db = str(tmp_path / "takedown.db")
    key = (await run_cli("takedown", "add-account", "--db", db, "--name", "JMPA", "--role", "trusted"))
    key = key.strip().splitlines()[-1]
    await run_cli("takedown", "add-site", "--db", db, "--host", f"127.0.0.1:{edge.port}",
                  "--customer", "pirate-reader")
    port = free_port()
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", "takedown", "serve", "--listen", f"127.0.0.1:{port}",
        "--db", db, "--edge", edge.admin,
        env={**os.environ, "EDGEPROXY_ADMIN_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert service.stdout is not None
        async with asyncio.timeout(15):
            while b"listening" not in (await service.stdout.readline()):
                pass
        async with aiohttp.ClientSession() as s:
            # The content is cached on the edge before the notice arrives.
            for path in ("/manga/ch1", "/img/a.png"):
                for _ in range(4):
                    async with s.get(edge.url + path) as r:
                        assert r.status == 200
            notice = {
                "complainant": {"name": "Rights Holder KK", "email": "legal@example.jp"},
                "works": [{"title": "Manga vol. 1"}],
                "targets": [
                    {"url": f"{edge.url}/manga/ch1"},
                    {"sha256": hashlib.sha256(IMAGE).hexdigest()},
                ],
                "legal_basis": "hosted",
                "statements": {"good_faith": True, "accurate": True},
                "signature": "Taro Yamada",
            }
            sent = time.time()
            async with s.post(
                f"http://127.0.0.1:{port}/notices", json=notice,
                headers={"Authorization": f"Bearer {key}"},
            ) as r:
                assert r.status == 201, await r.text()
                created = await r.json()
            case_url = f"http://127.0.0.1:{port}/cases/{created['case']}"
            case: dict = {}
            for _ in range(40):
                async with s.get(case_url, headers={"Authorization": f"Bearer {key}"}) as r:
                    case = await r.json()
                if case["state"] == "enforced":
                    break
                await asyncio.sleep(0.05)
            assert case["state"] == "enforced", case
            events = [e["event"] for e in case["timeline"]]
            for step in ("received", "actioned", "published", "enforced"):
                assert any(step in e for e in events), events
            [edge_ack] = case["edges"]
            assert edge_ack["edge"].rstrip("/") == edge.admin
            assert edge_ack["enforced_at"] - sent < 2.0
            # Every worker enforces both entries: fresh connections land on either.
            for _ in range(8):
                for path in ("/manga/ch1", "/img/a.png", "/mirror/b.png"):
                    async with aiohttp.ClientSession() as fresh:
                        async with fresh.get(edge.url + path) as r:
                            assert r.status == 451, (path, r.status)
                            assert "no-store" in r.headers["Cache-Control"]
    finally:
        service.terminate()
        await service.wait()
        await edge.stop()
