"""Issue 15: the desk's security, over real HTTP to the desk's own listener.

Every console route refuses signed-out users and accounts that are not staff; every POST needs
its form's CSRF token (and a same-origin request); sign-in never keeps the session id the
browser brought; sessions end on sign-out, when idle and at their maximum age; every answer
carries the security headers; sign-in failures and public form posts are rate limited.
(XSS is checked in a real browser: test_desk_browser.py.)
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from yarl import URL

from proxy.takedown.desk import sessions
from proxy.takedown.desk.app import RULES, SECURITY_HEADERS
from proxy.takedown.desk.build import build_desk_app
from tests.takedown.conftest import FakeClock
from tests.takedown.desk.conftest import (
    CSRF_RE,
    PASSWORD,
    Desk_,
    MakeDesk,
    fast_config,
    notice_doc,
)

STAFF_ROUTES = sorted(k for k, rule in RULES.items() if not rule.public)


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), raise_for_status=False)


async def csrf_of(s: aiohttp.ClientSession, url: str) -> str:
    """The token of the page's main form (the last one: the sign-out form comes first)."""
    async with s.get(url, allow_redirects=False) as r:
        found = CSRF_RE.findall(await r.text())
        assert found, (r.status, url)
        return str(found[-1])


async def sign_in(
    s: aiohttp.ClientSession,
    d: Desk_,
    login: str,
    password: str = PASSWORD,
    token: str | None = None,
) -> aiohttp.ClientResponse:
    if token is None:
        token = await csrf_of(s, f"{d.url}/desk/signin")
    async with s.post(
        f"{d.url}/desk/signin",
        data={"csrf": token, "login": login, "password": password, "next": "/desk/"},
        allow_redirects=False,
    ) as r:
        await r.read()
        return r


def session_cookie(s: aiohttp.ClientSession, d: Desk_) -> str | None:
    found = s.cookie_jar.filter_cookies(URL(d.url)).get("desk_session")
    return found.value if found is not None else None


def plant(s: aiohttp.ClientSession, d: Desk_, sid: str) -> None:
    s.cookie_jar.update_cookies({"desk_session": sid}, response_url=URL(d.url))


def fill(route: str, case: int) -> str:
    """A real instance of each route: the case, the fixture's one site and its customer (the
    first: id 1), a validation id (POSTs are refused before it is looked up)."""
    return (
        route.replace("{case}", str(case))
        .replace("{host}", "cdn.example")
        .replace("{customer}", "1")
        .replace("{validation}", "1")
    )


async def test_every_route_has_a_rule() -> None:
    from unittest.mock import MagicMock

    svc = MagicMock()
    svc.cfg = fast_config()
    app = build_desk_app(svc)
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert routes == set(RULES)


async def test_signed_out_is_sent_to_sign_in_and_refused_writes(make_desk: MakeDesk) -> None:
    d = await make_desk()
    case = (await d.notice(notice_doc()))["case"]
    async with client() as s:
        token = await csrf_of(s, f"{d.url}/notice")  # a valid token, but for no session
        for method, route in STAFF_ROUTES:
            url = d.url + fill(route, case)
            if method == "GET":
                async with s.get(url, allow_redirects=False) as r:
                    assert r.status == 303, route
                    assert r.headers["Location"].startswith("/desk/signin?next=/desk/")
            else:
                async with s.post(
                    url,
                    data={"csrf": token, "decision": "action", "reason": "x", "statement": "x"},
                    allow_redirects=False,
                ) as r:
                    assert r.status == 403, route
    assert (await d.case(case))["state"] == "under_review"


@pytest.mark.parametrize("login", ["submitter", "trusted"])
async def test_only_staff_sign_in(make_desk: MakeDesk, login: str) -> None:
    d = await make_desk()
    async with client() as s:
        r = await sign_in(s, d, login)  # the right password, the wrong role
        assert r.status == 401 and session_cookie(s, d) is None


