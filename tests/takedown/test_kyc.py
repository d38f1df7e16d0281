"""Customer verification in the service (issue 15): identity, evidence, levels, domain-control
validation through a real HTTP server, expiry, the roster, disclosures, accounts, and who may
call each route."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.takedown import roster
from proxy.takedown.config import Verification
from tests.takedown.conftest import Env, MakeEnv, fast_config

IDENTITY = {
    "legal_name": "Acme Hosting GmbH",
    "address": "Hauptstr. 1, 10115 Berlin",
    "country": "de",
    "registration_number": "HRB 12345",
    "contact_email": "legal@acme.example",
}
DOC = hashlib.sha256(b"scan of the register extract").hexdigest()


class Origin:
    """A customer's origin on 127.0.0.1 that serves whatever challenge files it is given."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hosts: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        body = self.files.get(request.path)
        return web.Response(body=body) if body is not None else web.Response(status=404)


@pytest.fixture
async def origin() -> AsyncIterator[tuple[Origin, str]]:
    o = Origin()
    app = web.Application()
    app.router.add_get("/{tail:.*}", o.handle)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield o, f"127.0.0.1:{srv.port}"
    await srv.close()


async def kyc_env(make_env: MakeEnv, via: str = "", **over: Any) -> Env:
    policy = Verification(dcv_http_via=via, check_interval_s=3600.0, **over)
    return await make_env(n_edges=1, cfg=fast_config(verification=policy))


