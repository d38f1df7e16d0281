"""The public notice form (DSA Art. 16(1): electronic, easy to access, open to anyone).

No account: notices filed here belong to one key-less submitter account, "public notice form",
created on first use (its key hash is empty, so no API key ever matches it), and carry the
client's address like any other notice. A form with a missing element is shown again with the
error next to the field and nothing is stored: the person is there to fix it. A whole one is
submitted exactly as `POST /notices` would be, and the answer is the receipt (DSA Art. 16(4)),
also emailed through the outbox to the address the notice gives.

`GET /notice?ref=case%2012` (what an edge's 451 links to) shows that case's public state above
the form: state, dates and legal ground, never who complained or what they wrote.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from aiohttp import web

from proxy.takedown import audit
from proxy.takedown.accounts import Account, Role
from proxy.takedown.desk import form as notice_form
from proxy.takedown.desk import queries
from proxy.takedown.desk.app import DESK, render
from proxy.takedown.views import LEGAL_GROUND

PUBLIC_ACCOUNT = "public notice form"
REF = re.compile(r"^\s*case\s*#?\s*(\d{1,12})\s*$", re.IGNORECASE)
BASES = [
    ("hosted", "The material is stored on a site this service hosts (17 U.S.C. 512(c))"),
    ("cache", "A cached copy of material already removed at its source (512(b)(2)(E); DSA 5)"),
    ("order", "A court or authority ordered its removal (DSA Art. 9)"),
]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/notice", form_page)
    app.router.add_post("/notice", submit)


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/notice")


def public_account(conn: sqlite3.Connection, now: float) -> int:
    row = conn.execute(
        "SELECT id FROM accounts WHERE name = ? AND role = ? AND key_hash = ''",
        (PUBLIC_ACCOUNT, Role.SUBMITTER.value),
    ).fetchone()
    if row is not None:
        return int(row[0])
    aid = conn.execute(
        "INSERT INTO accounts (name, role, key_hash, created_at) VALUES (?, ?, '', ?)",
        (PUBLIC_ACCOUNT, Role.SUBMITTER.value, now),
    ).lastrowid
    assert aid is not None
    audit.append(
        conn,
        now,
        "account_created",
        actor="desk",
        data={"account": aid, "name": PUBLIC_ACCOUNT, "role": Role.SUBMITTER.value},
    )
    return int(aid)


async def _reference(request: web.Request) -> tuple[str, dict[str, Any] | None]:
    ref = request.query.get("ref", "")[:64]
    m = REF.match(ref)
    if not m:
        return ref, None
    svc = request.app[DESK].svc
    return ref, await svc.store.run(queries.public_case, int(m.group(1)))


def _page(
    request: web.Request,
    status: int,
    filled: notice_form.Filled | None,
    ref: str,
    case: dict[str, Any] | None,
) -> web.Response:
    return render(
        request,
        "notice_form.html",
        status,
        values=filled.values if filled else {},
        errors=filled.errors if filled else {},
        bases=BASES,
        ref=ref,
        ref_case=case,
        grounds=LEGAL_GROUND,
        max_lines=notice_form.MAX_LINES,
    )


async def form_page(request: web.Request) -> web.Response:
    ref, case = await _reference(request)
    return _page(request, 200, None, ref, case)


async def submit(request: web.Request) -> web.Response:
    state = request.app[DESK]
    remote = request.remote or "?"
    limit = state.limits["form"]
    if wait := limit.retry_after_s(remote):
        page = render(request, "rate_limited.html", 429, retry_after_s=wait)
        page.headers["Retry-After"] = str(int(wait) + 1)
        return page
    limit.hit(remote)
    filled = notice_form.fill(await request.post())
    if filled.errors:
        return _page(request, 422, filled, "", None)
    svc = state.svc
    if state.public_account is None:
        state.public_account = await svc.store.run(public_account, svc.clock())
    account = Account(state.public_account, PUBLIC_ACCOUNT, Role.SUBMITTER)
    result = await svc.submit_notice(account, filled.raw, remote)
    if "receipt" not in result:  # refused as junk by the service's own schema: kept, no case
        filled.errors["urls"] = "This notice could not be accepted: " + "; ".join(
            str(e.get("message", e)) for e in result.get("errors", [])
        )
        return _page(request, 422, filled, "", None)
    return render(
        request,
        "notice_receipt.html",
        201,
        result=result,
        receipt=result["receipt"],
        email=filled.document["complainant"].get("email"),
    )
