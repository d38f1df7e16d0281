"""A SIGHUP whose config changes `[fleet]`: the follower ends its session with the old feed and
follows the new one from the version the node enforces, which stays enforced throughout;
workers are not replaced. Turning the fleet on or off needs a restart: the reload says so,
naming the field, and keeps following as before. Real redis-servers throughout."""

from __future__ import annotations

import signal

import msgspec

from proxy.config import Config, FleetConfig
from proxy.node.reload import fleet_plan, plan
from tests.fleet.conftest import (
    Fleet,
    Publisher,
    acknowledged,
    entry,
    eventually,
    eventually_status,
    fleet_config,
    metric,
    readyz,
    status,
)
from tests.integration.node import Node
from tests.redis_server import RedisServer

A, B, C = entry("a", "/a/"), entry("b", "/b/"), entry("c", "/c/")


async def sighup_until_logged(node: Node, words: str) -> None:
    assert node.proc is not None
    seen = len(node.output)
    node.proc.send_signal(signal.SIGHUP)

    async def logged() -> bool:
        return any(words in line for line in node.output[seen:])

    await eventually(logged, what=f"the node logging {words!r}")


async def test_reload_follows_a_new_redis_server_from_the_enforced_version(
    fleet: Fleet,
) -> None:
    await fleet.publisher.publish(1, [A])
    node = await fleet.node("edge")
    workers = await node.worker_pids()
    other = RedisServer(fleet.tmp_path / "redis-2").start()
    try:
        second = Publisher(other.url, fleet.publisher.private)
        await second.publish(1, [A])  # the same signed history, on another server
        await second.publish(2, [B], base=1)
        fleet_config(fleet.tmp_path / "edge.toml", "edge-moved", other.url, fleet.origin, fleet.pub)
        await sighup_until_logged(node, "fleet: following")
        assert await status(node.url + "/a/x") == 451  # enforced throughout
        await eventually_status(node.url + "/b/x", 451)  # 2, from the new feed
        fleet.redis.stop()  # the old feed is no longer followed: losing it changes nothing
        await second.publish(3, [C], base=2, removes=["a"])
        await eventually_status(node.url + "/c/x", 451)
        assert await status(node.url + "/a/x") == 200
        assert await metric(node, "edgeproxy_fleet_connected") == 1
        # Acknowledged under the new name on the new feed: the version it enforced at the
        # switch, then each one it applied.
        await acknowledged(second, "edge-moved", 1, 2, 3)
        assert await metric(node, "edgeproxy_fleet_applied") == 2  # 2 and 3, each once
        assert (await readyz(node))[0] == 200
        assert await node.worker_pids() == workers  # a [fleet] change leaves workers alone
    finally:
        other.stop()


async def test_reload_turning_the_fleet_off_is_refused_naming_the_field(fleet: Fleet) -> None:
    await fleet.publisher.publish(1, [A])
    node = await fleet.node("edge")
    cfg = fleet.tmp_path / "edge.toml"
    cfg.write_text(
        f'[[sites]]\nname = "default"\nhosts = ["*"]\norigin = "{fleet.origin}"\n\n'
        f'[blocklist]\npublic_key = "{fleet.pub}"\nallow_empty = true\n'
    )
    await sighup_until_logged(node, "fleet.redis_url: turning the fleet feed off")
    await fleet.publisher.publish(2, [B], base=1)  # still followed
    await eventually_status(node.url + "/b/x", 451)
    assert await status(node.url + "/a/x") == 451


def test_fleet_plan_names_what_changed_and_what_needs_a_restart() -> None:
    on = msgspec.structs.replace(Config(), fleet=FleetConfig(redis_url="redis://127.0.0.1:1/0"))
    moved = msgspec.structs.replace(
        on, fleet=msgspec.structs.replace(on.fleet, redis_url="redis://127.0.0.1:2/0", block_s=1)
    )
    p = fleet_plan(on, moved)
    assert p.refollow and p.changed == ("fleet.redis_url", "fleet.block_s")
    assert plan(on, moved).in_place  # the workers have nothing to do with the feed
    assert not fleet_plan(on, on).refollow and not fleet_plan(Config(), Config()).changed
    off = fleet_plan(on, Config())
    assert not off.refollow and "fleet.redis_url" in off.refused and "off" in off.refused
    assert off.keep is not None and off.keep.fleet == on.fleet
    turned_on = fleet_plan(Config(), on)
    assert "on" in turned_on.refused and turned_on.keep == Config()