async def call(
    env: Env, method: str, path: str, who: str = "operator", body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else msgspec.json.encode(body)
    r = await env.client.request(method, path, data=data, headers=env.auth(who))
    return r.status, await r.json()


async def verify_documents(env: Env, customer: str = "Acme") -> None:
    status, out = await call(env, "PUT", f"/customers/{customer}/identity", body=IDENTITY)
    assert status == 200, out
    status, out = await call(
        env,
        "POST",
        f"/customers/{customer}/evidence",
        body={"method": "company-register", "document_sha256": DOC},
    )
    assert status == 201, out


async def validate_http(env: Env, o: Origin, host: str = "cdn.example") -> dict[str, Any]:
    status, ch = await call(env, "POST", f"/sites/{host}/validations", body={"method": "http-01"})
    assert status == 201, ch
    path = ch["challenge"]["url"].split(host, 1)[1]
    o.files[path] = ch["challenge"]["body"].encode()
    status, out = await call(env, "POST", f"/sites/{host}/validations/{ch['id']}/check")
    assert status == 200, out
    return dict(out)


async def test_levels_rise_with_identity_evidence_and_dcv(make_env: MakeEnv, origin: Any) -> None:
    o, via = origin
    env = await kyc_env(make_env, via)
    _, site = await call(env, "GET", "/sites/cdn.example")
    assert (site["level"], site["live"]) == ("none", False)
    await call(env, "PUT", "/customers/Acme/identity", body=IDENTITY)
    _, cust = await call(env, "GET", "/customers/Acme")
    assert cust["level"] == "self-declared" and cust["identity"]["country"] == "DE"
    await verify_documents(env)
    _, site = await call(env, "GET", "/sites/cdn.example")
    assert (site["level"], site["live"]) == ("documents-checked", False)
    out = await validate_http(env, o)
    assert out["state"] == "valid" and o.hosts[-1] == "cdn.example"
    _, site = await call(env, "GET", "/sites/cdn.example")
    assert (site["level"], site["live"]) == ("domain-validated", True)
    _, rs = await call(env, "GET", "/roster")
    await env.svc.kyc.roster.run_once()
    rs = env.svc.store.run_sync(roster.deliveries)
    assert rs["hosts"] == ["cdn.example"]
    events = [e["event"] for e in _audit(env)]
    for e in (
        "identity_recorded",
        "evidence_recorded",
        "domain_validation_started",
        "domain_validated",
        "verification_level",
        "roster_published",
    ):
        assert e in events
    # The audit log keeps the fact and a digest of the identity, not the personal data.
    assert "Hauptstr" not in json.dumps(_audit(env))


def _audit(env: Env) -> list[dict[str, Any]]:
    return [
        {"event": r[0], "data": json.loads(r[1]), "case": r[2]}
        for r in env.svc.store.run_sync(
            lambda c: c.execute(
                "SELECT event, data, case_id FROM audit_log ORDER BY seq"
            ).fetchall()
        )
    ]


@pytest.mark.parametrize(
    ("serve", "why"),
    [
        (None, "answered 404"),
        (b"wrong-value", "did not return the key authorization"),
        (b"x" * 5000, "longer than"),
    ],
)
async def test_failed_http_challenge_keeps_site_held(
    make_env: MakeEnv, origin: Any, serve: bytes | None, why: str
) -> None:
    o, via = origin
    env = await kyc_env(make_env, via)
    await verify_documents(env)
    _, ch = await call(env, "POST", "/sites/cdn.example/validations", body={"method": "http-01"})
    if serve is not None:
        o.files[ch["challenge"]["url"].split("cdn.example", 1)[1]] = serve
    status, out = await call(env, "POST", f"/sites/cdn.example/validations/{ch['id']}/check")
    assert status == 200 and out["state"] == "pending" and why in out["last_error"]
    _, site = await call(env, "GET", "/sites/cdn.example")
    assert site["live"] is False
    assert "domain_validation_failed" in [e["event"] for e in _audit(env)]


async def test_dns_challenge_through_the_resolver_seam(make_env: MakeEnv) -> None:
    env = await kyc_env(make_env)
    await verify_documents(env)
    records: dict[str, list[str]] = {}

    async def resolve(name: str, timeout_s: float) -> list[str]:
        return records.get(name, [])

    env.svc.kyc.txt_resolver = resolve
    _, ch = await call(env, "POST", "/sites/cdn.example/validations", body={"method": "dns-01"})
    assert ch["challenge"]["name"] == "_edgeproxy-challenge.cdn.example"
    _, out = await call(env, "POST", f"/sites/cdn.example/validations/{ch['id']}/check")
    assert out["state"] == "pending" and "does not hold" in out["last_error"]
    records[ch["challenge"]["name"]] = ["unrelated", ch["challenge"]["value"]]
    _, out = await call(env, "POST", f"/sites/cdn.example/validations/{ch['id']}/check")
    assert out["state"] == "valid"


async def test_expired_token_cannot_be_checked(make_env: MakeEnv, origin: Any) -> None:
    o, via = origin
    env = await kyc_env(make_env, via, dcv_token_ttl_s=60.0)
    _, ch = await call(env, "POST", "/sites/cdn.example/validations", body={"method": "http-01"})
    env.clock.advance(61)
    status, out = await call(env, "POST", f"/sites/cdn.example/validations/{ch['id']}/check")
    assert status == 400 and "expired" in out["error"]


async def test_expiry_lowers_the_level_audits_and_notifies(make_env: MakeEnv, origin: Any) -> None:
    o, via = origin
    env = await kyc_env(make_env, via)
    env.svc.store.run_sync(
        lambda c: c.execute(
            "INSERT INTO contacts (party, party_id, email) SELECT 'customer', id, 'ops@acme.example'"
            " FROM customers WHERE name = 'Acme'"
        )
    )
    await call(env, "PUT", "/customers/Acme/identity", body=IDENTITY)
    await call(
        env,
        "POST",
        "/customers/Acme/evidence",
        body={"method": "passport", "document_ref": "ID-1", "expires_at": env.clock() + 3600},
    )
    await validate_http(env, o)
    assert (await env.svc.kyc.roster.run_once()) and env.svc.store.run_sync(roster.deliveries)[
        "hosts"
    ] == ["cdn.example"]
    env.clock.advance(3601)
    await env.svc.kyc.roster.run_once()
    assert env.svc.store.run_sync(roster.deliveries)["hosts"] == []
    _, site = await call(env, "GET", "/sites/cdn.example")
    assert (site["level"], site["live"]) == ("self-declared", False)
    events = _audit(env)
    names = [e["event"] for e in events]
    assert "evidence_expired" in names
    drop = [e for e in events if e["event"] == "verification_level"][-1]["data"]
    assert (drop["from"], drop["to"]) == ("documents-checked", "self-declared")
    out = env.svc.store.run_sync(
        lambda c: c.execute(
            "SELECT kind, recipient FROM outbox WHERE kind = 'verification_lapsed'"
        ).fetchall()
    )
    assert [tuple(r) for r in out] == [("verification_lapsed", "ops@acme.example")]
    removed = [e for e in events if e["event"] == "roster_published"][-1]["data"]
    assert removed["removed"] == ["cdn.example"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**IDENTITY, "country": "Germany"}, "country"),
        ({k: v for k, v in IDENTITY.items() if k != "address"}, "address"),
        ({**IDENTITY, "contact_email": "nobody"}, "contact_email"),
        ({**IDENTITY, "shoe_size": "44"}, "shoe_size"),
        ({**IDENTITY, "legal_name": 7}, "legal_name"),
    ],
)
async def test_bad_identity_is_refused_and_nothing_changes(
    make_env: MakeEnv, body: Any, field: str
) -> None:
    env = await kyc_env(make_env)
    status, out = await call(env, "PUT", "/customers/Acme/identity", body=body)
    assert status == 400 and field in out["error"]
    _, cust = await call(env, "GET", "/customers/Acme")
    assert cust["identity"] is None and cust["level"] == "none"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"method": "passport"}, "document_ref or document_sha256"),
        ({"method": "passport", "document_sha256": "abc"}, "64 lowercase hex"),
        ({"document_ref": "x"}, "method"),
        ({"method": "passport", "document_ref": "x", "expires_at": 1.0}, "future"),
    ],
)
async def test_bad_evidence_is_refused(make_env: MakeEnv, body: Any, why: str) -> None:
    env = await kyc_env(make_env)
    status, out = await call(env, "POST", "/customers/Acme/evidence", body=body)
    assert status == 400 and why in out["error"]