@pytest.mark.parametrize("login", ["submitter", "trusted"])
async def test_a_session_of_the_wrong_role_is_refused_everywhere(
    make_desk: MakeDesk, login: str
) -> None:
    """Even a session that exists for a non-staff account (say, the role changed after sign-in)
    opens nothing."""
    d = await make_desk()
    case = (await d.notice(notice_doc()))["case"]
    acct = await d.svc.authenticate(d.keys[login])
    assert acct is not None
    sid = await d.svc.store.run(sessions.create, acct, d.svc.clock(), "test")
    found = await d.svc.store.run(sessions.lookup, sid, d.svc.clock(), d.svc.cfg.desk)
    assert found is not None
    async with client() as s:
        plant(s, d, sid)
        for method, route in STAFF_ROUTES:
            url = d.url + fill(route, case)
            data = {"csrf": found.csrf, "decision": "action", "reason": "x"}
            async with s.request(
                method, url, data=data if method == "POST" else None, allow_redirects=False
            ) as r:
                assert r.status == 403, (method, route, r.status)
    assert (await d.case(case))["state"] == "under_review"


@pytest.mark.parametrize("who", ["operator", "admin"])
async def test_staff_reach_every_page(make_desk: MakeDesk, who: str) -> None:
    d = await make_desk()
    case = (await d.notice(notice_doc()))["case"]
    async with client() as s:
        r = await sign_in(s, d, who)
        assert r.status == 303 and r.headers["Location"] == "/desk/"
        for method, route in STAFF_ROUTES:
            if method == "GET":
                async with s.get(d.url + fill(route, case)) as r:
                    assert r.status == 200, route


async def _decide(
    s: aiohttp.ClientSession,
    d: Desk_,
    case: int,
    token: str | None,
    headers: dict[str, str] | None = None,
) -> int:
    data = {"decision": "reject", "reason": "not infringing"}
    if token is not None:
        data["csrf"] = token
    async with s.post(
        f"{d.url}/desk/cases/{case}/decision", data=data, headers=headers, allow_redirects=False
    ) as r:
        return r.status


async def test_csrf_is_required_on_every_post(make_desk: MakeDesk) -> None:
    d = await make_desk()
    case = (await d.notice(notice_doc()))["case"]
    async with client() as other:  # another operator's valid token
        await sign_in(other, d, "admin")
        foreign = await csrf_of(other, f"{d.url}/desk/cases/{case}")
    async with client() as s:
        await sign_in(s, d, "operator")
        token = await csrf_of(s, f"{d.url}/desk/cases/{case}")
        pre_token = await csrf_of(s, f"{d.url}/notice")  # the public form's token
        for bad in (None, "", "x" * 43, token[:-1], foreign, pre_token):
            assert await _decide(s, d, case, bad) == 403, bad
        for method, route in STAFF_ROUTES:
            if method == "POST":
                async with s.post(
                    d.url + fill(route, case),
                    data={"decision": "action", "reason": "r"},
                    allow_redirects=False,
                ) as r:
                    assert r.status == 403, route
        # The right token from a page of another site (a cross-site form post) is refused too.
        evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
        assert await _decide(s, d, case, token, {"Origin": "http://evil.example"}) == 403
        assert await _decide(s, d, case, token, evil) == 403
        assert (await d.case(case))["state"] == "under_review"
        assert await _decide(s, d, case, token) == 303
    assert (await d.case(case))["state"] == "rejected"


async def test_sign_in_and_the_public_form_need_their_token(make_desk: MakeDesk) -> None:
    d = await make_desk()
    async with client() as s:
        for bad in (None, "", "0" * 64):
            data: dict[str, Any] = {"login": "operator", "password": PASSWORD}
            if bad is not None:
                data["csrf"] = bad
            async with s.post(f"{d.url}/desk/signin", data=data, allow_redirects=False) as r:
                assert r.status == 403
            async with s.post(f"{d.url}/notice", data=data, allow_redirects=False) as r:
                assert r.status == 403
        assert session_cookie(s, d) is None
    async with client() as a, client() as b:  # a token is bound to its own browser's cookie
        token_a = await csrf_of(a, f"{d.url}/desk/signin")
        await csrf_of(b, f"{d.url}/desk/signin")
        r = await sign_in(b, d, "operator", token=token_a)
        assert r.status == 403 and session_cookie(b, d) is None


