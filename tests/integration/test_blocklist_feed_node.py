"""Issue 10, "The signed feed", on a running node: a frozen feed turns /readyz red and
edgeproxy_blocklist_stale to 1 while the list keeps answering 451; an absurd sequence jump and a
conflicting file at the enforced sequence are counted, logged, and change nothing."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from proxy.blocklist.format import read_version, version_filename, write_version
from proxy.blocklist.model import EntryType
from tests.integration.node import Node, eventually, metric, readyz
from tests.integration.test_blocklist_node import (
    entry,
    get,
    keys,  # noqa: F401 - the fixture
    origin_app,
    reload_failures,
)

LISTED = [entry("a", EntryType.PREFIX, "http://127.0.0.1/listed/")]


async def test_stale_list_turns_readyz_red_and_keeps_enforcing(
    origin_server,
    keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    private, pub = keys
    origin = await origin_server(origin_app([]))
    bdir = tmp_path / "lists"
    bdir.mkdir()
    # Valid for an hour at start (however long the node takes to start), then a version that
    # goes stale soon after it is applied.
    write_version(
        bdir / version_filename(1),
        1,
        LISTED,
        private_key_pem=private,
        valid_until=time.time() + 3600,
    )
    node = Node.on_dir(origin, bdir, pub)
    await node.start()
    try:
        status, body = await readyz(node)
        assert status == 200, body
        assert await metric(node, "edgeproxy_blocklist_stale") == 0
        write_version(
            bdir / version_filename(2),
            2,
            LISTED,
            private_key_pem=private,
            valid_until=time.time() + 5.0,
        )

        async def applied() -> bool:
            async with aiohttp.ClientSession() as s, s.get(node.admin + "/blocklist") as r:
                return (await r.json())["file_sequence"] == 2

        await eventually(applied, timeout_s=15.0)

        async def red() -> bool:
            return (await readyz(node))[0] == 503

        await eventually(red, timeout_s=15.0)
        status, body = await readyz(node)
        assert any("blocklist stale since" in str(p) for p in body["problems"]), body  # type: ignore[attr-defined]
        assert await metric(node, "edgeproxy_blocklist_stale") == 1
        assert (await get(node.url + "/listed/x"))[0] == 451
        assert (await get(node.url + "/free/x"))[0] == 200
        # A fresh version from the publisher makes the node ready again.
        write_version(
            bdir / version_filename(3),
            3,
            LISTED,
            private_key_pem=private,
            valid_until=time.time() + 3600,
        )

        async def green() -> bool:
            return (await readyz(node))[0] == 200

        await eventually(green, timeout_s=15.0)
        assert await metric(node, "edgeproxy_blocklist_stale") == 0
        assert (await get(node.url + "/listed/y"))[0] == 451
    finally:
        await node.stop()


async def test_list_without_valid_until_stays_ready(
    origin_server,
    keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    private, pub = keys
    origin = await origin_server(origin_app([]))
    bdir = tmp_path / "lists"
    bdir.mkdir()
    write_version(bdir / version_filename(1), 1, LISTED, private_key_pem=private)
    node = Node.on_dir(origin, bdir, pub)
    await node.start()
    try:
        assert (await readyz(node))[0] == 200
        assert await metric(node, "edgeproxy_blocklist_stale") == 0
    finally:
        await node.stop()


async def test_jump_and_conflict_are_counted_and_change_nothing(
    origin_server,
    keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    private, pub = keys
    origin = await origin_server(origin_app([]))
    bdir = tmp_path / "lists"
    bdir.mkdir()
    first = bdir / version_filename(1)
    write_version(first, 1, LISTED, private_key_pem=private)
    enforced = read_version(first, pub.read_bytes(), max_bytes=1 << 20).sha256
    node = Node.on_dir(origin, bdir, pub)
    await node.start()
    try:
        for seq, name in ((2**40, version_filename(2**40)), (1, "blocklist-conflict.jsonl")):
            before = await reload_failures(node)
            path = bdir / name
            write_version(path, seq, [], private_key_pem=private)

            async def counted() -> bool:
                return await reload_failures(node) > before  # noqa: B023

            try:
                await eventually(counted, timeout_s=15.0)
            except AssertionError:
                raise AssertionError("".join(node.output)) from None
            assert (await get(node.url + "/listed/x"))[0] == 451
            path.unlink()
        log = "".join(node.output)
        assert "max_sequence_step" in log and version_filename(2**40) in log
        conflict = read_version  # the conflict line names both hashes
        assert enforced in log and "blocklist-conflict.jsonl" in log, conflict
    finally:
        await node.stop()