async def test_self_declared_evidence_method_does_not_count(make_env: MakeEnv) -> None:
    env = await kyc_env(make_env)
    await call(env, "PUT", "/customers/Acme/identity", body=IDENTITY)
    await call(
        env, "POST", "/customers/Acme/evidence", body={"method": "email-reply", "document_ref": "x"}
    )
    _, cust = await call(env, "GET", "/customers/Acme")
    assert cust["level"] == "self-declared"


# Who may call each verification route (tests/takedown/test_authz.py checks every other one).
KYC_STAFF = {"operator", "admin"}
KYC_EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/customers"): KYC_STAFF,
    ("GET", "/customers/{customer}"): KYC_STAFF | {"customer"},  # Acme's own account
    ("PUT", "/customers/{customer}/identity"): KYC_STAFF,
    ("POST", "/customers/{customer}/evidence"): KYC_STAFF,
    ("POST", "/customers/{customer}/evidence/{evidence}/revoke"): KYC_STAFF,
    ("GET", "/sites"): KYC_STAFF,
    ("POST", "/sites"): {"admin"},
    ("GET", "/sites/{host}"): KYC_STAFF | {"customer"},  # Acme's own account
    ("POST", "/sites/{host}/validations"): KYC_STAFF | {"customer"},  # Acme's own account
    ("POST", "/sites/{host}/validations/{validation}/check"): KYC_STAFF
    | {"customer"},  # Acme's own account
    ("GET", "/accounts"): {"admin"},
    ("POST", "/accounts/{account}/disable"): {"admin"},
    ("POST", "/accounts/{account}/rotate-key"): {"admin"},
    ("POST", "/disclosures"): KYC_STAFF,
    ("GET", "/disclosures/{case}"): KYC_STAFF,
    ("POST", "/disclosures/{case}/disclose"): KYC_STAFF,
    ("POST", "/disclosures/{case}/reject"): KYC_STAFF,
    ("GET", "/roster"): KYC_STAFF,
}
WHO = ("submitter", "submitter2", "trusted", "operator", "admin", "customer", "customer2")
ORDER = {
    "kind": "512h-subpoena",
    "issuer": "Clerk, U.S. District Court N.D. Cal.",
    "reference": "5:26-mc-80001",
    "date": "2026-01-02",
    "document_sha256": DOC,
    "requester": "Rights Org (counsel: J. Doe)",
    "site": "cdn.example",
}


