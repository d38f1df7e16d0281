"""Issue 15 in a real headless Chromium: "verify a customer and watch its site go live".

A real edge (`edgeproxy serve` with `[gate] enabled`, as tests/integration/test_gate_edge.py
sets it up) and the real takedown service with its desk. The site answers 421 on the edge; an
operator records the customer's identity and the evidence they checked, starts the http-01
validation (the origin serves the challenge once told to, as a customer would), checks it, and
sees the site domain-validated and live; the edge then answers 200 for the site.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

from proxy.blocklist.format import generate_keypair
from proxy.takedown.config import Publish, TakedownConfig, Verification
from tests.integration.node import TOKEN, Node
from tests.integration.test_gate_edge import IDENTITY, edge_config, get, origin_app
from tests.takedown.desk.conftest import MakeDesk, sign_in, until

SHA = "ab" * 32


async def fill_identity(page: Page, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        await page.fill(f"#{name}", value)
    await page.click("#save-identity")


async def test_verify_a_customer_and_watch_its_site_go_live(
    origin_server: Any, make_desk: MakeDesk, browser: Browser, tmp_path: Path
) -> None:
    challenges: dict[str, bytes] = {}
    origin = await origin_server(origin_app(challenges))
    private, public = generate_keypair()
    (tmp_path / "key.pem").write_bytes(private)
    (tmp_path / "key.pub").write_bytes(public)
    conf = edge_config(tmp_path, origin, tmp_path / "key.pub", tmp_path / "roster", 3600.0)
    node = Node(["--config", str(conf), "--workers", "1"])
    await node.start()
    try:
        policy = Verification(
            roster_signing_key=str(tmp_path / "key.pem"),
            dcv_http_via=f"127.0.0.1:{node.port}",
            check_interval_s=3600.0,
        )
        cfg = TakedownConfig(
            publish=Publish(retry_initial_s=0.02, retry_max_s=0.2, request_timeout_s=5.0),
            verification=policy,
        )
        d = await make_desk(edges=[node.admin], token=TOKEN, sites=["a.example"], cfg=cfg)
        await _walk(d.url, node, browser, challenges)
    finally:
        await node.stop()


async def _walk(base: str, node: Node, browser: Browser, challenges: dict[str, bytes]) -> None:
    status, body = await get(node, "a.example")
    assert status == 421 and b"not live" in body
    page = await browser.new_page()
    await sign_in(page, base)
    await expect(page).to_have_url(f"{base}/desk/")
    await page.click("header nav >> text=Customers")
    await expect(page).to_have_url(f"{base}/desk/customers")
    row = page.locator("#customers tbody tr", has_text="Acme")
    await expect(row).to_contain_text("none")
    await expect(row).to_contain_text("a.example held")
    await row.locator("a").click()
    site = page.locator('[id="site-a.example"]')
    await expect(site.locator(".site-live")).to_have_text("held")

    # A country that is no ISO code is refused with the reason; what was typed stays.
    await fill_identity(page, IDENTITY | {"country": "Germany"})
    await expect(page.locator("#action-error")).to_contain_text("country")
    assert await page.input_value("#legal_name") == IDENTITY["legal_name"]
    await fill_identity(page, IDENTITY | {"registration_number": "HRB 12345"})
    await expect(page.locator("#customer-level")).to_have_text("self-declared")
    await expect(page.locator("#identity")).to_contain_text("Acme Hosting GmbH")
    await expect(page.locator("#identity")).to_contain_text("HRB 12345")

    await page.select_option("#method", "company-register")
    await page.fill("#document_sha256", SHA)
    expires = dt.date.today() + dt.timedelta(days=365)
    await page.fill("#expires_on", expires.isoformat())
    await page.click("#save-evidence")
    await expect(page.locator("#customer-level")).to_have_text("documents-checked")
    await expect(page.locator("#evidence")).to_contain_text(f"sha256:{SHA}")
    await expect(page.locator("#evidence")).to_contain_text("in force")
    await expect(site.locator(".site-live")).to_have_text("held")  # documents are not enough

    await site.locator(".start-validation").click()
    url = await site.locator(".challenge-url").text_content() or ""
    expected = await site.locator(".challenge-body").text_content() or ""
    token = url.rsplit("/", 1)[1]
    assert url == f"http://a.example/.well-known/edgeproxy-challenge/{token}"
    assert expected.startswith(f"{token}.")
    # Checked before the customer serves it: the failure shows, the site stays held.
    await site.locator(".check-validation").click()
    await expect(site.locator(".validation-result")).to_contain_text("answered 404")
    await expect(site.locator(".validation-state")).to_have_text("pending")
    await expect(site.locator(".site-live")).to_have_text("held")
    challenges[token] = expected.encode()
    await site.locator(".check-validation").click()
    await expect(site.locator(".validation-state")).to_have_text("valid")
    await expect(site.locator(".validation-result")).to_have_text("passed")
    await expect(site.locator(".site-level")).to_have_text("domain-validated")
    await expect(site.locator(".site-live")).to_have_text("live")

    async def live() -> bool:
        return (await get(node, "a.example"))[0] == 200

    await until(live, what="the edge to serve the verified site")
    status, body = await get(node, "a.example")
    assert status == 200 and body.startswith(b"hello from ")
    assert (await get(node, "b.example"))[0] == 503  # another customer's site stays held
    await page.click("header nav >> text=Customers")
    await expect(row).to_contain_text("documents-checked")  # the customer's; the site's is more
    await expect(page.locator("#customers")).to_contain_text("a.example live")
    await expect(page.locator("#customers")).to_contain_text(expires.isoformat())
