"""HTTP API of the takedown service (aiohttp).

    POST /notices                      201 {id, case, state, receipt, targets}
                                       422 same body + missing (kept, answered)
                                       400 junk (schema.py): kept as a rejected submission
    GET  /notices/{id}/raw             the notice byte-for-byte as received
    GET  /cases[?overdue=1&state=a,b&sort=deadline]   triage list (non-staff: their cases)
    GET  /cases/{id}                   state, timeline, edges, durations, …
    POST /cases/{id}/decision          {"decision": "action"|"reject", "reason"}
    POST /cases/{id}/withdraw          before a decision closes; after an action lifts it
    GET  /cases/{id}/statement         DSA Art. 17 statement of reasons
    POST /cases/{id}/counter-notice    512(g)(3) elements; schedules the restore
    POST /cases/{id}/lawsuit           cancels the scheduled restore
    POST /cases/{id}/reverse           {"statement"}: reverse the decision (redress.py)
    POST /cases/{id}/complaint         {"statement"}: internal complaint, DSA Art. 20
    POST /cases/{id}/complaint/dismiss {"statement"}: keep the decision
    POST /sites/{host}/unsuspend       {"statement"}: lift a site's suspension
    GET  /reports?from=…&to=…[&format=json|csv|md]   transparency report
    GET  /rejected-submissions[?limit=N]              junk kept (staff), newest first
    GET  /rejected-submissions/{id}/raw               its bytes exactly as received
    GET  /healthz                      no auth
    GET  /metrics                      no auth; Prometheus text format

Every request except /healthz carries `Authorization: Bearer KEY`. Who may call which route is
`authz.RULES`, enforced by the `authorize` middleware and nowhere else: a refused read answers
404 (a case one may not see does not exist for one), a refused write 403, audited on the case.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.takedown import authz, reports, schema
from proxy.takedown.accounts import Account, Role
from proxy.takedown.http_io import ACCOUNT, SERVICE, _error, _json, _read_body
from proxy.takedown.service import TakedownService
from proxy.takedown.states import Conflict, NotFound, State
from proxy.takedown.views import SORTS

DECIDERS = (Role.OPERATOR, Role.ADMIN)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _rule(request: web.Request) -> authz.Rule | None:
    resource = request.match_info.route.resource
    if resource is None:  # the router's own 404/405
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return authz.rule_for(method, resource.canonical)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    rule = _rule(request)
    if rule is not None and rule.public:
        return await handler(request)
    auth = request.headers.get("Authorization", "")
    scheme, _, key = auth.partition(" ")
    account = None
    if scheme.lower() == "bearer" and key.strip():
        account = await request.app[SERVICE].authenticate(key.strip())
    if account is None:
        return web.json_response(
            {"error": "missing or invalid API key"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="takedown"'},
        )
    request[ACCOUNT] = account
    try:
        return await handler(request)
    except Conflict as exc:
        return _error(409, str(exc))
    except PermissionError as exc:
        return _error(403, str(exc))
    except NotFound as exc:
        what = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "no such case"
        return _error(404, what)


@web.middleware
async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place a request is checked against `authz.RULES` (deny by default)."""
    if request.match_info.route.resource is None:
        return await handler(request)
    rule = _rule(request)
    if rule is not None and rule.public:
        return await handler(request)
    account = _account(request)
    svc = request.app[SERVICE]
    info = request.match_info
    case_id = _int(info.get("case"))
    relations: frozenset[authz.Relation] = frozenset()
    if rule is not None and rule.needs_relations and account.role not in rule.roles:
        if case_id is not None:
            relations = await svc.case_relations(case_id, account)
        elif (notice_id := _int(info.get("notice"))) is not None:
            relations = await svc.notice_relations(notice_id, account)
        elif "customer" in info or "host" in info:  # customer verification (kyc_api.py)
            relations = await svc.kyc.owner_relations(
                info.get("customer"), info.get("host"), account
            )
    if rule is not None and rule.allows(account, relations):
        return await handler(request)
    reason = (
        authz.Refusal.NO_RULE
        if rule is None
        else authz.Refusal.NOT_A_PARTY
        if rule.needs_relations
        else authz.Refusal.ROLE
    )
    if request.method in ("GET", "HEAD"):
        return _error(404, "no such case" if case_id is not None else "not found")
    resource = info.route.resource
    assert resource is not None
    # Evidence of who tried what: on the case, or (a site's unsuspension) in the log alone.
    await svc.refused(
        case_id, account, request.method, resource.canonical, reason, request.path[:300]
    )
    return _error(403, f"{account.role.value} may not {request.method} {request.path}")


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _account(request: web.Request) -> Account:
    acct: Account = request[ACCOUNT]
    return acct