async def _fixture_for(env: Env, route: str) -> tuple[str, Any]:
    """A path and body under which an allowed caller succeeds."""
    await call(env, "PUT", "/customers/Acme/identity", "admin", IDENTITY)
    _, ev = await call(
        env,
        "POST",
        "/customers/Acme/evidence",
        "admin",
        {"method": "passport", "document_ref": "P1"},
    )
    _, ch = await call(env, "POST", "/sites/cdn.example/validations", "admin", {"method": "dns-01"})
    _, d = await call(env, "POST", "/disclosures", "admin", ORDER)
    bodies = {
        "/customers/{customer}/identity": IDENTITY,
        "/customers/{customer}/evidence": {"method": "passport", "document_ref": "P2"},
        "/sites": {"host": "new.example", "customer": "Acme"},
        "/sites/{host}/validations": {"method": "http-01"},
        "/disclosures": ORDER,
        "/disclosures/{case}/reject": {"reason": "defective"},
    }
    path = (
        route.replace("{customer}", "Acme")
        .replace("{evidence}", str(ev["id"]))
        .replace("{host}", "cdn.example")
        .replace("{validation}", str(ch["id"]))
        .replace("{account}", env.keys["submitter2"].split("_")[1])
        .replace("{case}", str(d["case"]))
    )
    return path, bodies.get(route)


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize(("method", "route"), sorted(KYC_EXPECTED))
async def test_kyc_route_by_role(make_env: MakeEnv, method: str, route: str, who: str) -> None:
    env = await kyc_env(make_env)

    async def resolve(name: str, timeout_s: float) -> list[str]:
        return []

    env.svc.kyc.txt_resolver = resolve
    path, body = await _fixture_for(env, route)
    status, out = await call(env, method, path, who, body)
    if who in KYC_EXPECTED[(method, route)]:
        assert 200 <= status < 300, (status, out)
    else:
        assert status == (404 if method == "GET" else 403), (status, out)
    r = await env.client.request(method, path, json=body)
    assert r.status == 401


@pytest.mark.parametrize(
    ("evidence", "level", "warned"),
    [
        (None, "self-declared", True),  # an identity alone: the stricter thresholds
        ({"method": "passport", "document_ref": "P-1"}, "documents-checked", False),
        ({"method": "email-reply", "document_ref": "x"}, "self-declared", True),
    ],
)
async def test_derived_level_sets_the_strike_thresholds(
    make_env: MakeEnv, evidence: dict[str, str] | None, level: str, warned: bool
) -> None:
    """Shady is unverified in the legacy enum; once it has an identity record its derived
    level decides whether one strike already warns (unverified_warn_at = 1)."""
    from tests.takedown.conftest import notice

    env = await kyc_env(make_env)
    await call(env, "PUT", "/customers/Shady/identity", body=IDENTITY)
    if evidence is not None:
        await call(env, "POST", "/customers/Shady/evidence", body=evidence)
    _, body = await env.post("/notices", "trusted", notice({"url": "https://shady.example/x"}))
    view = await env.wait_state(body["case"], "enforced")
    strike = next(e for e in view["timeline"] if e["event"] == "strike")
    assert strike["data"]["verification"] == level
    assert ("warning" in [e["event"] for e in view["timeline"]]) is warned


