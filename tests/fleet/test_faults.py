"""Issue 13's faults, each against a real redis-server: down at node start, killed mid-run,
restarted empty, slow (paused), partitioned from one node, trimmed past a node. Every node keeps
serving and enforcing its last good version, says it is behind (/readyz, metrics), reconnects
and catches up in order: no version skipped or applied twice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from proxy.blocklist.format import version_filename
from proxy.fleet import feed
from tests.fleet.conftest import (
    Fleet,
    Relay,
    acknowledged,
    entry,
    eventually,
    eventually_status,
    metric,
    readyz,
    status,
)
from tests.integration.node import Node

A, B, C = entry("a", "/a/"), entry("b", "/b/"), entry("c", "/c/")


async def not_ready_because(node: Node, words: str) -> bool:
    code, body = await readyz(node)
    return code == 503 and any(words in p for p in body["problems"])


async def connected(node: Node) -> bool:
    return await metric(node, "edgeproxy_fleet_connected") == 1


async def ready(node: Node) -> bool:
    return (await readyz(node))[0] == 200


async def publish_drop(fleet: Fleet, drop: Path) -> list[int]:
    """What the takedown service's resync does: its drop's newest chain into the feed."""
    async with fleet.publisher.client() as r:
        chain = feed.newest_chain(drop, fleet.pub.read_bytes())
        return await feed.publish_chain(r, fleet.publisher.keys, chain)


async def test_redis_down_at_start(fleet: Fleet) -> None:
    feed_, redis_server = fleet.publisher, fleet.redis
    await feed_.publish(1, [A])
    old = await fleet.node("old")
    assert await status(old.url + "/a/x") == 451
    await old.stop()
    redis_server.stop()
    # A node that ran before restarts on the version it kept; a new one starts empty.
    await old.start()
    new = await fleet.node("new", "--allow-empty-blocklist")
    assert await status(old.url + "/a/x") == 451
    assert await status(new.url + "/a/x") == 200
    for n in (old, new):
        assert await not_ready_because(n, "unreachable")
        assert await metric(n, "edgeproxy_fleet_connected") == 0
    redis_server.start()  # empty: the publisher seeds it again, with a full version
    await feed_.publish(2, [A, B])
    for name, n in (("old", old), ("new", new)):
        await eventually_status(n.url + "/b/x", 451)
        assert await status(n.url + "/a/x") == 451
        await eventually(lambda n=n: ready(n), what="ready again")
        await acknowledged(feed_, name, 2)
        assert await metric(n, "edgeproxy_fleet_version") == 2
    assert set(await feed_.acks(2)) == {"old", "new"}


async def test_killed_mid_run_then_catches_up_in_order(fleet: Fleet) -> None:
    feed_, redis_server = fleet.publisher, fleet.redis
    await feed_.publish(1, [A])
    node = await fleet.node()
    await eventually(lambda: connected(node), what="following the feed")
    async with feed_.client() as r:
        await r.save()  # what the server has is on disk: the restart brings it back
    redis_server.kill()
    await eventually(lambda: not_ready_because(node, "unreachable"), what="reporting Redis lost")
    assert await status(node.url + "/a/x") == 451  # still enforcing, still serving
    assert await status(node.url + "/free") == 200
    assert await metric(node, "edgeproxy_fleet_connected") == 0
    redis_server.start()
    await feed_.publish(2, [B], base=1)
    await feed_.publish(3, [C], base=2, removes=["a"])
    await eventually_status(node.url + "/c/x", 451)
    assert await status(node.url + "/b/x") == 451
    assert await status(node.url + "/a/x") == 200
    await eventually(lambda: ready(node), what="ready again")
    await acknowledged(feed_, "edge", 2, 3)
    assert await metric(node, "edgeproxy_fleet_applied") == 2  # 2 and 3, each once
    assert await metric(node, "edgeproxy_fleet_reconnects") >= 1


async def test_restarted_empty_is_reseeded_and_nothing_applies_twice(fleet: Fleet) -> None:
    feed_ = fleet.publisher
    drop = fleet.tmp_path / "drop"  # the takedown service's file drop, which outlives Redis
    drop.mkdir()
    versions = [feed_.render(1, [A]), feed_.render(2, [B], base=1), feed_.render(3, [C], base=2)]
    for seq, data in enumerate(versions[:2], start=1):
        (drop / version_filename(seq)).write_bytes(data)
    assert await publish_drop(fleet, drop) == [1, 2]
    node = await fleet.node()
    await eventually_status(node.url + "/b/x", 451)
    await acknowledged(feed_, "edge", 2)
    applied = await metric(node, "edgeproxy_fleet_applied")
    fleet.redis.restart(empty=True)
    (drop / version_filename(3)).write_bytes(versions[2])
    # The whole chain again: 1 and 2 are replays the node must skip.
    assert await publish_drop(fleet, drop) == [1, 2, 3]
    await eventually_status(node.url + "/c/x", 451)
    assert await status(node.url + "/a/x") == 451
    await acknowledged(feed_, "edge", 3)
    assert await metric(node, "edgeproxy_fleet_applied") == applied + 1
    assert await metric(node, "edgeproxy_fleet_refused") == 0
    await eventually(lambda: ready(node), what="ready again")


async def test_slow_redis_paused_then_resumed(fleet: Fleet) -> None:
    feed_ = fleet.publisher
    await feed_.publish(1, [A])
    node = await fleet.node()
    assert fleet.redis.proc is not None
    pid = fleet.redis.proc.pid
    os.kill(pid, signal.SIGSTOP)  # answers nothing, connections stay open: a hung server
    try:
        await eventually(
            lambda: not_ready_because(node, "unreachable"), what="reporting the hung feed"
        )
        assert await status(node.url + "/a/x") == 451  # never waits on Redis to serve
        assert await status(node.url + "/free") == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    await feed_.publish(2, [B], base=1)
    await eventually_status(node.url + "/b/x", 451)
    await eventually(lambda: ready(node), what="ready again")


async def test_partition_from_one_node(fleet: Fleet) -> None:
    feed_ = fleet.publisher
    await feed_.publish(1, [A])
    relay = await Relay(fleet.redis.port).start()
    try:
        near = await fleet.node("near")
        far = await fleet.node("far", url=relay.url)
        relay.cut()
        await feed_.publish(2, [B], base=1)
        await eventually_status(near.url + "/b/x", 451)
        await eventually(lambda: not_ready_because(far, "unreachable"), what="far reports")
        assert await status(far.url + "/b/x") == 200  # not yet: it never saw version 2
        assert await status(far.url + "/a/x") == 451  # but version 1 keeps enforcing
        assert await ready(near)
        relay.heal()
        await eventually_status(far.url + "/b/x", 451)
        await eventually(lambda: ready(far), what="far ready again")
        await acknowledged(feed_, "near", 2)
        await acknowledged(feed_, "far", 2)
        assert set(await feed_.acks(2)) == {"near", "far"}
    finally:
        await relay.stop()


async def test_trimmed_past_a_node_rebootstraps_from_the_full_version(fleet: Fleet) -> None:
    feed_ = fleet.publisher
    await feed_.publish(1, [A])
    relay = await Relay(fleet.redis.port).start()
    try:
        node = await fleet.node(url=relay.url)
        relay.cut()
        await feed_.publish(2, [B], base=1)
        await feed_.publish(3, [A, B, C])  # full: the stream now starts here
        await feed_.publish(4, [], base=3, removes=["a"])
        async with feed_.client() as r:
            assert await r.xlen(feed_.keys.stream) == 2  # 2 was trimmed away
        relay.heal()
        await eventually_status(node.url + "/a/x", 200)
        assert await status(node.url + "/b/x") == 451
        assert await status(node.url + "/c/x") == 451
        assert await metric(node, "edgeproxy_fleet_rebootstraps") == 1

        async def acknowledged_4() -> bool:
            # One worker answering by version 4 does not make it the node's version yet: that
            # is once every worker applied it, and the ack follows once its file is kept.
            return await metric(node, "edgeproxy_fleet_version") == 4 and "edge" in (
                await feed_.acks(4)
            )

        await eventually(acknowledged_4, what="version 4 enforced by the node and acknowledged")
        assert "edge" in await feed_.acks(3)
        assert "edge" not in await feed_.acks(2)  # never applied: the full version covers it
    finally:
        await relay.stop()


async def test_a_version_lost_from_the_feed_leaves_the_node_behind_and_saying_so(
    fleet: Fleet,
) -> None:
    """Redis lost version 2 (a failover dropped a write): version 3 arrives resting on it. The
    node must not skip 2: it refuses 3, keeps enforcing 1, and reports 2 versions behind
    until a full version lets it catch up."""
    feed_ = fleet.publisher
    await feed_.publish(1, [A])
    node = await fleet.node()
    await eventually(lambda: connected(node), what="following the feed")
    await feed_.xadd_raw(
        {"seq": "3", "base": "2", "data": feed_.render(3, [C], base=2, removes=["a"])}
    )
    async with feed_.client() as r:
        await r.hset(feed_.keys.head, mapping={"seq": "3"})

    async def behind() -> bool:
        return await metric(node, "edgeproxy_fleet_versions_behind") == 2

    await eventually(behind, what="two versions behind")
    assert await not_ready_because(node, "2 fleet versions behind")
    assert await metric(node, "edgeproxy_fleet_seconds_behind") > 0
    assert await metric(node, "edgeproxy_fleet_refused") == 1
    assert await status(node.url + "/a/x") == 451  # 1 still enforced: 3 would remove it
    assert await status(node.url + "/c/x") == 200
    await feed_.publish(4, [B, C])  # a full version: the way forward
    await eventually_status(node.url + "/b/x", 451)
    assert await status(node.url + "/a/x") == 200
    await eventually(lambda: ready(node), what="ready again")


async def test_a_new_node_without_redis_or_a_kept_version_refuses_to_start(fleet: Fleet) -> None:
    """As with an empty blocklist directory: no list at all is no way to start (unless
    --allow-empty-blocklist), and the operator is told why."""
    fleet.redis.stop()
    node = await fleet.node(start=False)
    await node.start(expect_ready=False)
    assert await node.wait_exit() != 0
    out = "".join(node.output)
    assert "unreachable at start" in out and "refusing to start without a list" in out