def _case_id(request: web.Request) -> int:
    try:
        return int(request.match_info["case"])
    except ValueError:
        raise web.HTTPNotFound(
            text='{"error": "no such case"}', content_type="application/json"
        ) from None


async def post_notice(request: web.Request) -> web.Response:
    raw = await _read_body(request)
    result = await request.app[SERVICE].submit_notice(_account(request), raw, request.remote)
    if "rejected_submission" in result:  # junk: kept, but no case
        return _json(result, 400)
    return _json(result, 201 if not result["missing"] else 422)


async def get_notice_raw(request: web.Request) -> web.Response:
    nid = _int(request.match_info["notice"])
    found = None if nid is None else await request.app[SERVICE].notice_raw(nid)
    if found is None:
        return _error(404, "no such notice")
    return web.Response(body=found[0], content_type="application/octet-stream")


async def list_cases(request: web.Request) -> web.Response:
    acct = _account(request)
    q = request.query
    states = [x for x in q.get("state", "").split(",") if x]
    unknown = [x for x in states if x not in {s.value for s in State}]
    if unknown:
        return _error(
            400, f"state: unknown {', '.join(unknown)}; one of {', '.join(s.value for s in State)}"
        )
    sort = q.get("sort", "id")
    if sort not in SORTS:
        return _error(400, f"sort: must be one of {', '.join(SORTS)}, got {sort!r}")
    staff, customer = acct.role in DECIDERS, acct.role is Role.CUSTOMER
    rows = await request.app[SERVICE].cases(
        overdue_only=q.get("overdue", "") in ("1", "true", "yes"),
        state=states or None,
        # Submitters see the cases they filed, customers the cases against their sites.
        account_id=None if staff or customer else acct.id,
        customer_id=acct.customer_id if customer else None,
        sort=sort,
    )
    return _json({"cases": rows, "count": len(rows)})


async def get_case(request: web.Request) -> web.Response:
    view = await request.app[SERVICE].case(_case_id(request))
    return _error(404, "no such case") if view is None else _json(view)


async def get_statement(request: web.Request) -> web.Response:
    cid = _case_id(request)
    sor = await request.app[SERVICE].statement(cid)
    if sor is None:
        return _error(409, f"case {cid} imposed no restriction, so there is no statement")
    return _json(sor)


async def post_decision(request: web.Request) -> web.Response:
    acct = _account(request)
    try:
        body = await request.json()
        decision, reason = body["decision"], body.get("reason", "")
        assert decision in ("action", "reject") and isinstance(reason, str)
    except (ValueError, KeyError, TypeError, AssertionError):
        return _error(400, 'expected {"decision": "action"|"reject", "reason": "…"}')
    result = await request.app[SERVICE].decide(acct, _case_id(request), decision, reason)
    return _json(result)


async def post_withdraw(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].withdraw(_account(request), _case_id(request)))


async def post_counter_notice(request: web.Request) -> web.Response:
    raw = await _read_body(request)
    result = await request.app[SERVICE].counter_notice(
        _account(request), _case_id(request), raw, request.remote
    )
    if "rejected_submission" in result:
        return _json(result, 400)
    return _json(result, 201 if result["complete"] else 422)


async def _statement(request: web.Request) -> str | web.Response:
    """The `{"statement": "…"}` body of the undo routes, or a 400 naming the field."""
    doc, err = schema.parse(await _read_body(request), schema.Statement)
    if doc is None or not doc.statement.strip():
        why = err or schema.SchemaError("statement", "must not be blank")
        return _json({"error": str(why), "errors": [why.as_dict()]}, 400)
    return doc.statement.strip()


Undo = Callable[[TakedownService, Account, web.Request, str], Awaitable[dict[str, Any]]]


