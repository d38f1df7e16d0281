"""Repeat-infringer policy: strikes per site, warning, then suspension of the whole host."""

from __future__ import annotations

from typing import Any

from proxy.takedown.config import Strikes
from proxy.takedown.strikes import Step, step_for, thresholds
from tests.takedown.conftest import Env, MakeEnv, notice
from tests.takedown.test_redress import until_event


def test_unverified_customers_meet_lower_thresholds() -> None:
    policy = Strikes(warn_at=2, suspend_at=3, unverified_warn_at=1, unverified_suspend_at=2)
    strict, normal = thresholds(policy, "none"), thresholds(policy, "verified_entity")
    assert [step_for(n, strict) for n in (0, 1, 2)] == [Step.NONE, Step.WARN, Step.SUSPEND]
    assert [step_for(n, normal) for n in (1, 2, 3)] == [Step.NONE, Step.WARN, Step.SUSPEND]
    assert thresholds(policy, "email") == strict


async def _strike(env: Env, path: str) -> dict[str, Any]:
    _, body = await env.post(
        "/notices", "trusted", notice({"url": f"https://shady.example/{path}"})
    )
    return await env.wait_state(body["case"], "enforced")


async def test_unverified_site_is_warned_then_suspended_by_a_host_entry(
    make_env: MakeEnv,
) -> None:
    env = await make_env()
    first = await _strike(env, "one")
    events = [e["event"] for e in first["timeline"]]
    assert "strike" in events and "warning" in events and "suspended" not in events
    warning = next(e for e in first["timeline"] if e["event"] == "warning")
    assert warning["data"]["strikes_in_window"] == 1 and warning["data"]["verification"] == "none"
    second = await _strike(env, "two")
    # The suspension is its own publication, delivered after the block that enforced the case.
    await until_event(env, second["id"], "suspension_enforced")
    suspended = next(e for e in second["timeline"] if e["event"] == "suspended")
    assert suspended["data"]["host"] == "shady.example"
    for edge in env.edges:
        assert edge.entries["suspend-shady.example"]["type"] == "host"
        assert edge.entries["suspend-shady.example"]["value"] == "shady.example"
    _, view = await env.get(f"/cases/{second['id']}")
    assert view["suspensions"][0]["host"] == "shady.example"
    assert all(d["version"] for d in view["suspensions"][0]["edges"])
    _, sor = await env.get(f"/cases/{second['id']}/statement")
    assert sor["restriction"]["site_suspensions"] == ["shady.example"]
    await _strike(env, "three")  # already suspended: no second suspension
    assert sum(1 for e in env.edges[0].log if e[1] == "suspend-shady.example") == 1


async def test_verified_site_and_window(make_env: MakeEnv) -> None:
    env = await make_env(n_edges=1)
    for i in range(2):
        _, body = await env.post("/notices", "trusted", notice({"url": f"https://cdn.example/{i}"}))
        view = await env.wait_state(body["case"], "enforced")
        env.clock.advance(181 * 86400 if i == 0 else 0)  # the first strike leaves the window
    events = [e["event"] for e in view["timeline"]]
    assert "strike" in events and "warning" not in events
