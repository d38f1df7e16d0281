"""The console's customer-verification actions over real HTTP: each calls the service's own
`Kyc` coroutine, so the API's refusals (a missing identity field, a bad digest, an expiry in the
past, an unknown method) come back on the page with the reason and store nothing; the reviewer
is the signed-in account; a failed domain check shows what was found; a dns-01 check through
the service's resolver seam makes the site domain-validated and live."""

from __future__ import annotations

import datetime as dt

from proxy.takedown import dcv
from proxy.takedown.config import Publish, TakedownConfig, Verification
from tests.integration.conftest import free_port
from tests.takedown.desk.conftest import MakeDesk
from tests.takedown.desk.test_desk_console import post
from tests.takedown.desk.test_desk_security import client, sign_in

IDENTITY = {
    "legal_name": "Acme Hosting GmbH",
    "address": "Hauptstr. 1, 10115 Berlin",
    "country": "de",
    "contact_email": "legal@acme.example",
}


def config() -> TakedownConfig:
    # Challenges are fetched from a closed port: a check fails at once, with the reason.
    return TakedownConfig(
        publish=Publish(retry_initial_s=0.02, retry_max_s=0.2, request_timeout_s=5.0),
        verification=Verification(dcv_http_via=f"127.0.0.1:{free_port()}", dcv_timeout_s=5.0),
    )


async def test_identity_and_evidence_refusals_then_levels(make_desk: MakeDesk) -> None:
    d = await make_desk(cfg=config())
    cust = f"{d.url}/desk/customers/1"
    kyc = d.svc.kyc
    async with client() as s:
        await sign_in(s, d, "operator")
        for path in ("/desk/customers/999", "/desk/customers/abc", "/desk/customers/-1"):
            async with s.get(d.url + path) as r:
                assert r.status == 404, path
        status, page = await post(s, f"{cust}/identity", IDENTITY | {"address": ""})
        assert status == 400 and "identity record lacks address" in page
        assert "Acme Hosting GmbH" in page  # what was typed is kept
        status, page = await post(s, f"{cust}/identity", IDENTITY | {"contact_email": "nobody"})
        assert status == 400 and "contact_email" in page
        assert (await kyc.customer("1"))["identity"] is None
        status, _ = await post(s, f"{cust}/identity", IDENTITY)
        assert status == 303
        view = await kyc.customer("1")
        assert view["level"] == "self-declared" and view["identity"]["country"] == "DE"
        assert view["identity"]["updated_by"].startswith("operator:")

        tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)).isoformat()
        ok = {"method": "passport", "document_ref": "P1234567", "expires_on": tomorrow}
        refusals = [
            ({"method": "a hunch"}, "document methods"),
            ({"document_ref": "", "document_sha256": "xyz"}, "64 lowercase hex"),
            ({"document_ref": ""}, "give document_ref or document_sha256"),
            ({"expires_on": "2001-01-01"}, "in the future"),
            ({"expires_on": "next year"}, "YYYY-MM-DD"),
        ]
        for change, why in refusals:
            status, page = await post(s, f"{cust}/evidence", ok | change)
            assert status == 400 and why in page, (change, status)
        assert (await kyc.customer("1"))["evidence"] == []
        status, _ = await post(s, f"{cust}/evidence", ok | {"document_sha256": "AB" * 32})
        assert status == 303
        view = await kyc.customer("1")
        [e] = view["evidence"]
        assert e["reviewer_id"] == d.ids["operator"] and e["document_sha256"] == "ab" * 32
        assert view["level"] == "documents-checked"
        async with s.get(f"{d.url}/desk/customers") as r:
            text = await r.text()
            assert "documents-checked" in text and "cdn.example <span" in text


async def test_validation_start_check_and_refusals(make_desk: MakeDesk) -> None:
    d = await make_desk(cfg=config())
    acct = await d.svc.authenticate(d.keys["admin"])
    assert acct is not None
    kyc = d.svc.kyc
    await kyc.record_identity(acct, "1", IDENTITY)
    await kyc.add_evidence(acct, "1", {"method": "passport", "document_ref": "P1"})
    sites = f"{d.url}/desk/sites"
    async with client() as s:
        await sign_in(s, d, "operator")
        status, _ = await post(s, f"{sites}/nowhere.example/validations", {"method": "http-01"})
        assert status == 404
        status, page = await post(s, f"{sites}/cdn.example/validations", {"method": "tls-alpn-01"})
        assert status == 400 and "method must be one of" in page
        status, _ = await post(s, f"{sites}/cdn.example/validations", {"method": "http-01"})
        assert status == 303
        [v] = (await kyc.site("cdn.example"))["validations"]
        async with s.get(f"{d.url}/desk/customers/1") as r:
            page = await r.text()
        assert "/.well-known/edgeproxy-challenge/" in page and "held" in page
        for bad in (f"{sites}/cdn.example/validations/999", f"{sites}/other.example/validations/1"):
            status, _ = await post(s, f"{bad}/check", {})
            assert status == 404, bad
        status, _ = await post(s, f"{sites}/cdn.example/validations/{v['id']}/check", {})
        assert status == 303
        [v] = (await kyc.site("cdn.example"))["validations"]
        assert v["state"] == "pending" and "ClientConnectorError" in v["last_error"]
        async with s.get(f"{d.url}/desk/customers/1") as r:
            assert "ClientConnectorError" in await r.text()

        # dns-01, answered by the service's resolver seam with the expected TXT value.
        status, _ = await post(s, f"{sites}/cdn.example/validations", {"method": "dns-01"})
        assert status == 303
        *_, w = (await kyc.site("cdn.example"))["validations"]
        key_auth = await d.svc.store.run(
            lambda c: c.execute(
                "SELECT key_authorization FROM domain_validations WHERE id = ?", (w["id"],)
            ).fetchone()[0]
        )
        async with s.get(f"{d.url}/desk/customers/1") as r:
            assert dcv.txt_value(key_auth) in await r.text()  # what to publish is shown

        async def resolver(name: str, timeout_s: float) -> list[str]:
            assert name == "_edgeproxy-challenge.cdn.example"
            return [dcv.txt_value(key_auth)]

        kyc.txt_resolver = resolver
        status, _ = await post(s, f"{sites}/cdn.example/validations/{w['id']}/check", {})
        assert status == 303
        site = await kyc.site("cdn.example")
        assert (site["level"], site["live"]) == ("domain-validated", True)
        # A passed validation is not checked again: the page says to start a new one.
        status, page = await post(s, f"{sites}/cdn.example/validations/{w['id']}/check", {})
        assert status == 400 and "start a new one" in page
