"""Issue 15 in a real headless Chromium: an operator signs in, sees a new notice in the queue,
actions it, and watches the case reach `enforced` on two real edges (`edgeproxy serve`
subprocesses) whose 451 then links back to the case; a member of the public files the notice
form, first with an element missing (the error shows next to the field, nothing is stored),
then whole (the receipt page, and the receipt email through a real SMTP server)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import msgspec
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from tests.integration.node import TOKEN, Node
from tests.takedown.desk.conftest import MakeDesk, fast_config, notice_doc, sign_in, until
from tests.takedown.test_notify import Mailbox, notify_config


def origin_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="chapter 1", headers={"Cache-Control": "max-age=600"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def get(url: str) -> tuple[int, str, list[str]]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text(), r.headers.getall("Link", [])


async def case_state(page: Page) -> str:
    await page.reload()
    return (await page.text_content("#case-state") or "").strip()


async def test_operator_decides_in_the_browser_and_two_edges_enforce(
    origin_server, make_desk: MakeDesk, browser: Browser, tmp_path: Path
) -> None:
    origin = await origin_server(origin_app())
    conf = tmp_path / "edge.toml"
    nodes = [Node(["--config", str(conf), "--workers", "1"]) for _ in range(2)]
    d = await make_desk(
        edges=[n.admin for n in nodes],
        token=TOKEN,
        sites=[f"127.0.0.1:{n.port}" for n in nodes],
    )
    form_url = f"{d.url}/notice"
    conf.write_text(
        f'[[sites]]\nname = "manga"\nhosts = ["*"]\norigin = "{origin}"\n\n'
        f'[blocklist]\nnotice_form_url = "{form_url}"\n'
    )
    try:
        for n in nodes:
            await n.start()
        urls = [f"{n.url}/manga/ch1" for n in nodes]
        for u in urls:  # cached on the edges before the notice arrives
            assert (await get(u))[0] == 200
        page = await browser.new_page()
        await sign_in(page, d.url)
        await expect(page).to_have_url(f"{d.url}/desk/")
        created = await d.notice(
            notice_doc(*urls, complainant={"name": "Manga Rights KK", "email": "legal@example.jp"})
        )
        case = created["case"]
        assert created["state"] == "under_review"
        await page.reload()
        row = page.locator(f"#case-{case}")
        await expect(row).to_contain_text("Manga Rights KK")
        await expect(row.locator("time.clock")).to_have_attribute("data-live", "1")  # JS ran
        await row.locator("a").first.click()
        await expect(page).to_have_url(f"{d.url}/desk/cases/{case}")
        await page.fill("#reason", "Exact copies of Manga vol. 1 (notice verified).")
        await page.click("#decide-action")
        await expect(page).to_have_url(f"{d.url}/desk/cases/{case}")
        await until(lambda: _is(page, "enforced"), what="the case to be enforced")
        edges = page.locator("#edges tbody tr")
        await expect(edges).to_have_count(2)
        for i, n in enumerate(sorted(nodes, key=lambda n: n.admin)):
            await expect(edges.nth(i)).to_contain_text(n.admin)
            await expect(edges.nth(i).locator(".enforced-at")).not_to_have_text("–")
        await expect(page.locator("#timeline")).to_contain_text("decided")
        view = await d.case(case)
        assert [e["enforced_at"] is not None for e in view["edges"]] == [True, True]
        for u in urls:
            status, body, links = await get(u)
            assert status == 451, u
            assert f"{form_url}?ref=case%20{case}" in body
            assert any('rel="related"' in link for link in links)
        # The 451's link shows the public what became of the case, without the complainant.
        public = await browser.new_page()
        await public.goto(f"{form_url}?ref=case%20{case}")
        await expect(public.locator("#reference")).to_contain_text("enforced")
        await expect(public.locator("#reference")).not_to_contain_text("Manga Rights KK")
    finally:
        for n in nodes:
            await n.stop()


async def _is(page: Page, state: str) -> bool:
    return await case_state(page) == state


async def notices_stored(d: object) -> int:
    svc = d.svc  # type: ignore[attr-defined]
    return int(
        await svc.store.run(lambda c: c.execute("SELECT COUNT(*) FROM notices").fetchone()[0])
    )


async def fill_notice(page: Page, **skip: bool) -> None:
    values = {
        "#complainant_name": "Jo Public",
        "#complainant_email": "jo@public.example",
        "#complainant_address": "1 High St",
        "#works": "Song A\nSong B",
        "#urls": "https://cdn.example/a.mp3\nhttps://cdn.example/b.mp3",
        "#explanation": "Full copies of my recordings.",
        "#signature": "Jo Public",
    }
    for sel, value in values.items():
        if not skip.get(sel.strip("#")):
            await page.fill(sel, value)
    if not skip.get("legal_basis"):
        await page.select_option("#legal_basis", "hosted")
    for box in ("#good_faith", "#accurate"):
        if not skip.get(box.strip("#")):
            await page.check(box)


async def test_public_form_inline_errors_then_receipt_and_email(
    make_desk: MakeDesk,
    browser: Browser,
    smtp: tuple[Mailbox, int],  # noqa: F811
) -> None:
    box, port = smtp
    d = await make_desk(cfg=msgspec.structs.replace(fast_config(), notify=notify_config(port)))
    page = await browser.new_page()
    await page.goto(f"{d.url}/")
    await expect(page).to_have_url(f"{d.url}/notice")
    await fill_notice(page, signature=True, accurate=True)
    async with page.expect_response(f"{d.url}/notice") as resp:
        await page.click("#submit-notice")
    assert (await resp.value).status == 422
    await expect(page.locator("#error-signature")).to_be_visible()
    await expect(page.locator("#error-signature")).to_contain_text("signature")
    await expect(page.locator("#error-accurate")).to_be_visible()
    await expect(page.locator("#signature")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#error-complainant_name")).to_have_count(0)
    await expect(page.locator("#complainant_name")).to_have_value("Jo Public")  # kept
    await expect(page.locator("#urls")).to_have_value(
        "https://cdn.example/a.mp3\nhttps://cdn.example/b.mp3"
    )
    assert await notices_stored(d) == 0
    await page.fill("#signature", "Jo Public")
    await page.check("#accurate")
    async with page.expect_response(f"{d.url}/notice") as resp:
        await page.click("#submit-notice")
    assert (await resp.value).status == 201
    ref = (await page.text_content("#case-ref") or "").strip()
    assert ref.startswith("case ")
    case = int(ref.split()[1])
    await expect(page.locator("#receipt-targets li")).to_have_count(2)
    await expect(page.locator("#receipt-targets")).to_contain_text("accepted")
    view = await d.case(case)
    assert view["state"] == "under_review"
    [notice] = view["notices"]
    assert notice["complete"]
    await until(lambda: _mail(box), what="the receipt email")
    [mail] = box.to("jo@public.example")
    assert f"case {case}" in mail["Subject"]


async def _mail(box: Mailbox) -> bool:
    return bool(box.to("jo@public.example"))


async def test_public_form_rejects_unusable_urls_inline(
    make_desk: MakeDesk, browser: Browser
) -> None:
    d = await make_desk()
    page = await browser.new_page()
    await page.goto(f"{d.url}/notice")
    await fill_notice(page, urls=True)
    await page.fill("#urls", "ftp://cdn.example/a.mp3\nnot a url")
    await page.click("#submit-notice")
    await expect(page.locator("#error-urls")).to_contain_text("not usable")
    assert await notices_stored(d) == 0


async def test_the_screenshot_command_writes_the_four_pictures(tmp_path: Path) -> None:
    from proxy.takedown.desk import screenshots

    shots = await screenshots.shoot(tmp_path)
    names = ["desk-queue.png", "desk-case.png", "desk-report.png", "desk-customer.png"]
    assert [p.name for p in shots] == names
    for p in shots:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    for p in shots:
        assert f"(docs/{p.name})" in readme
        assert (Path(__file__).resolve().parents[3] / "docs" / p.name).exists()


async def test_over_tls_the_session_cookie_is_secure_and_host_bound(
    make_desk: MakeDesk, browser: Browser, tmp_path: Path
) -> None:
    from proxy.node.localca import LocalCA
    from proxy.takedown.desk.cli import start_desk
    from tests.integration.conftest import free_port

    leaf = LocalCA(tmp_path / "ca").issue(["127.0.0.1"])
    d = await make_desk(cfg=fast_config(tls_cert_file=leaf.cert_file, tls_key_file=leaf.key_file))
    port = free_port()
    runner = await start_desk(d.svc, ("127.0.0.1", port))
    try:
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        await sign_in(page, f"https://127.0.0.1:{port}")
        await expect(page).to_have_url(f"https://127.0.0.1:{port}/desk/")
        cookies = {c["name"]: c for c in await context.cookies()}
        session = cookies["__Host-desk_session"]
        assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
        assert session["path"] == "/" and "desk_session" not in cookies
        assert cookies["__Host-desk_pre"]["secure"]
        response = await page.goto(f"https://127.0.0.1:{port}/desk/report")
        assert response is not None
        assert (await response.all_headers())["strict-transport-security"].startswith("max-age")
        await context.close()
    finally:
        await runner.cleanup()
