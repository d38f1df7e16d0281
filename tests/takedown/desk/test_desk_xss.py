"""Issue 15: a complainant controls every text field of a notice, and the desk shows them all.
Each field carries markup that would run script if it reached the DOM as markup; in a real
Chromium every page that shows it must hold it as text: no element the payload would create
exists, the script never ran, and the literal text is on the page.

The CSP (script-src 'self') would block an inline script even if escaping failed, so the DOM
is checked for the elements themselves: this tests the escaping, not only the CSP."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.takedown.desk.conftest import MakeDesk, notice_doc, sign_in

PAYLOADS = [
    "<script>window.__xss=(window.__xss||0)+1</script>",
    '<img src=x onerror="window.__xss=1">',
    '"><svg onload="window.__xss=1"></svg>',
    "</textarea></pre><script>window.__xss=1</script>",
    '{{ 7*7 }}<iframe srcdoc="<script>parent.__xss=1</script>"></iframe>',
]
# Elements only an injected payload would create (the pages' own script has src=clock.js).
INJECTED = "script:not([src='/static/clock.js']), img, svg[onload], iframe, [onerror], [onload]"


def hostile(p: str, n: int) -> dict[str, Any]:
    return notice_doc(
        "https://cdn.example/a.mp3",
        f"https://cdn.example/{n}?q={p}",
        complainant={
            "name": f"name {p}",
            "email": f"x{n}@rights.example {p}",
            "address": f"address {p}",
            "phone": f"phone {p}",
            "acting_for": f"owner {p}",
        },
        works=[{"title": f"title {p}"}, {"description": f"description {p}"}],
        explanation=f"explanation {p}",
        evidence=f"evidence {p}",
        signature=f"signature {p}",
        extra={"field": p},
    )


async def assert_inert(page: Page, url: str, *expected: str) -> None:
    await page.goto(url)
    await page.wait_for_load_state("load")
    injected = await page.eval_on_selector_all(INJECTED, "els => els.map(e => e.outerHTML)")
    assert injected == [], (url, injected)
    assert await page.evaluate("window.__xss") is None, url
    text = await page.inner_text("body")
    for e in expected:
        assert e in text, (url, e)


@pytest.mark.parametrize("n", range(len(PAYLOADS)))
async def test_notice_fields_are_inert_on_every_page(
    make_desk: MakeDesk, browser: Browser, n: int
) -> None:
    p = PAYLOADS[n]
    d = await make_desk()
    created = await d.notice(hostile(p, n))
    case = created["case"]
    # The same document with a hostile legal basis is kept as incomplete, and shown too.
    incomplete = await d.notice(hostile(p, n) | {"legal_basis": p}, who="trusted")
    page = await browser.new_page()
    await sign_in(page, d.url)
    await assert_inert(page, f"{d.url}/desk/", f"name {p}", f"title {p}")
    await assert_inert(page, f"{d.url}/desk/cases", f"name {p}")
    await assert_inert(page, f"{d.url}/desk/cases?state=incomplete", f"name {p}")
    expected = [
        f"{f} {p}"
        for f in (
            "name",
            "address",
            "phone",
            "owner",
            "title",
            "explanation",
            "evidence",
            "signature",
        )
    ]
    await assert_inert(page, f"{d.url}/desk/cases/{case}", *expected)
    await assert_inert(page, f"{d.url}/desk/cases/{incomplete['case']}", f"name {p}")
    # Actioned with a hostile reason too: the statement, the blocklist entry's reason.
    await page.goto(f"{d.url}/desk/cases/{case}")
    await page.fill("#reason", f"reason {p}")
    await page.click("#decide-action")
    await page.wait_for_url(f"{d.url}/desk/cases/{case}")
    await assert_inert(page, f"{d.url}/desk/cases/{case}", f"reason {p}", f"title {p}")
    await assert_inert(page, f"{d.url}/desk/blocklist", f"title {p}")
    await assert_inert(page, f"{d.url}/desk/strikes")
    await assert_inert(page, f"{d.url}/desk/report")


async def test_public_form_fields_are_inert_on_the_form_and_the_receipt(
    make_desk: MakeDesk, browser: Browser
) -> None:
    d = await make_desk()
    p = PAYLOADS[0] + PAYLOADS[1] + PAYLOADS[3]
    page = await browser.new_page()
    await page.goto(f"{d.url}/notice")
    for field in (
        "complainant_name",
        "complainant_address",
        "complainant_phone",
        "acting_for",
        "works",
        "explanation",
    ):
        await page.fill(f"#{field}", f"{field} {p}")
    await page.fill("#urls", "https://cdn.example/a.mp3")
    await page.fill("#complainant_email", "jo@public.example")
    await page.click("#submit-notice")  # no signature: the form comes back with the values
    await page.wait_for_selector("#error-signature")
    assert await page.eval_on_selector_all(INJECTED, "els => els.length") == 0
    assert await page.input_value("#complainant_name") == f"complainant_name {p}"
    assert await page.input_value("#works") == f"works {p}"
    await page.fill("#signature", f"sig {p}")
    await page.select_option("#legal_basis", "hosted")
    await page.check("#good_faith")
    await page.check("#accurate")
    await page.click("#submit-notice")
    await page.wait_for_selector("#case-ref")
    assert await page.eval_on_selector_all(INJECTED, "els => els.length") == 0
    assert await page.evaluate("window.__xss") is None
    case = int((await page.text_content("#case-ref") or "").split()[1])
    staff = await browser.new_page()
    await sign_in(staff, d.url)
    await assert_inert(
        staff, f"{d.url}/desk/cases/{case}", f"complainant_name {p}", f"sig {p}", f"works {p}"
    )


@pytest.mark.parametrize("n", range(len(PAYLOADS)))
async def test_customer_identity_fields_are_inert(
    make_desk: MakeDesk, browser: Browser, n: int
) -> None:
    """A customer writes its own identity record (and names itself): the customers list and
    the customer page hold every field as text, and so does the form shown again after a
    refusal."""
    p = PAYLOADS[n]
    d = await make_desk()
    acct = await d.svc.authenticate(d.keys["operator"])
    assert acct is not None
    kyc = d.svc.kyc
    cid = (await kyc.put_site(acct, "x.example", f"cust {p}"))["customer_id"]
    fields = {
        "legal_name": f"legal {p}",
        "address": f"address {p}",
        "country": "DE",
        "registration_number": f"reg {p}",
        "contact_email": f"x@example.org {p}",
        "contact_phone": f"phone {p}",
    }
    await kyc.record_identity(acct, str(cid), fields)
    await kyc.add_evidence(acct, str(cid), {"method": f"m {p}"[:100], "document_ref": f"doc {p}"})
    await kyc.start_validation(acct, "x.example", "http-01")
    page = await browser.new_page()
    await sign_in(page, d.url)
    await assert_inert(page, f"{d.url}/desk/customers", f"cust {p}")
    shown = [f"{k} {p}" for k in ("cust", "legal", "address", "reg", "phone", "doc")]
    await assert_inert(page, f"{d.url}/desk/customers/{cid}", *shown)
    for name, value in fields.items():
        assert await page.input_value(f"#{name}") == value
    # Refused (no country code): the page comes back with what was typed, still as text.
    await page.fill("#legal_name", f"again {p}")
    await page.fill("#country", f"{p}")
    await page.click("#save-identity")
    await page.wait_for_selector("#action-error")
    assert await page.eval_on_selector_all(INJECTED, "els => els.length") == 0
    assert await page.evaluate("window.__xss") is None
    assert await page.input_value("#legal_name") == f"again {p}"
    assert await page.input_value("#country") == p
