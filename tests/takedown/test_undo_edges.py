"""Issue 14, undo on real edges: two edge nodes (`edgeproxy serve` subprocesses), the takedown
service, an SMTP server (aiosmtpd) and a webhook receiver, all on 127.0.0.1.

A URL cached on both edges answers 451 on both once the case is enforced, and 200 again on
both after the operator reverses the decision on the customer's internal complaint; the
customer gets the takedown and the reversal by email and by signed webhook, the complainant by
email. Withdrawal after enforcement and a lifted suspension reach both edges the same way.

With EDGEPROXY_TIMELINE_DOC=PATH the first test writes the case's full timeline, the email and
the webhook it delivered, as Markdown (docs/takedown-timeline.md is that output)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.takedown import accounts, casefile, notify
from proxy.takedown.accounts import Role, Verification
from proxy.takedown.api import build_app
from proxy.takedown.config import Strikes
from proxy.takedown.service import TakedownService
from tests.integration.node import TOKEN, Node
from tests.takedown.conftest import fast_config
from tests.takedown.test_notify import Mailbox, notify_config, smtp  # noqa: F401 (fixture)

SITE = "cdn.example"
PAGE = "/manga/ch1"


@dataclass
class Hook:
    """A webhook receiver that keeps each delivery's headers and body after checking the
    HMAC signature."""

    secret: str = ""
    url: str = ""
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        want = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Edgeproxy-Signature", ""), want):
            return web.Response(status=401)
        self.got.append((dict(request.headers), body))
        return web.Response(status=204)

    def events(self) -> list[str]:
        return [json.loads(b)["event"] for _, b in self.got]


@dataclass
class Rig:
    edges: list[Node]
    svc: TakedownService
    client: TestClient[web.Request, web.Application]
    keys: dict[str, str]
    hook: Hook
    box: Mailbox

    async def call(self, method: str, path: str, who: str, body: Any = None) -> tuple[int, Any]:
        r = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {self.keys[who]}"}
        )
        return r.status, await r.json()

    async def until(self, case: int, event: str, timeout_s: float = 15.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                _, view = await self.call("GET", f"/cases/{case}", "operator")
                if any(e["event"] == event for e in view["timeline"]):
                    return dict(view)
                await asyncio.sleep(0.05)

    async def statuses(self, path: str, host: str = SITE) -> list[int]:
        """The status each edge answers on a fresh connection."""
        out = []
        for edge in self.edges:
            async with aiohttp.ClientSession() as s:
                async with s.get(edge.url + path, headers={"Host": host}) as r:
                    await r.read()
                    out.append(r.status)
        return out


def origin_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=f"content of {request.path}", headers={"Cache-Control": "max-age=600"}
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


@pytest.fixture
async def rig(tmp_path: Path, smtp: tuple[Mailbox, int]) -> AsyncIterator[Rig]:  # noqa: F811
    box, smtp_port = smtp
    origin_runner = web.AppRunner(origin_app(), access_log=None)
    await origin_runner.setup()
    origin_site = web.TCPSite(origin_runner, "127.0.0.1", 0)
    await origin_site.start()
    origin = f"http://127.0.0.1:{origin_site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    edges = [Node(["--origin", origin, "--workers", "1"]) for _ in range(2)]
    hook = Hook()
    hook_server = TestServer(_hook_app(hook), host="127.0.0.1")
    await hook_server.start_server()
    hook.url = str(hook_server.make_url("/hook"))
    client = None
    try:
        await asyncio.gather(*(e.start() for e in edges))
        cfg = fast_config(
            notify=notify_config(smtp_port),
            strikes=Strikes(unverified_warn_at=1, unverified_suspend_at=1),
        )
        svc = TakedownService(
            tmp_path / "takedown.db", cfg, edge_urls=[e.admin for e in edges], admin_token=TOKEN
        )
        keys = _accounts(svc, hook)
        client = TestClient(TestServer(build_app(svc), host="127.0.0.1"))
        await client.start_server()
        yield Rig(edges, svc, client, keys, hook, box)
    finally:
        if client is not None:
            await client.close()
        await asyncio.gather(*(e.stop() for e in edges))
        await hook_server.close()
        await origin_runner.cleanup()


def _hook_app(hook: Hook) -> web.Application:
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    return app


def _accounts(svc: TakedownService, hook: Hook) -> dict[str, str]:
    now = time.time()
    run = svc.store.run_sync
    run(accounts.add_site, SITE, "Acme Hosting", now, Verification.VERIFIED_ENTITY, "registry")
    run(accounts.add_site, "shady.example", "Shady", now, None, None)
    keys = {
        "submitter": run(accounts.create_account, "Label KK", Role.SUBMITTER, now),
        "operator": run(accounts.create_account, "Desk", Role.OPERATOR, now),
        "customer": run(accounts.create_account, "acme", Role.CUSTOMER, now, "Acme Hosting"),
    }

    def contact(conn: Any) -> str | None:
        cid = conn.execute("SELECT id FROM customers WHERE name = 'Acme Hosting'").fetchone()[0]
        return notify.set_contact(
            conn, "customer", cid, now, email="abuse@acme.example", webhook_url=hook.url
        )

    hook.secret = run(contact) or ""
    return keys


def notice(url: str) -> dict[str, Any]:
    return {
        "complainant": {"name": "Label KK", "email": "legal@label.example"},
        "works": [{"title": "Manga vol. 1, chapter 1"}],
        "targets": [{"url": url}],
        "legal_basis": "hosted",
        "statements": {"good_faith": True, "accurate": True},
        "signature": "Taro Yamada",
    }


def mails(box: Mailbox, to: str) -> list[EmailMessage]:
    return box.to(to)


async def test_reversal_reaches_both_edges(rig: Rig) -> None:
    assert await rig.statuses(PAGE) == [200, 200]  # cached on both edges
    status, body = await rig.call("POST", "/notices", "submitter", notice(f"http://{SITE}{PAGE}"))
    assert status == 201, body
    case = body["case"]
    status, _ = await rig.call(
        "POST", f"/cases/{case}/decision", "operator", {"decision": "action", "reason": "ok"}
    )
    assert status == 200
    await rig.until(case, "enforced")
    assert await rig.statuses(PAGE) == [451, 451]
    status, out = await rig.call(
        "POST", f"/cases/{case}/complaint", "customer", {"statement": "we hold a licence"}
    )
    assert status == 201 and out["party"] == "customer"
    status, out = await rig.call(
        "POST", f"/cases/{case}/reverse", "operator", {"statement": "licence verified"}
    )
    assert status == 200 and out["state"] == "reversed" and out["complaints_upheld"] == [1]
    view = await rig.until(case, "reversal_enforced")
    assert await rig.statuses(PAGE) == [200, 200]
    assert sorted(e["edge"] for e in view["lift_edges"]) == sorted(e.admin for e in rig.edges)
    assert all(e["enforced_at"] >= view["ended"]["at"] for e in view["lift_edges"])

    # Every party was told, and each delivery is on the case.
    async with asyncio.timeout(15):
        while not (
            len(mails(rig.box, "abuse@acme.example")) == 2
            and len(mails(rig.box, "legal@label.example")) == 2
            and rig.hook.events() == ["takedown", "reversal"]
            and _sent(rig, case) == 6
        ):
            await asyncio.sleep(0.05)
    takedown, reversal = mails(rig.box, "abuse@acme.example")
    assert "disabled" in takedown["Subject"] and "reversed" in reversal["Subject"]
    assert "licence verified" in reversal.get_content()
    _, view = await rig.call("GET", f"/cases/{case}", "operator")
    events = [e["event"] for e in view["timeline"]]
    order = ["received", "under_review", "decided", "actioned", "published", "enforced"]
    order += ["complaint_received", "reversed", "decision_reversed", "reversal_enforced"]
    assert [e for e in events if e in order] == order
    assert events.count("edge_enforced") == 2 and events.count("edge_removed") == 2
    sent = {
        (e["data"]["kind"], e["data"]["channel"])
        for e in view["timeline"]
        if e["event"] == "notification_sent"
    }
    assert sent == {
        ("receipt", "email"),
        ("takedown", "email"),
        ("takedown", "webhook"),
        ("reversal", "email"),
        ("reversal", "webhook"),
    }
    doc = _document(rig, view, reversal)
    for line in ("| reversed | operator:", "| reversal_enforced | system |", "| lift | "):
        assert line in doc, line
    assert "X-Edgeproxy-Signature: sha256=" in doc and "Subject: The decision on case" in doc
    if target := os.environ.get("EDGEPROXY_TIMELINE_DOC"):
        Path(target).write_text(doc, encoding="utf-8")


def _sent(rig: Rig, case: int) -> int:
    return int(
        rig.svc.store.run_sync(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM audit_log WHERE case_id = ? AND event = 'notification_sent'",
                (case,),
            ).fetchone()[0]
        )
    )


def _document(rig: Rig, view: dict[str, Any], mail: EmailMessage) -> str:
    headers, body = rig.hook.got[-1]
    shown = {k: v for k, v in headers.items() if k.startswith("X-Edgeproxy") or k == "Content-Type"}
    edges = ", ".join(f"{e.url} (admin {e.admin})" for e in rig.edges)
    return "\n".join(
        [
            "# A takedown case's full timeline, with a reversal",
            "",
            "Generated by `EDGEPROXY_TIMELINE_DOC=docs/takedown-timeline.md PYTHONPATH=$PWD"
            " pytest -q tests/takedown/test_undo_edges.py::test_reversal_reaches_both_edges`:"
            f" two real edge nodes ({edges}), the takedown service, aiosmtpd and a webhook"
            " receiver on 127.0.0.1. The same record of any case comes from"
            " `edgeproxy takedown case --db DB --case N --format md`.",
            "",
            f"`GET {PAGE}` with `Host: {SITE}` answered 200 on both edges before the notice,"
            " 451 on both once the case was enforced, and 200 on both after the reversal.",
            "",
            casefile.markdown(view).replace("# Case", "## Case", 1),
            "## The reversal as delivered by email (aiosmtpd)",
            "",
            "```",
            "".join(f"{k}: {v}\n" for k, v in mail.items() if k in ("From", "To", "Subject")),
            mail.get_content().rstrip(),
            "```",
            "",
            "## The reversal as delivered by webhook",
            "",
            "```",
            "".join(f"{k}: {v}\n" for k, v in sorted(shown.items())),
            json.dumps(msgspec.json.decode(body), indent=2),
            "```",
            "",
        ]
    )


async def test_withdrawal_and_unsuspension_reach_both_edges(rig: Rig) -> None:
    # Withdrawal after enforcement ends the block (the statement of reasons promised it).
    url = f"http://{SITE}/chapter/2"
    assert await rig.statuses("/chapter/2") == [200, 200]
    _, body = await rig.call("POST", "/notices", "submitter", notice(url))
    await rig.call(
        "POST",
        f"/cases/{body['case']}/decision",
        "operator",
        {"decision": "action", "reason": "ok"},
    )
    await rig.until(body["case"], "enforced")
    assert await rig.statuses("/chapter/2") == [451, 451]
    status, out = await rig.call("POST", f"/cases/{body['case']}/withdraw", "submitter", {})
    assert status == 200 and out["state"] == "withdrawn"
    await rig.until(body["case"], "withdrawal_enforced")
    assert await rig.statuses("/chapter/2") == [200, 200]

    # One strike suspends the unverified site: the whole host is 451 on both edges, until the
    # operator lifts the suspension; the page-level block stays.
    assert await rig.statuses("/other", "shady.example") == [200, 200]
    _, body = await rig.call("POST", "/notices", "submitter", notice("http://shady.example/x"))
    await rig.call(
        "POST",
        f"/cases/{body['case']}/decision",
        "operator",
        {"decision": "action", "reason": "ok"},
    )
    await rig.until(body["case"], "suspension_enforced")
    assert await rig.statuses("/other", "shady.example") == [451, 451]
    status, out = await rig.call(
        "POST", "/sites/shady.example/unsuspend", "operator", {"statement": "customer verified"}
    )
    assert status == 200, out
    await rig.until(body["case"], "unsuspension_enforced")
    assert await rig.statuses("/other", "shady.example") == [200, 200]
    assert await rig.statuses("/x", "shady.example") == [451, 451]
