"""Signed blocklist versions followed from a directory by a running node: load at start,
hot reload, bad feeds rejected while the last good list keeps enforcing, cached objects purged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.blocklist.format import generate_keypair, version_filename, write_version
from proxy.blocklist.model import Entry, EntryType
from tests.integration.node import Node, eventually


@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, Path]:
    private, public = generate_keypair()
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public)
    return private, pub


def origin_app(seen: list[str]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text=f"content of {request.path}", headers={"Cache-Control": "max-age=300"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status, await r.read()


async def reload_failures(node: Node) -> float:
    async with aiohttp.ClientSession() as s:
        async with s.get(node.admin + "/metrics") as r:
            text = await r.text()
    for fam in text_string_to_metric_families(text):
        if fam.name == "edgeproxy_blocklist_reload_failures":
            return fam.samples[0].value
    raise AssertionError("no reload failure metric")


def entry(i: str, typ: EntryType, value: str) -> Entry:
    return Entry(id=i, type=typ, value=value, notice=f"N-{i}", reason="test")


async def test_directory_versions_load_reload_and_reject(origin_server, keys, tmp_path) -> None:
    private, pub = keys
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    bdir = tmp_path / "lists"
    bdir.mkdir()
    write_version(bdir / version_filename(1), 1,
                  [entry("a", EntryType.PREFIX, "http://127.0.0.1/listed/")], private_key_pem=private)
    node = Node(["--origin", origin, "--workers", "2", "--blocklist-dir", str(bdir),
                 "--blocklist-key", str(pub)])
    await node.start()
    try:
        assert (await get(node.url + "/listed/x"))[0] == 451
        assert (await get(node.url + "/free/x"))[0] == 200
        # Cache an object, then list it by a newer version: it is purged and refused.
        assert (await get(node.url + "/later/y"))[0] == 200
        write_version(bdir / version_filename(2), 2, [
            entry("a", EntryType.PREFIX, "http://127.0.0.1/listed/"),
            entry("b", EntryType.URL, "http://127.0.0.1/later/y"),
        ], private_key_pem=private)

        async def blocked() -> bool:
            return (await get(node.url + "/later/y"))[0] == 451

        await eventually(blocked)
        # A badly signed newer version is rejected; version 2 keeps enforcing.
        other, _ = generate_keypair()
        write_version(bdir / version_filename(3), 3, [], private_key_pem=other)
        failures_before = await reload_failures(node)

        async def rejected() -> bool:
            return await reload_failures(node) > failures_before

        await eventually(rejected)
        assert (await get(node.url + "/later/y"))[0] == 451
        assert (await get(node.url + "/listed/z"))[0] == 451
        # A truncated file is rejected the same way.
        good = (bdir / version_filename(2)).read_bytes()
        (bdir / version_filename(4)).write_bytes(good.replace(b'"sequence":2', b'"sequence":4')[:-40])
        await asyncio.sleep(0.5)
        assert (await get(node.url + "/listed/z"))[0] == 451
        assert not any("/listed/" in p for p in seen)
    finally:
        await node.stop()


async def test_empty_directory_refuses_to_start_unless_allowed(keys, tmp_path) -> None:
    _, pub = keys
    bdir = tmp_path / "empty"
    bdir.mkdir()
    node = Node(["--origin", "http://127.0.0.1:1", "--workers", "1", "--blocklist-dir", str(bdir),
                 "--blocklist-key", str(pub)])
    await node.start(expect_ready=False)
    assert await node.wait_exit() == 2
    assert "holds no valid version" in "".join(node.output)
    node = Node(["--origin", "http://127.0.0.1:1", "--workers", "1", "--blocklist-dir", str(bdir),
                 "--blocklist-key", str(pub), "--allow-empty-blocklist"])
    await node.start()
    await node.stop()
