"""Disabling accounts and rotating keys over the API (issue 15): the effect is immediate, even
for a key the service has already authenticated and cached."""

from __future__ import annotations

from tests.takedown.conftest import MakeEnv
from tests.takedown.test_kyc import call, kyc_env


async def test_disable_takes_effect_at_once(make_env: MakeEnv) -> None:
    env = await kyc_env(make_env)
    assert (await call(env, "GET", "/cases", "submitter"))[0] == 200  # cached now
    sid = int(env.keys["submitter"].split("_")[1])
    status, out = await call(env, "POST", f"/accounts/{sid}/disable", "admin")
    assert status == 200, out
    assert (await call(env, "GET", "/cases", "submitter"))[0] == 401
    _, accounts = await call(env, "GET", "/accounts", "admin")
    assert next(a for a in accounts if a["id"] == sid)["disabled_at"] is not None
    assert (await call(env, "POST", f"/accounts/{sid}/disable", "admin"))[0] == 404


async def test_admin_cannot_disable_itself(make_env: MakeEnv) -> None:
    env = await kyc_env(make_env)
    aid = int(env.keys["admin"].split("_")[1])
    status, out = await call(env, "POST", f"/accounts/{aid}/disable", "admin")
    assert status == 403 and "itself" in out["error"]
    assert (await call(env, "GET", "/accounts", "admin"))[0] == 200


async def test_rotated_key_replaces_the_old_one(make_env: MakeEnv) -> None:
    env = await kyc_env(make_env)
    assert (await call(env, "GET", "/cases", "operator"))[0] == 200
    oid = int(env.keys["operator"].split("_")[1])
    status, out = await call(env, "POST", f"/accounts/{oid}/rotate-key", "admin")
    assert status == 200 and out["key"].startswith(f"tdk_{oid}_")
    assert (await call(env, "GET", "/cases", "operator"))[0] == 401
    env.keys["operator"] = out["key"]
    assert (await call(env, "GET", "/cases", "operator"))[0] == 200
    events = env.svc.store.run_sync(
        lambda c: [
            r[0] for r in c.execute("SELECT event FROM audit_log WHERE event LIKE 'account_%'")
        ]
    )
    assert "account_key_rotated" in events
    assert out["key"] not in str(
        env.svc.store.run_sync(lambda c: c.execute("SELECT * FROM audit_log").fetchall())
    )


async def test_unknown_account_is_404(make_env: MakeEnv) -> None:
    env = await kyc_env(make_env)
    for path in ("/accounts/999/disable", "/accounts/999/rotate-key", "/accounts/x/disable"):
        assert (await call(env, "POST", path, "admin"))[0] == 404
