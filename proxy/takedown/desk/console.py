"""The console's pages and actions. Each action calls the service's own coroutine (the one the
JSON route calls), so the console and the API cannot drift apart; then it redirects back
(POST/redirect/GET) or shows the page again with the refusal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from typing import Any

from aiohttp import web

from proxy.takedown import audit, reports
from proxy.takedown.desk import charts, passwords, queries, sessions
from proxy.takedown.desk.app import DESK, SESSION, cookie_name, render, set_cookie
from proxy.takedown.states import DECIDABLE, RESTRICTING, Conflict, NotFound, S, actor_of

# What `redress.reverse` takes: an action in force (RESTRICTING), or a rejection (of served
# targets: the service refuses it otherwise, and the page says why).
REVERSIBLE = (*RESTRICTING, S.REJECTED)
COUNTERABLE = (S.ACTIONED, S.PUBLISHED, S.ENFORCED)
LIST_LIMIT = 500


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/desk", to_console)
    r.add_get("/desk/signin", signin_page)
    r.add_post("/desk/signin", signin)
    r.add_post("/desk/signout", signout)
    r.add_get("/desk/", queue)
    r.add_get("/desk/cases", case_list)
    r.add_get("/desk/cases/{case}", case_page)
    r.add_post("/desk/cases/{case}/decision", decide)
    r.add_post("/desk/cases/{case}/reverse", reverse)
    r.add_post("/desk/cases/{case}/counter-notice", counter_notice)
    r.add_post("/desk/cases/{case}/lawsuit", lawsuit)
    r.add_get("/desk/strikes", strikes)
    r.add_post("/desk/sites/{host}/unsuspend", unsuspend)
    r.add_get("/desk/blocklist", blocklist)
    r.add_get("/desk/report", report)


def see_other(location: str) -> web.Response:
    """303 as a plain response (a raised one would lose the cookies set on it)."""
    return web.Response(status=303, headers={"Location": location})


async def to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/desk/")


def _next(text: str) -> str:
    """Only a path inside the console: never another site (open redirect)."""
    ok = text.startswith("/desk/") and not text.startswith("//") and "\\" not in text
    return text if ok else "/desk/"


async def signin_page(request: web.Request) -> web.Response:
    """Shown signed in too (to switch accounts): signing in again replaces the session."""
    return render(request, "signin.html", next=_next(request.query.get("next", "")), error="")


async def signin(request: web.Request) -> web.StreamResponse:
    state = request.app[DESK]
    form = await request.post()
    remote = request.remote or "?"
    limit = state.limits["signin"]
    nxt = _next(str(form.get("next", "")))
    if wait := limit.retry_after_s(remote):
        page = render(request, "signin.html", 429, next=nxt, error="Too many failed sign-ins.")
        page.headers["Retry-After"] = str(int(wait) + 1)
        return page
    login, password = str(form.get("login", "")), str(form.get("password", ""))
    found = await state.svc.store.run(passwords.candidate, login)
    account = await asyncio.to_thread(passwords.check, found, password)
    if account is None:
        limit.hit(remote)
        return render(request, "signin.html", 401, next=nxt, error="Wrong login or password.")
    limit.clear(remote)
    old = request.cookies.get(cookie_name(request, "desk_session"), "")
    now = state.svc.clock()

    def start(conn: sqlite3.Connection) -> str:
        if old:  # whatever id the browser brought is never the one it leaves with
            sessions.end(conn, old)
        audit.append(conn, now, "desk_signin", actor=actor_of(account), data={"remote": remote})
        return sessions.create(conn, account, now, remote)

    sid = await state.svc.store.run(start)
    response = see_other(nxt)
    set_cookie(response, request, "desk_session", sid)
    return response


async def signout(request: web.Request) -> web.StreamResponse:
    sid = request.cookies.get(cookie_name(request, "desk_session"), "")
    await request.app[DESK].svc.store.run(sessions.end, sid)
    response = see_other("/desk/signin")
    response.del_cookie(cookie_name(request, "desk_session"), path="/")
    return response


async def queue(request: web.Request) -> web.Response:
    svc = request.app[DESK].svc
    q = await svc.store.run(queries.queue, svc.clock(), svc.cfg)
    return render(request, "queue.html", q=q, now=svc.clock())


async def case_list(request: web.Request) -> web.Response:
    svc = request.app[DESK].svc
    state = request.query.get("state") or None
    if state is not None and state not in S.__members__.values():
        raise web.HTTPBadRequest(text=f"no state {state!r}")
    rows = await svc.store.run(queries.all_cases, svc.clock(), svc.cfg, state, LIST_LIMIT)
    return render(request, "cases.html", cases=rows, state=state or "", states=[s.value for s in S])


def _case_id(request: web.Request) -> int:
    text = request.match_info["case"]
    if not text.isdigit() or len(text) > 12:
        raise web.HTTPNotFound(text="no such case")
    return int(text)


async def _case(
    request: web.Request, cid: int, status: int = 200, error: str = "", **extra: Any
) -> web.Response:
    svc = request.app[DESK].svc
    view = await svc.case(cid)
    if view is None:
        raise web.HTTPNotFound(text="no such case")

    def read(conn: sqlite3.Connection) -> dict[str, Any]:
        return {
            "notices": queries.notices(conn, cid),
            "counter_notices": queries.counter_notices(conn, cid),
            "strikes": queries.strikes_of(conn, cid),
        }

    more = await svc.store.run(read)
    statement = await svc.statement(cid) if view["decision"] == "action" else None
    state = S(view["state"])
    return render(
        request,
        "case.html",
        status,
        case=view,
        statement=statement,
        error=error,
        now=svc.clock(),
        can_decide=state in DECIDABLE,
        can_reverse=state in REVERSIBLE,
        can_counter=state in COUNTERABLE,
        can_lawsuit=state is S.RESTORE_SCHEDULED,
        form=extra.get("form", {}),
        **more,
    )


async def case_page(request: web.Request) -> web.Response:
    return await _case(request, _case_id(request))


async def _act(request: web.Request, cid: int, action: Any) -> web.Response:
    """Run one action; on success back to the case (303), else the case page with why."""
    try:
        await action
    except NotFound:
        raise web.HTTPNotFound(text="no such case") from None
    except (Conflict, PermissionError, ValueError) as exc:
        return await _case(request, cid, 409, str(exc))
    raise web.HTTPSeeOther(f"/desk/cases/{cid}")


async def decide(request: web.Request) -> web.Response:
    cid = _case_id(request)
    form = await request.post()
    decision = str(form.get("decision", ""))
    reason = str(form.get("reason", "")).strip()
    if decision not in ("action", "reject"):
        return await _case(request, cid, 400, "Choose to action or to reject.")
    if not reason:
        return await _case(request, cid, 400, "Give a statement of reasons (DSA Art. 17).")
    svc = request.app[DESK].svc
    return await _act(request, cid, svc.decide(request[SESSION].account, cid, decision, reason))


async def reverse(request: web.Request) -> web.Response:
    cid = _case_id(request)
    svc = request.app[DESK].svc
    statement = str((await request.post()).get("statement", "")).strip()
    if not statement:
        return await _case(request, cid, 400, "Give a statement of reasons for the reversal.")
    return await _act(request, cid, svc.reverse(request[SESSION].account, cid, statement))


COUNTER_FIELDS = (
    "subscriber_name",
    "subscriber_address",
    "subscriber_phone",
    "subscriber_email",
    "material",
    "signature",
)
COUNTER_CHECKS = ("good_faith_mistake", "consent_to_jurisdiction", "accept_service")


async def counter_notice(request: web.Request) -> web.Response:
    """Staff record a counter-notice the customer sent them (512(g)(3) elements, checked by
    the API's own `elements.check_counter_notice`)."""
    cid = _case_id(request)
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in COUNTER_FIELDS + COUNTER_CHECKS}
    doc = {
        "subscriber": {
            k.removeprefix("subscriber_"): values[k] for k in COUNTER_FIELDS[:4] if values[k]
        },
        "material": [m.strip() for m in values["material"].splitlines() if m.strip()],
        "statements": {k: values[k] == "yes" for k in COUNTER_CHECKS},
        "signature": values["signature"],
    }
    svc = request.app[DESK].svc
    try:
        result = await svc.counter_notice(request[SESSION].account, cid, json.dumps(doc).encode())
    except NotFound:
        raise web.HTTPNotFound(text="no such case") from None
    except (Conflict, PermissionError) as exc:
        return await _case(request, cid, 409, str(exc), form=values)
    if not result.get("complete", True):
        missing = ", ".join(result.get("missing", []))
        return await _case(request, cid, 422, f"The counter-notice lacks: {missing}", form=values)
    raise web.HTTPSeeOther(f"/desk/cases/{cid}")