def _undo_route(undo: Undo, status: int = 200) -> Callable[[web.Request], Awaitable[web.Response]]:
    """One handler shape for the four undo routes: a `{"statement"}` body (a 400 naming the
    field when it is missing or blank), then the service call, answered as JSON."""

    async def handler(request: web.Request) -> web.Response:
        statement = await _statement(request)
        if isinstance(statement, web.Response):
            return statement
        result = await undo(request.app[SERVICE], _account(request), request, statement)
        return _json(result, status)

    return handler


post_reverse = _undo_route(lambda svc, acct, r, st: svc.reverse(acct, _case_id(r), st))
post_complaint = _undo_route(lambda svc, acct, r, st: svc.complain(acct, _case_id(r), st), 201)
post_complaint_dismiss = _undo_route(
    lambda svc, acct, r, st: svc.dismiss_complaints(acct, _case_id(r), st)
)
post_unsuspend = _undo_route(lambda svc, acct, r, st: svc.unsuspend(acct, r.match_info["host"], st))


async def list_rejected(request: web.Request) -> web.Response:
    text = request.query.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        return _error(400, f"limit: must be an integer from 1 to 1000, got {text!r}")
    rows = await request.app[SERVICE].rejected_submissions(int(text))
    return _json({"rejected_submissions": rows, "count": len(rows)})


async def get_rejected_raw(request: web.Request) -> web.Response:
    rid = _int(request.match_info["submission"])
    found = None if rid is None else await request.app[SERVICE].rejected_raw(rid)
    if found is None:
        return _error(404, "no such rejected submission")
    return web.Response(body=found, content_type="application/octet-stream")


async def get_report(request: web.Request) -> web.Response:
    q = request.query
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv", "md"):
        return _error(400, f"format: must be json, csv or md, got {fmt!r}")
    try:
        start, end = reports.parse_range(q.get("from"), q.get("to"))
    except ValueError as exc:
        return _error(400, str(exc))
    rep = await request.app[SERVICE].report(start, end)
    if fmt == "json":
        return _json(rep)
    text = reports.to_csv(rep) if fmt == "csv" else reports.to_markdown(rep)
    return web.Response(text=text, content_type="text/csv" if fmt == "csv" else "text/markdown")


async def post_lawsuit(request: web.Request) -> web.Response:
    raw = await _read_body(request)
    try:
        detail = json.loads(raw) if raw else {}
    except ValueError:
        return _error(400, "body must be JSON")
    result = await request.app[SERVICE].lawsuit(
        _account(request), _case_id(request), detail if isinstance(detail, dict) else {}
    )
    return _json(result)


async def healthz(request: web.Request) -> web.Response:
    return _json({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: notices by state, overdue cases, edge delivery failures,
    notification failures, time to enforcement (`metrics.py`)."""
    body = await request.app[SERVICE].metrics_text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(service: TakedownService, *, manage_service: bool = True) -> web.Application:
    """The aiohttp application; with `manage_service` it starts and stops the service too."""
    app = web.Application(
        middlewares=[authenticate, authorize], client_max_size=service.cfg.service.max_notice_bytes
    )
    app[SERVICE] = service
    app.router.add_post("/notices", post_notice)
    app.router.add_get("/notices/{notice}/raw", get_notice_raw)
    app.router.add_get("/cases", list_cases)
    app.router.add_get("/cases/{case}", get_case)
    app.router.add_get("/cases/{case}/statement", get_statement)
    app.router.add_post("/cases/{case}/decision", post_decision)
    app.router.add_post("/cases/{case}/withdraw", post_withdraw)
    app.router.add_post("/cases/{case}/counter-notice", post_counter_notice)
    app.router.add_post("/cases/{case}/lawsuit", post_lawsuit)
    app.router.add_post("/cases/{case}/reverse", post_reverse)
    app.router.add_post("/cases/{case}/complaint", post_complaint)
    app.router.add_post("/cases/{case}/complaint/dismiss", post_complaint_dismiss)
    app.router.add_post("/sites/{host}/unsuspend", post_unsuspend)
    app.router.add_get("/reports", get_report)
    app.router.add_get("/rejected-submissions", list_rejected)
    app.router.add_get("/rejected-submissions/{submission}/raw", get_rejected_raw)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    from proxy.takedown import kyc_api  # customer verification (issue 15)

    kyc_api.register(app)
    if manage_service:

        async def on_startup(app: web.Application) -> None:
            await service.start()

        async def on_cleanup(app: web.Application) -> None:
            await service.stop()

        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)
    return app
