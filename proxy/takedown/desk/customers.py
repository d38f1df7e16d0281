"""The console's customer-verification pages: the customers list, a customer's identity record,
evidence and sites, and per site the domain-control validation (start, check).

Each action calls the service's own coroutine in `proxy/takedown/kyc.py` (the one
`kyc_api.py`'s JSON route calls), so console, API and CLI cannot drift apart; the reviewer is
the signed-in account. A refusal (`customers.Invalid`) shows the page again with the message
and the values typed; success redirects back (POST/redirect/GET). Customers are named by id in
URLs: a name may hold any character.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from aiohttp import web

from proxy.takedown import customers, dcv
from proxy.takedown.customers import IDENTITY_FIELDS, Invalid
from proxy.takedown.desk.app import DESK, SESSION, render
from proxy.takedown.kyc import Kyc
from proxy.takedown.states import Conflict, NotFound

IDENTITY_FORM = (*IDENTITY_FIELDS, "contact_phone")
EVIDENCE_FORM = ("method", "document_ref", "document_sha256", "expires_on")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/desk/customers", customer_list)
    r.add_get("/desk/customers/{customer}", customer_page)
    r.add_post("/desk/customers/{customer}/identity", identity)
    r.add_post("/desk/customers/{customer}/evidence", evidence)
    r.add_post("/desk/sites/{host}/validations", start_validation)
    r.add_post("/desk/sites/{host}/validations/{validation}/check", check_validation)


def _kyc(request: web.Request) -> Kyc:
    return request.app[DESK].svc.kyc


def _number(request: web.Request, name: str) -> int:
    text = request.match_info[name]
    if not text.isdigit() or len(text) > 12:
        raise web.HTTPNotFound(text=f"no such {name}")
    return int(text)


def _in_force_until(view: dict[str, Any], now: float, methods: list[str]) -> float | None:
    """When the customer's documents-checked evidence runs out (the latest expiry of evidence
    that counts now), or None when none counts."""
    ends = [
        e["expires_at"]
        for e in view["evidence"]
        if e["method"] in methods and e["revoked_at"] is None and e["expires_at"] > now
    ]
    return max(ends, default=None)


async def customer_list(request: web.Request) -> web.Response:
    k = _kyc(request)
    now, policy = k.svc.clock(), k.policy

    def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        rows = customers.list_customers(conn, now, policy)
        views = [customers.customer_view(conn, r["id"], now, policy) for r in rows]
        return [v for v in views if v is not None]

    views = await k.svc.store.run(read)
    for v in views:
        v["evidence_until"] = _in_force_until(v, now, policy.document_methods)
    return render(request, "customers.html", customers=views, policy=policy)


def _challenges(conn: sqlite3.Connection, hosts: list[str]) -> dict[int, dict[str, Any]]:
    """What each pending validation asks the customer to publish (token, expected body)."""
    out: dict[int, dict[str, Any]] = {}
    for host in hosts:
        for r in conn.execute(
            "SELECT id, method, token, key_authorization FROM domain_validations"
            " WHERE host = ? AND state = 'pending'",
            (host,),
        ):
            out[r["id"]] = {
                "token": r["token"],
                **dcv.instructions(host, r["method"], r["token"], r["key_authorization"]),
            }
    return out


async def _page(
    request: web.Request,
    cid: int,
    status: int = 200,
    error: str = "",
    form: dict[str, str] | None = None,
) -> web.Response:
    k = _kyc(request)
    try:
        view = await k.customer(str(cid))
    except LookupError:
        raise web.HTTPNotFound(text="no such customer") from None
    hosts = [s["host"] for s in view["sites"]]
    challenges = await k.svc.store.run(_challenges, hosts)
    now = k.svc.clock()
    return render(
        request,
        "customer.html",
        status,
        customer=view,
        challenges=challenges,
        evidence_until=_in_force_until(view, now, k.policy.document_methods),
        policy=k.policy,
        error=error,
        form=form or {},
        now=now,
    )


async def customer_page(request: web.Request) -> web.Response:
    return await _page(request, _number(request, "customer"))


async def _act(request: web.Request, cid: int, action: Any, form: dict[str, str]) -> web.Response:
    """Run one service coroutine; on success back to the customer (303), else the page with
    why (400 for input to correct, 404 for what is gone, 409 for a conflict)."""
    try:
        await action
    except Invalid as exc:
        return await _page(request, cid, 400, str(exc), form)
    except (LookupError, NotFound) as exc:
        raise web.HTTPNotFound(text=str(exc) or "not found") from None
    except (Conflict, PermissionError, ValueError) as exc:
        return await _page(request, cid, 409, str(exc), form)
    raise web.HTTPSeeOther(f"/desk/customers/{cid}")


async def _fields(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    form = await request.post()
    return {n: str(form.get(n, "")).strip() for n in names}


async def identity(request: web.Request) -> web.Response:
    """Record or correct the identity record (`Kyc.record_identity`, as
    `PUT /customers/{customer}/identity`); an empty optional field clears it."""
    cid = _number(request, "customer")
    form = await _fields(request, IDENTITY_FORM)
    acct = request[SESSION].account
    return await _act(request, cid, _kyc(request).record_identity(acct, str(cid), form), form)


def _expiry(text: str) -> float | None:
    """A date (YYYY-MM-DD) as the Unix time of its start in UTC; "" for the policy's default."""
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise Invalid("the expiry must be a date (YYYY-MM-DD)") from None
    return dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()


async def evidence(request: web.Request) -> web.Response:
    """Record evidence checked by the signed-in reviewer (`Kyc.add_evidence`, as
    `POST /customers/{customer}/evidence`)."""
    cid = _number(request, "customer")
    form = await _fields(request, EVIDENCE_FORM)
    k = _kyc(request)
    if form["method"] not in k.policy.document_methods:
        return await _page(request, cid, 400, "Choose one of the document methods.", form)
    body: dict[str, Any] = {"method": form["method"]}
    for name in ("document_ref", "document_sha256"):
        if form[name]:
            body[name] = form[name].lower() if name == "document_sha256" else form[name]
    try:
        expires = _expiry(form["expires_on"])
    except Invalid as exc:
        return await _page(request, cid, 400, str(exc), form)
    if expires is not None:
        body["expires_at"] = expires
    return await _act(request, cid, k.add_evidence(request[SESSION].account, str(cid), body), form)


async def _owner(request: web.Request) -> int:
    """The customer whose page a site action returns to."""
    try:
        site = await _kyc(request).site(request.match_info["host"])
    except (LookupError, ValueError):
        raise web.HTTPNotFound(text="no such site") from None
    return int(site["customer_id"])


async def start_validation(request: web.Request) -> web.Response:
    """Issue a challenge (`Kyc.start_validation`, as `POST /sites/{host}/validations`): the
    customer page then shows its token and the body to serve."""
    cid = await _owner(request)
    method = str((await request.post()).get("method", dcv.Method.HTTP))
    acct = request[SESSION].account
    host = request.match_info["host"]
    return await _act(request, cid, _kyc(request).start_validation(acct, host, method), {})


async def check_validation(request: web.Request) -> web.Response:
    """Fetch or resolve the challenge now (`Kyc.check_validation`); the result (valid, or the
    error found) shows on the customer page."""
    cid = await _owner(request)
    vid = _number(request, "validation")
    acct = request[SESSION].account
    host = request.match_info["host"]
    return await _act(request, cid, _kyc(request).check_validation(acct, host, vid), {})
