"""The desk's aiohttp app: one rule per route, sessions, CSRF, security headers.

Why a listener of its own rather than a path under the API: the API's middlewares authenticate
every request by bearer key and answer JSON, and aiohttp runs a parent app's middlewares for a
sub-app's routes too; a separate app keeps cookies, CSRF and HTML out of the API entirely. The
port is also a different origin for the browser (same-origin policy counts the port), so
nothing the API serves (a notice byte-for-byte, for one) can run script beside a signed-in
console, and an operator can expose the form and the console on another interface or behind a
TLS proxy without touching the API.

Every response gets a CSP with no inline script or style, `frame-ancestors 'none'` (and
X-Frame-Options), nosniff, `Referrer-Policy: same-origin` and `Cache-Control: no-store`.
Every POST needs a CSRF token: the session's, or for the signed-out forms (sign-in, the public
notice form) one bound to a pre-session cookie. A route without a rule is refused.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from markupsafe import Markup
from yarl import URL

from proxy.takedown.accounts import Role
from proxy.takedown.authz import Rule
from proxy.takedown.config import Desk
from proxy.takedown.desk import sessions
from proxy.takedown.desk.limits import RateLimit
from proxy.takedown.desk.passwords import STAFF
from proxy.takedown.service import TakedownService

STATIC = Path(__file__).parent / "static"
PUBLIC = Rule(frozenset(Role), public=True)
STAFF_ONLY = Rule(STAFF)

# (method, route template) -> who. The console is staff's; the form, sign-in and static files
# are open. Read together with `tests/takedown/desk/test_desk_security.py`, which walks the
# router so a route added without a rule fails there.
RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/"): PUBLIC,
    ("GET", "/notice"): PUBLIC,
    ("POST", "/notice"): PUBLIC,
    ("GET", "/static/{name}"): PUBLIC,
    ("GET", "/desk"): PUBLIC,  # a redirect to /desk/
    ("GET", "/desk/signin"): PUBLIC,
    ("POST", "/desk/signin"): PUBLIC,
    ("POST", "/desk/signout"): STAFF_ONLY,
    ("GET", "/desk/"): STAFF_ONLY,
    ("GET", "/desk/cases"): STAFF_ONLY,
    ("GET", "/desk/cases/{case}"): STAFF_ONLY,
    ("POST", "/desk/cases/{case}/decision"): STAFF_ONLY,
    ("POST", "/desk/cases/{case}/reverse"): STAFF_ONLY,
    ("POST", "/desk/cases/{case}/counter-notice"): STAFF_ONLY,
    ("POST", "/desk/cases/{case}/lawsuit"): STAFF_ONLY,
    ("GET", "/desk/strikes"): STAFF_ONLY,
    ("POST", "/desk/sites/{host}/unsuspend"): STAFF_ONLY,
    ("GET", "/desk/blocklist"): STAFF_ONLY,
    ("GET", "/desk/report"): STAFF_ONLY,
    ("GET", "/desk/customers"): STAFF_ONLY,
    ("GET", "/desk/customers/{customer}"): STAFF_ONLY,
    ("POST", "/desk/customers/{customer}/identity"): STAFF_ONLY,
    ("POST", "/desk/customers/{customer}/evidence"): STAFF_ONLY,
    ("POST", "/desk/sites/{host}/validations"): STAFF_ONLY,
    ("POST", "/desk/sites/{host}/validations/{validation}/check"): STAFF_ONLY,
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it Chromium sends `Origin: null` on the desk's own form posts, and
    # the same-origin check below needs the real one. same-origin leaks nothing to other sites.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class DeskState:
    svc: TakedownService
    templates: jinja2.Environment
    limits: dict[str, RateLimit]
    tokens: sessions.SigninTokens = field(default_factory=sessions.SigninTokens)
    public_account: int | None = None

    @property
    def cfg(self) -> Desk:
        return self.svc.cfg.desk


DESK = web.AppKey("desk_state", DeskState)
SESSION = web.RequestKey("desk_session", sessions.Session)
PRE = web.RequestKey("desk_pre_session", str)
CSRF = web.RequestKey("desk_csrf", str)  # the token this page's forms carry


def secure(request: web.Request) -> bool:
    return request.secure or request.app[DESK].cfg.behind_tls_proxy


def cookie_name(request: web.Request, base: str) -> str:
    """`__Host-` binds the cookie to this host, path / and Secure (browsers enforce it)."""
    return f"__Host-{base}" if secure(request) else base


def set_cookie(response: web.StreamResponse, request: web.Request, base: str, value: str) -> None:
    response.set_cookie(
        cookie_name(request, base),
        value,
        path="/",
        httponly=True,
        secure=secure(request),
        samesite="Strict",
    )


def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    """A page with the signed-in account (if any) and the form token every POST needs."""
    state = request.app[DESK]
    session = request.get(SESSION)
    html = state.templates.get_template(template).render(
        account=session.account if session else None,
        csrf=request[CSRF],
        session_csrf=session.csrf if session else "",
        path=request.path,
        **ctx,
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _rule(request: web.Request) -> Rule | None:
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return RULES.get((method, resource.canonical))


def _same_origin(request: web.Request) -> bool:
    """Fetch metadata and Origin, where the browser sends them, must name this very site."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or URL(origin).raw_authority == request.host


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # plain text (nosniff): a message is never markup
        response = web.Response(status=exc.status, headers=exc.headers, text=exc.text)
    response.headers.update(SECURITY_HEADERS)
    if secure(request):
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place a desk request is checked: rule, session, role, CSRF (deny by default)."""
    if request.match_info.route.resource is None:  # the router's own 404/405
        return await handler(request)
    rule = _rule(request)
    if rule is None:
        raise web.HTTPForbidden(text="no rule for this route")
    state = request.app[DESK]
    pre = request.cookies.get(cookie_name(request, "desk_pre"), "")
    request[PRE] = pre or state.tokens.new_pre_session()
    sid = request.cookies.get(cookie_name(request, "desk_session"), "")
    if sid:
        found = await state.svc.store.run(sessions.lookup, sid, state.svc.clock(), state.cfg)
        if found is not None:
            request[SESSION] = found
    session = request.get(SESSION)
    request[CSRF] = (
        session.csrf if session and not rule.public else state.tokens.token(request[PRE])
    )
    if not rule.public:
        if session is None:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther(f"/desk/signin?next={request.rel_url.path}")
            raise web.HTTPForbidden(text="sign in first")
        if session.account.role not in rule.roles:
            raise web.HTTPForbidden(text=f"{session.account.role.value} may not use the desk")
    if request.method == "POST":
        try:
            form = await request.post()
        except (ValueError, AssertionError, HttpProcessingError):  # a body no form sends
            raise web.HTTPBadRequest(text="the form could not be read") from None
        token = str(form.get("csrf", ""))
        if session is not None and not rule.public:
            ok = hmac.compare_digest(token.encode(), session.csrf.encode())
        else:
            ok = state.tokens.valid(pre, token)
        if not ok or not _same_origin(request):
            raise web.HTTPForbidden(text="the form's security token is missing or stale: reload")
    response = await handler(request)
    if not pre:
        set_cookie(response, request, "desk_pre", request[PRE])
    return response


def _iso(at: float | None) -> str:
    if at is None:
        return "–"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = abs(seconds)
    if s < 60:
        text = f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    elif s < 3600:
        text = f"{int(s // 60)} min {int(s % 60):02d} s"
    elif s < 86400:
        text = f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    else:
        text = f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"
    return text


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("proxy.takedown.desk", "templates"),
        autoescape=True,  # every value is escaped unless marked safe (the SVG charts only)
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["iso"] = _iso
    env.filters["duration"] = _duration
    env.globals["Markup"] = Markup
    return env


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound()
    types = {".js": "text/javascript", ".css": "text/css"}
    return web.Response(
        body=path.read_bytes(),
        content_type=types.get(path.suffix, "application/octet-stream"),
        charset="utf-8",
    )