async def test_session_fixation_the_id_changes_at_sign_in(make_desk: MakeDesk) -> None:
    d = await make_desk()
    async with client() as s:
        planted = "attacker-chosen-session-id"
        plant(s, d, planted)
        await sign_in(s, d, "operator")
        first = session_cookie(s, d)
        assert first and first != planted
        # Signing in again from a signed-in browser issues a new id and ends the old one.
        await sign_in(s, d, "operator")
        second = session_cookie(s, d)
        assert second and second != first
        assert await d.svc.store.run(sessions.lookup, first, d.svc.clock(), d.svc.cfg.desk) is None
    async with client() as victim:  # an id stolen before sign-in is worth nothing after it
        await csrf_of(victim, f"{d.url}/desk/signin")
        plant(victim, d, second)
        await sign_in(victim, d, "admin")
        assert session_cookie(victim, d) != second
    async with client() as attacker:
        plant(attacker, d, second)
        async with attacker.get(f"{d.url}/desk/", allow_redirects=False) as r:
            assert r.status == 303


async def test_sign_out_idle_and_max_age_end_sessions(make_desk: MakeDesk) -> None:
    clock = FakeClock()
    d = await make_desk(cfg=fast_config(session_idle_s=600, session_max_s=3600), clock=clock)

    async def alive(s: aiohttp.ClientSession) -> bool:
        async with s.get(f"{d.url}/desk/", allow_redirects=False) as r:
            return r.status == 200

    async with client() as s:
        await sign_in(s, d, "operator")
        sid = session_cookie(s, d)
        for _ in range(7):  # used every 9 minutes: idle never reached, max age reached
            assert await alive(s)
            clock.advance(540)
        assert not await alive(s)
    async with client() as s:
        await sign_in(s, d, "operator")
        clock.advance(601)
        assert not await alive(s)
    async with client() as s:
        await sign_in(s, d, "operator")
        sid = session_cookie(s, d)
        token = await csrf_of(s, f"{d.url}/desk/")
        async with s.post(
            f"{d.url}/desk/signout", data={"csrf": token}, allow_redirects=False
        ) as r:
            assert r.status == 303
    async with client() as thief:  # the cookie copied before sign-out opens nothing
        plant(thief, d, sid or "")
        assert not await alive(thief)


async def test_cookies_and_headers(make_desk: MakeDesk) -> None:
    d = await make_desk()
    async with client() as s:
        token = await csrf_of(s, f"{d.url}/desk/signin")
        async with s.post(
            f"{d.url}/desk/signin",
            data={"csrf": token, "login": "operator", "password": PASSWORD},
            allow_redirects=False,
        ) as r:
            cookie = [v for v in r.headers.getall("Set-Cookie") if v.startswith("desk_session=")]
            assert len(cookie) == 1
            flags = cookie[0].lower()
            assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
            assert "secure" not in flags  # plain HTTP here: a Secure cookie would never return
        case = (await d.notice(notice_doc()))["case"]
        for path in (
            "/desk/",
            f"/desk/cases/{case}",
            "/desk/report",
            "/notice",
            "/desk/signin",
            "/static/clock.js",
            "/static/nope.js",
            "/desk/cases/999",
            "/nowhere",
        ):
            async with s.get(d.url + path, allow_redirects=False) as r:
                for name, value in SECURITY_HEADERS.items():
                    assert r.headers.get(name) == value, (path, name)
                assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
        async with s.get(f"{d.url}/desk/cases/999") as r:
            assert r.status == 404
        for path in (
            "/desk/cases/abc",
            "/desk/cases/-1",
            "/desk/report?from=x",
            "/desk/cases?state=<b>",
        ):
            async with s.get(d.url + path) as r:
                assert r.status in (400, 404), path


