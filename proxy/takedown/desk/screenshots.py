"""Regenerate the desk screenshots under docs/: `python -m proxy.takedown.desk.screenshots`
(or `make screenshots`).

Builds a demo database on a fixed fake clock (notices under review with different deadlines, one
overdue, actioned and enforced cases, a counter-notice with its restore scheduled, a rejected and
an incomplete notice, a suspended site), serves the real desk on 127.0.0.1, signs in with
Debian's Chromium (Playwright) and saves the queue, a case page, the report and a customer's
verification page as PNG. The two
edges here are in-process stand-ins that acknowledge each version after a fixed, simulated
delay (the browser tests use real edges); everything else is the service's own code.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.takedown import accounts
from proxy.takedown.accounts import Account, Role, Verification
from proxy.takedown.config import Strikes, TakedownConfig
from proxy.takedown.desk import passwords
from proxy.takedown.desk.build import build_desk_app
from proxy.takedown.publisher import Ack
from proxy.takedown.service import TakedownService

CHROMIUM = "/usr/bin/chromium"
NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC).timestamp()
PASSWORD = "screenshot-demo-password"
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW - 30 * HOUR

    def __call__(self) -> float:
        return self.now


class DemoEdge:
    """Acknowledges every version `delay_s` after it is sent (simulated, for the pictures)."""

    def __init__(self, name: str, clock: Clock, delay_s: float) -> None:
        self.name, self._clock, self._delay_s, self._version = name, clock, delay_s, 100

    async def deliver(
        self, kind: str, entries: list[dict[str, str]], audit_head: dict[str, Any] | None = None
    ) -> Ack:
        self._version += 1
        return Ack(self._version, self._clock() + self._delay_s)


def notice(title: str, *urls: str, who: str = "Rights Assoc.", **over: Any) -> bytes:
    doc: dict[str, Any] = {
        "complainant": {"name": who, "email": "legal@rights.example", "address": "1 Main St"},
        "works": [{"title": title}],
        "targets": [{"url": u} for u in urls],
        "legal_basis": "hosted",
        "statements": {"good_faith": True, "accurate": True},
        "signature": "R. Holder",
        "explanation": f"Unlicensed full copies of {title}.",
    }
    doc.update(over)
    return json.dumps(doc).encode()


async def _settle(svc: TakedownService, case: int, *states: str) -> None:
    async with asyncio.timeout(10):
        while (view := await svc.case(case)) is None or view["state"] not in states:
            await asyncio.sleep(0.02)


async def parties(svc: TakedownService, clock: Clock) -> tuple[Account, Account, Account]:
    """Two sites, a trusted submitter, a submitter and the operator "desk" (with a password)."""
    run = svc.store.run_sync
    run(accounts.add_site, "manga.example", "Pirate Reader Ltd", clock(), None, None)
    run(
        accounts.add_site,
        "video.example",
        "StreamCo",
        clock(),
        Verification.VERIFIED_ENTITY,
        "registry",
    )
    keys = {
        r: run(accounts.create_account, n, r, clock())
        for n, r in (
            ("Rights Assoc.", Role.TRUSTED),
            ("Indie Label", Role.SUBMITTER),
            ("desk", Role.OPERATOR),
        )
    }
    ids = {r: accounts.parse_key(k) or 0 for r, k in keys.items()}
    run(
        passwords.set_password,
        ids[Role.OPERATOR],
        "desk",
        passwords.hash_password(PASSWORD),
        clock(),
    )
    trusted = await svc.authenticate(keys[Role.TRUSTED])
    sub = await svc.authenticate(keys[Role.SUBMITTER])
    op = await svc.authenticate(keys[Role.OPERATOR])
    assert trusted and sub and op
    return trusted, sub, op


async def populate(svc: TakedownService, clock: Clock) -> tuple[int, int]:
    """The demo's cases and customers; returns the case and the customer whose pages are
    shown."""
    trusted, sub, op = await parties(svc, clock)
    first = await svc.submit_notice(
        trusted,
        notice("Manga vol. 1", "https://manga.example/vol1/ch1", "https://manga.example/vol1/ch2"),
        "203.0.113.7",
    )
    await _settle(svc, first["case"], "enforced")
    clock.now += 3 * HOUR  # 27 h before now: overdue by now
    await svc.submit_notice(
        sub,
        notice("Album B", "https://video.example/live/b.mp4", who="Indie Label"),
        "198.51.100.4",
    )
    clock.now += 7 * HOUR
    shown = await svc.submit_notice(
        sub,
        notice("Film C", "https://video.example/films/c.mp4", who="Indie Label"),
        "198.51.100.4",
    )
    clock.now += 0.25 * HOUR
    await svc.decide(
        op,
        shown["case"],
        "action",
        "The stream is an exact copy of Film C; the notice identifies the work and the location.",
    )
    await _settle(svc, shown["case"], "enforced")
    clock.now += 2 * HOUR
    second = await svc.submit_notice(
        trusted, notice("Manga vol. 2", "https://manga.example/vol2/ch1"), "203.0.113.7"
    )
    await _settle(svc, second["case"], "enforced")
    counter = {
        "subscriber": {"name": "Pirate Reader Ltd", "address": "9 Dock Rd", "phone": "+44 20 0000"},
        "material": ["https://manga.example/vol1/ch1"],
        "statements": {
            "good_faith_mistake": True,
            "consent_to_jurisdiction": True,
            "accept_service": True,
        },
        "signature": "P. Reader",
    }
    clock.now += 1 * HOUR
    await svc.counter_notice(op, first["case"], json.dumps(counter).encode())
    clock.now += 4 * HOUR
    await svc.submit_notice(
        sub, notice("Song D", "https://video.example/clip/d.mp4", who="Indie Label"), "198.51.100.4"
    )
    rejected = await svc.submit_notice(
        sub, notice("Song E", "https://video.example/e.mp4", who="Indie Label"), "198.51.100.4"
    )
    await svc.decide(
        op, rejected["case"], "reject", "The clip is a 10-second quotation in a review."
    )
    await svc.submit_notice(
        sub, notice("Song F", "https://video.example/f.mp4", signature=""), "192.0.2.9"
    )
    clock.now = NOW - 5 * HOUR
    await svc.submit_notice(
        sub,
        notice(
            "Series G ep. 3",
            "https://video.example/g/3.mp4",
            "https://video.example/g/4.mp4",
            who="Indie Label",
        ),
        "198.51.100.4",
    )
    clock.now = NOW - 0.5 * HOUR
    customer = await verify_streamco(svc, op, clock)
    clock.now = NOW
    return int(shown["case"]), customer


async def verify_streamco(svc: TakedownService, op: Account, clock: Clock) -> int:
    """StreamCo's customer page: identity, evidence, video.example validated by dns-01 (the
    resolver seam answers, as the customer's DNS would), a second site with its http-01
    challenge pending; returns its customer id."""
    kyc = svc.kyc
    await kyc.put_site(op, "cdn.streamco.example", "StreamCo")
    identity = {
        "legal_name": "StreamCo Media B.V.",
        "address": "Keizersgracht 1, 1015 CJ Amsterdam",
        "country": "NL",
        "registration_number": "KvK 12345678",
        "contact_email": "abuse@streamco.example",
    }
    await kyc.record_identity(op, "StreamCo", identity)
    doc = hashlib.sha256(b"KvK extract, StreamCo Media B.V.").hexdigest()
    await kyc.add_evidence(op, "StreamCo", {"method": "company-register", "document_sha256": doc})
    dns = await kyc.start_validation(op, "video.example", "dns-01")

    async def txt(name: str, timeout_s: float) -> list[str]:
        return [dns["challenge"]["value"]]

    kyc.txt_resolver = txt
    await kyc.check_validation(op, "video.example", dns["id"])
    await kyc.start_validation(op, "cdn.streamco.example", "http-01")
    return int((await kyc.site("video.example"))["customer_id"])


async def shoot(out: Path) -> list[Path]:
    from playwright.async_api import async_playwright

    clock = Clock()
    cfg = TakedownConfig(strikes=Strikes(unverified_warn_at=1, unverified_suspend_at=2))
    with tempfile.TemporaryDirectory() as tmp:
        edges = [
            DemoEdge("https://edge-fra-1.example:8081", clock, 0.41),
            DemoEdge("https://edge-nrt-1.example:8081", clock, 0.73),
        ]
        svc = TakedownService(Path(tmp) / "demo.db", cfg, edges=edges, clock=clock)
        await svc.start()
        runner = web.AppRunner(build_desk_app(svc), access_log=None)
        try:
            case, customer = await populate(svc, clock)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            base = f"http://127.0.0.1:{site.port}"
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(f"{base}/desk/signin")
                await page.fill("#login", "desk")
                await page.fill("#password", PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{base}/desk/")
                shots = []
                for name, path in (
                    ("desk-queue", "/desk/"),
                    ("desk-case", f"/desk/cases/{case}"),
                    ("desk-report", "/desk/report?from=2026-01-01&to=2026-03-31"),
                    ("desk-customer", f"/desk/customers/{customer}"),
                ):
                    await page.goto(base + path)
                    target = out / f"{name}.png"
                    await page.screenshot(path=str(target), full_page=True)
                    shots.append(target)
                await browser.close()
        finally:
            await runner.cleanup()
            await svc.stop()
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs", help="directory for the PNGs (default docs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the demo has no SMTP server: say so once, here
    print("the demo sends no email (no SMTP server): its receipts fail, visibly, on each case")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
