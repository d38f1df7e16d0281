"""Issue 13: edge nodes follow the takedown feed on a real redis-server, verify each version as
a file, enforce it in every worker, and acknowledge it (node name, version, enforced_at)."""

from __future__ import annotations

import time
from pathlib import Path

from proxy.blocklist.format import generate_keypair
from tests.fleet.conftest import (
    Publisher,
    entry,
    eventually,
    eventually_status,
    fleet_node,
    metric,
    origin_app,
    readyz,
    status,
)
from tests.integration.node import Node


async def test_nodes_follow_the_feed_and_acknowledge(
    redis_server, origin_server, signing, fleet_nodes: list[Node], tmp_path: Path
) -> None:
    private, pub = signing
    origin = await origin_server(origin_app())
    pub_feed = Publisher(redis_server.url, private)
    await pub_feed.publish(1, [entry("a", "/a/")])
    nodes = [fleet_node(tmp_path, f"edge-{i}", redis_server.url, origin, pub) for i in range(2)]
    for n in nodes:
        fleet_nodes.append(n)
        await n.start()
    for n in nodes:  # bootstrapped from the full version before listening
        assert await status(n.url + "/a/x") == 451
        assert await status(n.url + "/b/x") == 200
    before = time.time()
    await pub_feed.publish(2, [entry("b", "/b/")], base=1)
    for n in nodes:
        await eventually_status(n.url + "/b/x", 451)
        assert await status(n.url + "/a/x") == 451
    await pub_feed.publish(3, [], base=2, removes=["a"])
    for n in nodes:
        await eventually_status(n.url + "/a/x", 200)

    async def acked() -> bool:
        return set(await pub_feed.acks(3)) == {"edge-0", "edge-1"}

    await eventually(acked, what="both nodes acknowledging version 3")
    acks2 = await pub_feed.acks(2)
    assert set(acks2) == {"edge-0", "edge-1"}
    assert all(before <= at <= time.time() for at in acks2.values())
    for n in nodes:
        code, body = await readyz(n)
        assert code == 200, body
        assert await metric(n, "edgeproxy_fleet_version") == 3
        assert await metric(n, "edgeproxy_fleet_versions_behind") == 0
        assert await metric(n, "edgeproxy_fleet_connected") == 1
        # 1 at start, then 2 and 3 from the stream: each applied once
        assert await metric(n, "edgeproxy_fleet_applied") == 2
        code, st = await n.admin_json("GET", "/status")
        assert code == 200 and st["fleet"]["version"] == 3 and st["fleet"]["connected"]
        assert st["fleet"]["node"] in ("edge-0", "edge-1") and "@" not in st["fleet"]["redis"]


async def test_forged_and_unsigned_entries_are_refused(
    redis_server, origin_server, signing, fleet_nodes: list[Node], tmp_path: Path
) -> None:
    private, pub = signing
    origin = await origin_server(origin_app())
    pub_feed = Publisher(redis_server.url, private)
    await pub_feed.publish(1, [entry("a", "/a/")])
    node = fleet_node(tmp_path, "edge-0", redis_server.url, origin, pub)
    fleet_nodes.append(node)
    await node.start()
    assert await status(node.url + "/a/x") == 451
    other, _ = generate_keypair()
    # Signed by a key the node does not trust: would un-block /a/ and block /evil/.
    forged = pub_feed.render(2, [entry("e", "/evil/")], base=1, removes=["a"], key=other)
    await pub_feed.xadd_raw({"seq": "2", "base": "1", "data": forged})
    # Unsigned: the signature line cut off.
    unsigned = b"".join(
        pub_feed.render(2, [entry("e", "/evil/")], base=1).splitlines(keepends=True)[:-1]
    )
    await pub_feed.xadd_raw({"seq": "2", "base": "1", "data": unsigned})
    # Tampered: a byte of an entry changed after signing.
    tampered = pub_feed.render(2, [entry("e", "/evil/")], base=1).replace(b"/evil/", b"/good/")
    await pub_feed.xadd_raw({"seq": "2", "base": "1", "data": tampered})
    await pub_feed.xadd_raw({"seq": "2", "base": "1"})  # no data at all

    async def refused() -> bool:
        return await metric(node, "edgeproxy_fleet_refused") == 4

    await eventually(refused, what="four refusals counted")
    assert await status(node.url + "/a/x") == 451  # the last good list keeps enforcing
    assert await status(node.url + "/evil/x") == 200
    assert await status(node.url + "/good/x") == 200
    assert await metric(node, "edgeproxy_fleet_version") == 1
    assert any("refused" in line for line in node.output)
    # The real version 2 still applies on top of version 1.
    await pub_feed.publish(2, [entry("b", "/b/")], base=1)
    await eventually_status(node.url + "/b/x", 451)
    assert await status(node.url + "/a/x") == 451
