"""Issue 14: a real edge keeps the takedown service's signed audit-log head. The service
publishes a case both into the blocklist directory the edge follows (the head in the version's
header) and over the edge's admin API (the head in a request header); the edge shows the last
head it received in GET /blocklist and /status, and it is the head the service signed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.blocklist.format import generate_keypair, read_version, version_filename, write_version
from proxy.blocklist.model import Entry, EntryType
from proxy.takedown import accounts, anchor
from proxy.takedown.accounts import Role
from proxy.takedown.api import build_app
from proxy.takedown.publisher import FileDrop
from proxy.takedown.service import TakedownService
from tests.integration.node import TOKEN, Node
from tests.takedown.conftest import FakeClock, fast_config


def origin_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="content")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def test_edge_keeps_the_signed_head(origin_server, tmp_path: Path) -> None:
    private, public = generate_keypair()
    (tmp_path / "k.pub").write_bytes(public)
    bdir = tmp_path / "lists"
    bdir.mkdir()
    old = Entry("old", EntryType.URL, "http://127.0.0.1/old", "OLD", "imported")
    write_version(bdir / version_filename(1), 1, [old], private_key_pem=private)
    origin = await origin_server(origin_app())
    edge = Node.on_dir(origin, bdir, tmp_path / "k.pub")
    await edge.start()
    clock = FakeClock()
    db = tmp_path / "td.db"
    svc = TakedownService(
        db,
        fast_config(),
        edge_urls=[edge.admin],
        admin_token=TOKEN,
        clock=clock,
        file_drop=FileDrop(bdir, private),
    )
    key = svc.store.run_sync(accounts.create_account, "JMPA", Role.TRUSTED, clock())
    svc.store.run_sync(accounts.add_site, f"127.0.0.1:{edge.port}", "reader", clock(), None, None)
    client = TestClient(TestServer(build_app(svc), host="127.0.0.1"))
    await client.start_server()
    try:
        notice = {
            "complainant": {"name": "Rights Holder KK", "email": "legal@example.jp"},
            "works": [{"title": "Manga vol. 1"}],
            "targets": [{"url": f"{edge.url}/manga/ch1"}],
            "legal_basis": "hosted",
            "statements": {"good_faith": True, "accurate": True},
            "signature": "Taro Yamada",
        }
        auth = {"Authorization": f"Bearer {key}"}
        r = await client.post("/notices", json=notice, headers=auth)
        assert r.status == 201, await r.text()
        case = (await r.json())["case"]
        for _ in range(200):
            r = await client.get(f"/cases/{case}", headers=auth)
            if (await r.json())["state"] == "enforced":
                break
            await asyncio.sleep(0.05)
        # The version the service wrote carries the head it signed as it published.
        written = read_version(bdir / version_filename(2), public, max_bytes=1 << 20)
        assert written.audit_head is not None
        head = anchor.SignedHead(**written.audit_head)  # type: ignore[arg-type]
        # Signed with the service's signing key (no [anchor] key of its own configured).
        assert anchor.verify_head(head, anchor.public_key_of(public)) is None
        lines = Path(f"{db}.heads.jsonl").read_bytes().splitlines()
        assert any(json.loads(line)["signature"] == head.signature for line in lines)
        # The edge keeps it (from the file or the push, whichever came last) and shows it.
        for _ in range(100):
            status, body = await edge.admin_json("GET", "/blocklist")
            if (body.get("audit_head") or {}).get("seq") == head.seq:
                break
            await asyncio.sleep(0.05)
        kept = body["audit_head"]
        assert kept["signature"] == head.signature and kept["via"] in ("push", "file:2"), kept
        _, st = await edge.admin_json("GET", "/status")
        assert st["audit_head"]["signature"] == head.signature
        # On disk with the change that brought it; audit-head.json follows off the answer's path.
        on_disk = Path(edge.state_dir, "audit-head.json")
        for _ in range(100):
            if on_disk.exists() and json.loads(on_disk.read_text())["seq"] == head.seq:
                break
            await asyncio.sleep(0.05)
        assert json.loads(on_disk.read_text())["seq"] == head.seq
    finally:
        await client.close()
        await edge.stop()