async def lawsuit(request: web.Request) -> web.Response:
    cid = _case_id(request)
    note = str((await request.post()).get("note", "")).strip()
    svc = request.app[DESK].svc
    return await _act(request, cid, svc.lawsuit(request[SESSION].account, cid, {"note": note}))


async def strikes(request: web.Request) -> web.Response:
    return await _strikes_page(request, 200, "")


async def _strikes_page(request: web.Request, status: int, error: str) -> web.Response:
    svc = request.app[DESK].svc

    def read(conn: sqlite3.Connection) -> dict[str, Any]:
        return {
            "sites": queries.sites(conn, svc.clock(), svc.cfg),
            "restores": queries.restores(conn),
        }

    data = await svc.store.run(read)
    return render(
        request,
        "strikes.html",
        status,
        policy=svc.cfg.strikes,
        error=error,
        **data,
    )


async def unsuspend(request: web.Request) -> web.Response:
    """Lift a site's suspension (`svc.unsuspend`, as `POST /sites/{host}/unsuspend`), with a
    statement of reasons; published to every edge as a removal."""
    svc = request.app[DESK].svc
    host = request.match_info["host"]
    statement = str((await request.post()).get("statement", "")).strip()
    if not statement:
        return await _strikes_page(request, 400, "Give a statement of reasons for lifting it.")
    try:
        await svc.unsuspend(request[SESSION].account, host, statement)
    except NotFound:
        raise web.HTTPNotFound(text="no such site") from None
    except (Conflict, PermissionError, ValueError) as exc:
        return await _strikes_page(request, 409, str(exc))
    raise web.HTTPSeeOther("/desk/strikes")


async def blocklist(request: web.Request) -> web.Response:
    svc = request.app[DESK].svc
    pubs = await svc.store.run(queries.publications, svc.clock(), svc.cfg, 200)
    return render(request, "blocklist.html", publications=pubs, edges=svc.edge_names)


def _day(text: str | None, default: dt.date) -> dt.date:
    if not text:
        return default
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise web.HTTPBadRequest(text="dates are YYYY-MM-DD") from None


async def report(request: web.Request) -> web.Response:
    svc = request.app[DESK].svc
    today = dt.datetime.fromtimestamp(svc.clock(), dt.UTC).date()
    end = _day(request.query.get("to"), today)
    start = _day(request.query.get("from"), end - dt.timedelta(days=365))
    if start > end:
        raise web.HTTPBadRequest(text="from is after to")
    rep = await svc.store.run(reports.build, start, end, svc.cfg, svc.clock())
    return render(
        request,
        "report.html",
        report=rep,
        charts=charts.report_charts(rep),
        start=start.isoformat(),
        end=end.isoformat(),
    )
