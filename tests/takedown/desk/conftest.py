"""Fixtures for the desk: the takedown service with its API and its desk on 127.0.0.1, staff
accounts with passwords, and a real headless Chromium (Debian's, through Playwright).

The browser is never optional: `.ci/run` installs /usr/bin/chromium, and a missing one fails
the tests rather than skipping them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from proxy.takedown import accounts
from proxy.takedown.accounts import Role, Verification
from proxy.takedown.api import build_app
from proxy.takedown.config import Desk, Publish, TakedownConfig
from proxy.takedown.desk import passwords, schema
from proxy.takedown.desk.build import build_desk_app
from proxy.takedown.service import TakedownService
from tests.integration.conftest import origin_server  # noqa: F401 (a fixture used here)
from tests.takedown.test_notify import smtp  # noqa: F401 (a fixture used here)

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
# Staff sign in; the others have a password too (set behind the CLI's back) and must be refused.
LOGINS = {
    "operator": Role.OPERATOR,
    "admin": Role.ADMIN,
    "submitter": Role.SUBMITTER,
    "trusted": Role.TRUSTED,
}
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def fast_config(**desk: Any) -> TakedownConfig:
    return TakedownConfig(
        publish=Publish(retry_initial_s=0.02, retry_max_s=0.2, request_timeout_s=5.0),
        desk=Desk(**desk),
    )


@dataclass
class Desk_:
    svc: TakedownService
    api: str  # base URLs
    url: str
    keys: dict[str, str]
    ids: dict[str, int]
    runners: list[web.AppRunner] = field(default_factory=list)

    async def notice(self, doc: dict[str, Any], who: str = "submitter") -> dict[str, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"{self.api}/notices",
                data=msgspec.json.encode(doc),
                headers={"Authorization": f"Bearer {self.keys[who]}"},
            ) as r:
                body: dict[str, Any] = await r.json()
                assert r.status in (201, 422), body
                return body

    async def case(self, case_id: int) -> dict[str, Any]:
        view = await self.svc.case(case_id)
        assert view is not None
        return view


def _force_password(conn: Any, account_id: int, login: str) -> None:
    """What `set-password` refuses for non-staff: done directly, so the desk must refuse too."""
    schema.ensure(conn)
    conn.execute(
        "UPDATE accounts SET login = ?, password_hash = ? WHERE id = ?",
        (login, passwords.hash_password(PASSWORD), account_id),
    )


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site.port}"


MakeDesk = Callable[..., Awaitable[Desk_]]


@pytest.fixture
async def make_desk(tmp_path: Path) -> AsyncIterator[MakeDesk]:
    made: list[Desk_] = []

    async def make(
        *,
        edges: Sequence[str] = (),
        token: str = "",
        sites: Sequence[str] = (),
        cfg: TakedownConfig | None = None,
        clock: Callable[[], float] = time.time,
        service: type[TakedownService] = TakedownService,
    ) -> Desk_:
        svc = service(
            tmp_path / f"desk{len(made)}.db",
            cfg or fast_config(),
            edge_urls=list(edges),
            admin_token=token,
            clock=clock,
        )
        now = svc.clock()
        keys, ids = {}, {}
        for login, role in LOGINS.items():
            keys[login] = svc.store.run_sync(accounts.create_account, login, role, now)
            ids[login] = accounts.parse_key(keys[login]) or 0
        for login in ("operator", "admin"):
            hashed = passwords.hash_password(PASSWORD)
            svc.store.run_sync(passwords.set_password, ids[login], login, hashed, now)
        for login in ("submitter", "trusted"):
            svc.store.run_sync(_force_password, ids[login], login)
        for host in sites or ["cdn.example"]:
            svc.store.run_sync(
                accounts.add_site, host, "Acme", now, Verification.VERIFIED_ENTITY, "registry"
            )
        api_runner, api = await _serve(build_app(svc))
        desk_runner, url = await _serve(build_desk_app(svc))
        d = Desk_(svc, api, url, keys, ids, [desk_runner, api_runner])
        made.append(d)
        return d

    yield make
    for d in made:
        for r in d.runners:
            await r.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def sign_in(page: Page, base: str, login: str = "operator", password: str = PASSWORD) -> None:
    await page.goto(f"{base}/desk/signin")
    await page.fill("#login", login)
    await page.fill("#password", password)
    await page.click("button[type=submit]")


async def until(
    cond: Callable[[], Awaitable[bool]], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def notice_doc(*urls: str, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "complainant": {"name": "Rights Org", "email": "legal@rights.example"},
        "works": [{"title": "Song A"}],
        "targets": [{"url": u} for u in urls] or [{"url": "https://cdn.example/a.mp3"}],
        "legal_basis": "hosted",
        "statements": {"good_faith": True, "accurate": True},
        "signature": "R. Holder",
    }
    doc.update(over)
    return doc