def _outbox(env: Env, kind: str) -> list[Any]:
    return env.svc.store.run_sync(
        lambda c: [
            json.loads(r[0])
            for r in c.execute("SELECT body FROM outbox WHERE kind = ? ORDER BY id", (kind,))
        ]
    )


@pytest.mark.parametrize("covered", [False, True])
async def test_customer_is_reminded_before_its_level_drops(
    make_env: MakeEnv, origin: Any, covered: bool
) -> None:
    o, via = origin
    env = await kyc_env(make_env, via, remind_before_s=14 * 86400.0)
    env.svc.store.run_sync(
        lambda c: c.execute(
            "INSERT INTO contacts (party, party_id, email) SELECT 'customer', id,"
            " 'ops@acme.example' FROM customers WHERE name = 'Acme'"
        )
    )
    await call(env, "PUT", "/customers/Acme/identity", body=IDENTITY)
    soon = env.clock() + 30 * 86400
    await call(
        env,
        "POST",
        "/customers/Acme/evidence",
        body={"method": "passport", "document_ref": "P-1", "expires_at": soon},
    )
    if covered:  # a later document keeps the level: nothing to remind of
        await call(
            env,
            "POST",
            "/customers/Acme/evidence",
            body={"method": "company-register", "document_ref": "HRB", "expires_at": soon * 2},
        )
    await env.svc.kyc.roster.run_once()
    assert _outbox(env, "verification_expiring") == []  # 30 days out: not yet
    env.clock.advance(20 * 86400)
    for _ in range(2):  # once, not on every pass
        await env.svc.kyc.roster.run_once()
    sent = _outbox(env, "verification_expiring")
    if covered:
        assert sent == []
    else:
        assert len(sent) == 1 and sent[0]["customer"] == "Acme" and sent[0]["expires_at"] == soon


async def test_roster_is_sent_again_on_every_periodic_pass(
    make_env: MakeEnv, tmp_path: Any
) -> None:
    """An edge restarted with an empty roster directory gets the roster back without waiting
    for the next change; the audit log records the delivery once."""
    import asyncio

    from proxy import gate
    from proxy.blocklist.format import generate_keypair
    from proxy.takedown.service import TakedownService
    from tests.takedown.conftest import TOKEN, FakeClock

    private, public = generate_keypair()
    (tmp_path / "k.pem").write_bytes(private)
    puts: list[int] = []

    async def put(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        body = await request.json()
        puts.append(gate.parse_roster(body["roster"].encode(), public).sequence)
        return web.json_response({"sequence": puts[-1]})

    app = web.Application()
    app.router.add_put("/gate/roster", put)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    policy = Verification(roster_signing_key=str(tmp_path / "k.pem"), check_interval_s=0.05)
    svc = TakedownService(
        tmp_path / "r.db",
        fast_config(verification=policy),
        edge_urls=[str(srv.make_url("")).rstrip("/")],
        admin_token=TOKEN,
        clock=FakeClock(),
    )
    await svc.start()
    try:
        async with asyncio.timeout(10):
            while len(puts) < 3:
                await asyncio.sleep(0.02)
    finally:
        await svc.stop()
        await srv.close()
    assert len(set(puts)) == 1  # the same roster, again and again
    from proxy.takedown.store import Store  # the service's store is closed: reopen it

    store = Store(tmp_path / "r.db")
    try:
        delivered = store.run_sync(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM audit_log WHERE event = 'roster_delivered'"
            ).fetchone()[0]
        )
    finally:
        store.close()
    assert delivered == 1