async def test_behind_tls_cookies_are_secure_and_host_bound(make_desk: MakeDesk) -> None:
    d = await make_desk(cfg=fast_config(behind_tls_proxy=True))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{d.url}/desk/signin") as r:
            pre = r.headers["Set-Cookie"]
            token = CSRF_RE.search(await r.text()).group(1)  # type: ignore[union-attr]
            assert pre.startswith("__Host-desk_pre=") and "Secure" in pre
            assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        value = pre.split(";")[0].split("=", 1)[1]
        async with s.post(
            f"{d.url}/desk/signin",
            data={"csrf": token, "login": "operator", "password": PASSWORD},
            headers={"Cookie": f"__Host-desk_pre={value}"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303
            sess = [v for v in r.headers.getall("Set-Cookie") if "desk_session" in v][0]
            assert sess.startswith("__Host-desk_session=") and "Secure" in sess


async def test_failed_sign_ins_are_rate_limited(make_desk: MakeDesk) -> None:
    clock = FakeClock()
    d = await make_desk(cfg=fast_config(signin_max_failures=3, signin_window_s=60), clock=clock)
    async with client() as s:
        for _ in range(3):
            assert (await sign_in(s, d, "operator", "wrong password!")).status == 401
        r = await sign_in(s, d, "operator")  # even the right password waits now
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        clock.advance(61)
        assert (await sign_in(s, d, "operator")).status == 303


async def test_public_form_posts_are_rate_limited(make_desk: MakeDesk) -> None:
    clock = FakeClock()
    d = await make_desk(cfg=fast_config(form_max_posts=2, form_window_s=600), clock=clock)
    async with client() as s:
        for expected in (422, 422, 429):
            token = await csrf_of(s, f"{d.url}/notice")
            async with s.post(f"{d.url}/notice", data={"csrf": token}) as r:
                assert r.status == expected
                if expected == 429:
                    assert 1 <= int(r.headers["Retry-After"]) <= 601
        clock.advance(600)
        token = await csrf_of(s, f"{d.url}/notice")
        async with s.post(f"{d.url}/notice", data={"csrf": token}) as r:
            assert r.status == 422


@pytest.mark.parametrize(
    "target",
    ["//evil.example/", "https://evil.example/", "/\\evil", "/notice", "javascript:alert(1)"],
)
async def test_sign_in_never_redirects_off_the_console(make_desk: MakeDesk, target: str) -> None:
    d = await make_desk()
    async with client() as s:
        token = await csrf_of(s, f"{d.url}/desk/signin")
        async with s.post(
            f"{d.url}/desk/signin",
            data={"csrf": token, "login": "operator", "password": PASSWORD, "next": target},
            allow_redirects=False,
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/desk/"


@pytest.mark.parametrize(
    ("ctype", "body", "status"),
    [
        ("multipart/form-data; boundary=xx", b"--xx\r\ngarbage", 400),
        ("multipart/form-data", b"abc", 400),
        ("application/x-www-form-urlencoded", b"%zz=%%%&csrf=\xff\xfe", 400),
        ("application/json", b"{}", 403),
        ("text/plain", b"\x00\x01", 403),
        ("application/x-www-form-urlencoded", b"a=" + b"x" * (2 << 20), 413),
    ],
)
async def test_malformed_posts_get_4xx_never_500(
    make_desk: MakeDesk, ctype: str, body: bytes, status: int
) -> None:
    d = await make_desk()
    async with client() as s:
        for path in ("/notice", "/desk/signin", "/desk/signout"):
            async with s.post(
                d.url + path, data=body, headers={"Content-Type": ctype}, allow_redirects=False
            ) as r:
                # Signed out, sign-out is refused before its body is read.
                assert r.status == (403 if path == "/desk/signout" else status), (path, r.status)
                assert r.headers["X-Frame-Options"] == "DENY"
