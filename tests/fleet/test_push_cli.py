"""`edgeproxy blocklist push --fleet URL`: an operator publishing entries or signed version
files to the feed reaches a running fleet node; a version that would leave a gap is refused by
the feed, and one signed by another key is published but refused by the node."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from proxy.blocklist.format import generate_keypair, version_filename, write_version
from tests.fleet.conftest import (
    entry,
    eventually,
    eventually_status,
    fleet_node,
    metric,
    origin_app,
)
from tests.integration.node import Node


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.cli",
        "blocklist",
        "push",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_push_entries_and_versions_to_the_fleet(
    redis_server, origin_server, signing, fleet_nodes: list[Node], tmp_path: Path
) -> None:
    private, pub = signing
    priv_file = tmp_path / "priv.pem"
    priv_file.write_bytes(private)
    url = redis_server.url
    code, out = await cli(
        "--fleet",
        url,
        "--key",
        str(priv_file),
        "--id",
        "a",
        "--type",
        "prefix",
        "--value",
        "http://127.0.0.1/a/",
    )
    assert code == 0 and "published version 1" in out, out
    origin = await origin_server(origin_app())
    node = fleet_node(tmp_path, "edge", url, origin, pub)
    fleet_nodes.append(node)
    await node.start()
    await eventually_status(node.url + "/a/x", 451)
    code, out = await cli(
        "--fleet",
        url,
        "--key",
        str(priv_file),
        "--id",
        "b",
        "--type",
        "prefix",
        "--value",
        "http://127.0.0.1/b/",
    )
    assert code == 0 and "published version 2" in out, out
    await eventually_status(node.url + "/b/x", 451)
    # Signed files: version 3 on 2 goes; a version 5 on 4 would leave a gap and is refused.
    write_version(
        tmp_path / version_filename(3), 3, [entry("c", "/c/")], base=2, private_key_pem=private
    )
    write_version(
        tmp_path / version_filename(5), 5, [entry("e", "/e/")], base=4, private_key_pem=private
    )
    code, out = await cli(
        "--fleet", url, "--version", str(tmp_path / version_filename(3)), "--key", str(pub)
    )
    assert code == 0 and "[3]" in out, out
    await eventually_status(node.url + "/c/x", 451)
    code, out = await cli("--fleet", url, "--version", str(tmp_path / version_filename(5)))
    assert code == 1 and "rests on 4" in out, out
    # Another key: the feed takes it (Redis is no authority), the node refuses it.
    other, _ = generate_keypair()
    forged = tmp_path / "forged" / version_filename(4)
    forged.parent.mkdir()
    write_version(forged, 4, [entry("f", "/f/")], base=3, private_key_pem=other)
    code, out = await cli("--fleet", url, "--version", str(forged))
    assert code == 0, out

    async def refused() -> bool:
        return await metric(node, "edgeproxy_fleet_refused") == 1

    await eventually(refused, what="the forged version refused")
    assert await metric(node, "edgeproxy_fleet_version") == 3
    code, out = await cli("--fleet", "http://127.0.0.1:1/", "--id", "x")
    assert code == 1 and "redis://" in out, out


async def test_pushed_entries_roll_into_a_full_version_that_trims_the_stream(
    redis_server, signing
) -> None:
    from proxy.blocklist.format import parse_version
    from proxy.config import FleetConfig
    from proxy.fleet import feed
    from proxy.fleet.push import push_entries

    private, pub = signing
    cfg = FleetConfig(redis_url=redis_server.url)
    seqs = [
        await push_entries(cfg, [entry(x, f"/{x}/")], private, max_delta_chain=3) for x in "abcde"
    ]
    assert seqs == [1, 2, 3, 4, 5]
    r = feed.connect(cfg)
    try:
        full = await feed.read_full(r, feed.Keys())
        assert full is not None and full.seq == 4  # 1 full + 2 deltas, then a full again
        held = parse_version(full.data, "full", pub.read_bytes())
        assert sorted(e.id for e in held.adds) == ["a", "b", "c", "d"]
        assert await r.xlen(feed.Keys().stream) == 2  # 4 and 5: the rest trimmed
    finally:
        await r.aclose()
