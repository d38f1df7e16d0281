"""The console's actions call the service's own functions and show refusals on the page:
decide (reasons required; a second decision is a conflict), record a counter-notice for the
customer (the API's 512(g)(3) checks), report the complainant's lawsuit; and
`edgeproxy takedown serve --desk-listen` serves the desk beside the API."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from proxy.takedown.accounts import Account
from proxy.takedown.service import TakedownService
from tests.integration.conftest import free_port
from tests.takedown.desk.conftest import PASSWORD, MakeDesk, notice_doc
from tests.takedown.desk.test_desk_security import client, csrf_of, sign_in

COUNTER = {
    "subscriber_name": "Acme Hosting",
    "subscriber_address": "2 Side St",
    "subscriber_phone": "+1 555 0101",
    "material": "https://cdn.example/a.mp3",
    "signature": "A. Customer",
    "good_faith_mistake": "yes",
    "consent_to_jurisdiction": "yes",
    "accept_service": "yes",
}


async def post(s: aiohttp.ClientSession, url: str, data: dict[str, str]) -> tuple[int, str]:
    origin = url.split("/desk/", 1)[0]
    token = await csrf_of(s, f"{origin}/desk/")  # the session's token, the same on every page
    async with s.post(url, data={"csrf": token, **data}, allow_redirects=False) as r:
        return r.status, await r.text()


async def test_decide_reasons_conflicts_counter_notice_and_lawsuit(make_desk: MakeDesk) -> None:
    d = await make_desk()
    case = (await d.notice(notice_doc()))["case"]
    base = f"{d.url}/desk/cases/{case}"
    async with client() as s:
        await sign_in(s, d, "operator")
        status, page = await post(s, f"{base}/decision", {"decision": "action", "reason": " "})
        assert status == 400 and "statement of reasons" in page
        status, _ = await post(s, f"{base}/decision", {"decision": "maybe", "reason": "x"})
        assert status == 400
        assert (await d.case(case))["state"] == "under_review"
        status, _ = await post(s, f"{base}/decision", {"decision": "action", "reason": "copies"})
        assert status == 303
        view = await d.case(case)
        assert view["decision"] == "action" and view["decision_reason"] == "copies"
        assert any(
            e["actor"].startswith("operator:") for e in view["timeline"] if e["event"] == "decided"
        )
        status, page = await post(s, f"{base}/decision", {"decision": "reject", "reason": "x"})
        assert status == 409 and "only validated or under_review" in page
        # A counter-notice lacking an element is refused with what it lacks, values kept.
        status, page = await post(
            s, f"{base}/counter-notice", {k: v for k, v in COUNTER.items() if k != "accept_service"}
        )
        assert status == 422 and "statements.accept_service" in page and "Acme Hosting" in page
        status, _ = await post(s, f"{base}/counter-notice", COUNTER)
        assert status == 303
        view = await d.case(case)
        assert view["state"] == "restore_scheduled" and view["restore"]["state"] == "scheduled"
        async with s.get(f"{d.url}/desk/strikes") as r:
            assert f"/desk/cases/{case}" in await r.text()
        status, _ = await post(s, f"{base}/lawsuit", {"note": "filed in N.D. Cal."})
        assert status == 303
        assert (await d.case(case))["state"] == "litigation_hold"
        async with s.get(f"{d.url}/desk/cases/999999") as r:
            assert r.status == 404
        status, _ = await post(
            s, f"{d.url}/desk/cases/999999/decision", {"decision": "action", "reason": "x"}
        )
        assert status == 404


async def test_signin_is_audited(make_desk: MakeDesk) -> None:
    d = await make_desk()
    async with client() as s:
        await sign_in(s, d, "admin")
    rows = await d.svc.store.run(
        lambda c: c.execute("SELECT actor FROM audit_log WHERE event = 'desk_signin'").fetchall()
    )
    assert [r[0] for r in rows] == [f"admin:{d.ids['admin']}:admin"]


async def test_serve_with_desk_listen(tmp_path: Path) -> None:
    db = str(tmp_path / "td.db")

    async def cli(*args: str, stdin: bytes = b"") -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy.cli",
            "takedown",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate(stdin)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    key = await cli("add-account", "--db", db, "--name", "desk", "--role", "operator")
    aid = key.strip().splitlines()[-1].split("_")[1]
    await cli(
        "set-password",
        "--db",
        db,
        "--account",
        aid,
        "--password-stdin",
        stdin=PASSWORD.encode() + b"\n",
    )
    api, desk = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.cli",
        "takedown",
        "serve",
        "--db",
        db,
        "--listen",
        f"127.0.0.1:{api}",
        "--desk-listen",
        f"127.0.0.1:{desk}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        lines = []
        async with asyncio.timeout(20):
            while b"listening" not in (line := await proc.stdout.readline()):
                assert line, b"".join(lines)
                lines.append(line)
        assert any(f"127.0.0.1:{desk}/desk/".encode() in x for x in lines)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.get(f"http://127.0.0.1:{desk}/notice") as r:
                assert r.status == 200 and "Report content" in await r.text()
            token = await csrf_of(s, f"http://127.0.0.1:{desk}/desk/signin")
            async with s.post(
                f"http://127.0.0.1:{desk}/desk/signin",
                data={"csrf": token, "login": "desk", "password": PASSWORD},
            ) as r:
                assert r.status == 200 and str(r.url).endswith("/desk/")
                assert "Review queue" in await r.text()
            async with s.get(f"http://127.0.0.1:{api}/desk/") as r:
                assert r.status in (401, 404)  # the API does not serve the desk
    finally:
        proc.terminate()
        await proc.wait()


async def test_reverse_lifts_the_action_through_the_service(make_desk: MakeDesk) -> None:
    """The console's reversal is the service's own (`svc.reverse`, what `POST /cases/{case}/
    reverse` calls): a statement of reasons is required, the case ends `reversed`, and a
    second reversal is refused with the service's reason on the page."""
    d = await make_desk()
    case = (await d.notice(notice_doc()))["case"]
    async with client() as s:
        await sign_in(s, d, "admin")
        base = f"{d.url}/desk/cases/{case}"
        async with s.get(base) as r:
            assert 'id="reverse-form"' not in await r.text()  # nothing decided yet
        await post(s, f"{base}/decision", {"decision": "action", "reason": "copies"})
        async with s.get(base) as r:
            assert 'id="reverse-form"' in await r.text()
        status, page = await post(s, f"{base}/reverse", {"statement": "  "})
        assert status == 400 and "statement of reasons" in page
        status, _ = await post(s, f"{base}/reverse", {"statement": "Licence shown after all."})
        assert status == 303
        status, page = await post(s, f"{base}/reverse", {"statement": "again"})
        assert status == 409 and "can be reversed" in page
    view = await d.svc.case(case)
    assert view is not None and view["state"] == "reversed"
    reversed_ = next(e for e in view["timeline"] if e["event"] == "decision_reversed")
    assert reversed_["data"]["statement"] == "Licence shown after all."


class Unsuspending(TakedownService):
    """Records what the console hands `unsuspend` (the real one needs a suspended site)."""

    lifted: list[tuple[int, str, str]] = []

    async def unsuspend(self, account: Account, host: str, statement: str) -> dict[str, Any]:
        self.lifted.append((account.id, host, statement))
        return {"host": host}


async def test_unsuspend_goes_to_the_service_with_its_statement(make_desk: MakeDesk) -> None:
    d = await make_desk(service=Unsuspending)
    async with client() as s:
        await sign_in(s, d, "operator")
        status, page = await post(s, f"{d.url}/desk/sites/cdn.example/unsuspend", {})
        assert status == 400 and "statement of reasons" in page
        status, _ = await post(
            s, f"{d.url}/desk/sites/cdn.example/unsuspend", {"statement": "identity verified"}
        )
        assert status == 303
    assert Unsuspending.lifted == [(d.ids["operator"], "cdn.example", "identity verified")]
    real = await make_desk(sites=["cdn.example"])
    async with client() as s:
        await sign_in(s, real, "operator")
        status, page = await post(
            s, f"{real.url}/desk/sites/cdn.example/unsuspend", {"statement": "x"}
        )
        assert status == 409 and "is not suspended" in page
