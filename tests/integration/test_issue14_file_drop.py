"""Issue 14: the takedown service's file drop must never erase what other publishers listed.

A real edge follows a directory already holding a 50,000-entry list; the real service (in this
process, on a fake clock so the put-back's business days pass at once) actions a case into the
same directory; an operator signs a version with the CLI in between. The edge keeps answering
451 for the old list, the case's URL and the operator's entry; the put-back removes only the
case's entry."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.blocklist.format import generate_keypair, version_filename, write_version
from proxy.blocklist.model import Entry, EntryType
from proxy.takedown import accounts
from proxy.takedown.accounts import Role
from proxy.takedown.api import build_app
from proxy.takedown.publisher import FileDrop
from proxy.takedown.service import TakedownService
from tests.integration.node import Node
from tests.takedown.conftest import FakeClock, fast_config

OLD = 50_000


def origin_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"content of {request.path}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def status(url: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status


async def eventually_status(url: str, want: int, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (got := await status(url)) != want:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{url}: {got}, expected {want}")
        await asyncio.sleep(0.1)


async def run_cli(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


async def test_issue14_file_drop_keeps_a_50k_list_enforced(origin_server, tmp_path: Path) -> None:
    private, public = generate_keypair()
    (tmp_path / "k.pem").write_bytes(private)
    (tmp_path / "k.pub").write_bytes(public)
    bdir = tmp_path / "lists"
    bdir.mkdir()
    write_version(
        bdir / version_filename(1),
        1,
        [
            Entry(f"old-{i}", EntryType.URL, f"http://127.0.0.1/old/{i}", "OLD", "imported")
            for i in range(OLD)
        ],
        private_key_pem=private,
    )
    origin = await origin_server(origin_app())
    edge = Node.on_dir(origin, bdir, tmp_path / "k.pub")
    await edge.start(timeout_s=60)
    clock = FakeClock()
    svc = TakedownService(
        tmp_path / "td.db",
        fast_config(),
        edge_urls=[],
        admin_token="",
        clock=clock,
        file_drop=FileDrop(bdir, private),
    )
    key = svc.store.run_sync(accounts.create_account, "JMPA", Role.TRUSTED, clock())
    svc.store.run_sync(accounts.add_site, f"127.0.0.1:{edge.port}", "reader", clock(), None, None)
    client = TestClient(TestServer(build_app(svc), host="127.0.0.1"))
    await client.start_server()
    auth = {"Authorization": f"Bearer {key}"}
    sample = random.Random(14).sample(range(OLD), 20)
    try:
        for i in sample[:3]:
            assert await status(f"{edge.url}/old/{i}") == 451
        assert await status(f"{edge.url}/manga/ch1") == 200
        notice = {
            "complainant": {"name": "Rights Holder KK", "email": "legal@example.jp"},
            "works": [{"title": "Manga vol. 1"}],
            "targets": [{"url": f"{edge.url}/manga/ch1"}],
            "legal_basis": "hosted",
            "statements": {"good_faith": True, "accurate": True},
            "signature": "Taro Yamada",
        }
        r = await client.post("/notices", json=notice, headers=auth)
        assert r.status == 201, await r.text()
        case = (await r.json())["case"]
        await eventually_status(f"{edge.url}/manga/ch1", 451)
        for i in sample:
            assert await status(f"{edge.url}/old/{i}") == 451, i
        # An operator signs a version with the CLI between two of the service's.
        (tmp_path / "cli.jsonl").write_text(
            '{"id":"cli-1","type":"url","value":"http://127.0.0.1/cli/one"}\n'
        )
        await run_cli(
            "blocklist",
            "sign",
            "--key",
            str(tmp_path / "k.pem"),
            "--sequence",
            "3",
            "--base",
            "2",
            str(tmp_path / "cli.jsonl"),
            str(bdir / version_filename(3)),
        )
        await eventually_status(f"{edge.url}/cli/one", 451)
        # The put-back: a counter-notice, then the business days pass.
        counter = {
            "subscriber": {"name": "O", "address": "A", "phone": "1"},
            "material": [{"url": f"{edge.url}/manga/ch1"}],
            "signature": "O",
            "statements": {
                "good_faith_mistake": True,
                "consent_to_jurisdiction": True,
                "accept_service": True,
            },
        }
        op = svc.store.run_sync(accounts.create_account, "desk", Role.OPERATOR, clock())
        r = await client.post(
            f"/cases/{case}/counter-notice", json=counter, headers={"Authorization": f"Bearer {op}"}
        )
        assert r.status == 201, await r.text()
        clock.now = (await r.json())["restore"]["restore_at"]
        await svc.run_due()
        await eventually_status(f"{edge.url}/manga/ch1", 200)
        assert await status(f"{edge.url}/cli/one") == 451
        for i in sample:
            assert await status(f"{edge.url}/old/{i}") == 451, i
        assert sorted(p.name for p in bdir.glob("*.jsonl")) == [
            version_filename(n) for n in (1, 2, 3, 4)
        ]
    finally:
        await client.close()
        await edge.stop()