async def test_moving_a_site_voids_its_domain_validation(make_env: MakeEnv, origin: Any) -> None:
    o, via = origin
    env = await kyc_env(make_env, via)
    await verify_documents(env)
    await verify_documents(env, "Shady")
    await validate_http(env, o)
    _, site = await call(env, "GET", "/sites/cdn.example")
    assert site["live"] is True
    status, site = await call(
        env, "POST", "/sites", "admin", {"host": "CDN.example", "customer": "Shady"}
    )
    assert status == 200 and site["customer"] == "Shady"
    assert (site["level"], site["live"]) == ("documents-checked", False)
    assert [v["state"] for v in site["validations"]] == ["superseded"]
    moved = [e for e in _audit(env) if e["event"] == "site_transferred"]
    assert moved and moved[0]["data"]["host"] == "cdn.example"
    # Re-adding it to the same customer is not a move.
    await call(env, "POST", "/sites", "admin", {"host": "cdn.example", "customer": "Shady"})
    assert len([e for e in _audit(env) if e["event"] == "site_transferred"]) == 1


@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [
        ("POST", "/sites", b'{"host": "a b/c", "customer": "Acme"}'),
        ("POST", "/sites", b'{"host": "", "customer": "Acme"}'),
        ("POST", "/sites", b"[1, 2]"),
        ("POST", "/sites", b"not json"),
        ("POST", "/sites/cdn.example/validations", b'{"method": "tls-alpn-01"}'),
        ("POST", "/sites/cdn.example/validations", b"\xff\xfe"),
        ("POST", "/sites/nope.example/validations", b'{"method": "http-01"}'),
        ("POST", "/sites/cdn.example/validations/99/check", b""),
        ("POST", "/sites/cdn.example/validations/x/check", b""),
        ("GET", "/sites/%00", b""),
        ("GET", "/customers/Nobody", b""),
        ("PUT", "/customers/Nobody/identity", b"{}"),
        ("PUT", "/customers/Acme/identity", b'"a string"'),
        (
            "POST",
            "/customers/Acme/evidence",
            b'{"method": "passport", "document_ref": "x", "expires_at": "soon"}',
        ),
        ("POST", "/customers/Acme/evidence/abc/revoke", b""),
        ("POST", "/customers/Acme/evidence/7/revoke", b""),
        ("POST", "/disclosures/123/disclose", b""),
        ("POST", "/disclosures/123/reject", b'{"reason": 5}'),
        ("GET", "/disclosures/1", b""),
    ],
)
async def test_malformed_requests_get_4xx_and_change_nothing(
    make_env: MakeEnv, method: str, path: str, raw: bytes
) -> None:
    env = await kyc_env(make_env)
    before = env.svc.store.run_sync(
        lambda c: c.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    )
    r = await env.client.request(method, path, data=raw, headers=env.auth("admin"))
    assert 400 <= r.status < 500, (r.status, await r.text())
    assert "error" in await r.json()
    after = env.svc.store.run_sync(
        lambda c: c.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    )
    assert after == before


async def test_a_customer_validates_its_own_sites_and_sees_only_itself(
    make_env: MakeEnv, origin: Any
) -> None:
    o, via = origin
    env = await kyc_env(make_env, via)
    status, ch = await call(
        env, "POST", "/sites/shady.example/validations", "customer2", {"method": "http-01"}
    )
    assert status == 201, ch
    o.files[ch["challenge"]["url"].split("shady.example", 1)[1]] = ch["challenge"]["body"].encode()
    path = f"/sites/shady.example/validations/{ch['id']}/check"
    assert (await call(env, "POST", path, "customer"))[0] == 403  # Acme's account: not its site
    status, out = await call(env, "POST", path, "customer2")
    assert status == 200 and out["state"] == "valid"
    assert (await call(env, "GET", "/customers/Shady", "customer2"))[0] == 200
    assert (await call(env, "GET", "/customers/2", "customer"))[0] == 404  # Shady by id
    assert (await call(env, "GET", "/sites/SHADY.example", "customer"))[0] == 404
    assert (await call(env, "GET", "/sites", "customer2"))[0] == 404  # the list is staff's
    assert (await call(env, "PUT", "/customers/Shady/identity", "customer2", IDENTITY))[0] == 403
