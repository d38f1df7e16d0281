"""[fleet] credentials and TLS against a real redis-server: an ACL user with a password file,
and rediss:// with the server's CA. The wrong password or CA is a feed the node cannot reach:
it says so in /readyz and keeps serving its list."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from proxy.config import FleetConfig
from proxy.fleet import feed
from proxy.node.localca import LocalCA
from tests.fleet.conftest import (
    entry,
    eventually,
    eventually_status,
    fleet_node,
    origin_app,
    readyz,
    status,
)
from tests.integration.node import Node
from tests.redis_server import RedisServer, free_port


async def unreachable_because(node: Node, words: str) -> bool:
    code, body = await readyz(node)
    return code == 503 and any("unreachable" in p and words in p for p in body["problems"])


async def test_acl_user_and_password_file(
    origin_server, signing, fleet_nodes: list[Node], tmp_path: Path
) -> None:
    private, pub = signing
    server = RedisServer(tmp_path / "redis", password="admin-secret").start()
    try:
        admin = feed.connect(FleetConfig(redis_url=server.url))
        await admin.execute_command(
            "ACL", "SETUSER", "edge", "on", ">edge-secret", "~edgeproxy:fleet:*", "+@all"
        )
        from proxy.blocklist.format import render_version

        await feed.publish(
            admin, feed.Keys(), render_version(1, [entry("a", "/a/")], private_key_pem=private)
        )
        await admin.aclose()
        good = tmp_path / "edge.pass"
        good.write_text("edge-secret\n")
        bad = tmp_path / "bad.pass"
        bad.write_text("nope\n")
        origin = await origin_server(origin_app())
        url = f"redis://127.0.0.1:{server.port}/0"
        ok = fleet_node(
            tmp_path, "ok", url, origin, pub, fleet=f'username = "edge"\npassword_file = "{good}"\n'
        )
        wrong = fleet_node(
            tmp_path,
            "wrong",
            url,
            origin,
            pub,
            "--allow-empty-blocklist",
            fleet=f'username = "edge"\npassword_file = "{bad}"\n',
        )
        fleet_nodes.extend([ok, wrong])
        await ok.start()
        await wrong.start()
        await eventually_status(ok.url + "/a/x", 451)
        await eventually(
            lambda: unreachable_because(wrong, "Authentication"), what="the wrong password reported"
        )
        assert await status(wrong.url + "/a/x") == 200  # serving, on what it has (nothing)
    finally:
        server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path):
    """redis-server speaking TLS only, with a certificate from a CA made for the test."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    ca = LocalCA(tmp_path / "ca", name="fleet test CA")
    leaf = ca.issue(["127.0.0.1", "localhost"], stem="redis")
    port = free_port()
    d = tmp_path / "redis-tls"
    d.mkdir()
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            leaf.cert_file,
            "--tls-key-file",
            leaf.key_file,
            "--tls-ca-cert-file",
            ca.ca_file,
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--dir",
            str(d),
            "--logfile",
            str(d / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None, (d / "redis.log").read_text()
                assert time.monotonic() < deadline, "redis-server (TLS) did not listen"
                time.sleep(0.05)
        yield port, ca.ca_file
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_rediss_with_the_servers_ca(
    tls_redis, origin_server, signing, fleet_nodes: list[Node], tmp_path: Path
) -> None:
    port, ca_file = tls_redis
    private, pub = signing
    url = f"rediss://127.0.0.1:{port}/0"
    r = feed.connect(FleetConfig(redis_url=url, tls_ca_file=ca_file))
    from proxy.blocklist.format import render_version

    await feed.publish(
        r, feed.Keys(), render_version(1, [entry("a", "/a/")], private_key_pem=private)
    )
    await r.aclose()
    other = LocalCA(tmp_path / "other-ca", name="someone else")
    origin = await origin_server(origin_app())
    ok = fleet_node(tmp_path, "ok", url, origin, pub, fleet=f'tls_ca_file = "{ca_file}"\n')
    wrong = fleet_node(
        tmp_path,
        "wrong",
        url,
        origin,
        pub,
        "--allow-empty-blocklist",
        fleet=f'tls_ca_file = "{other.ca_file}"\n',
    )
    fleet_nodes.extend([ok, wrong])
    await ok.start()
    await wrong.start()
    await eventually_status(ok.url + "/a/x", 451)
    await eventually(
        lambda: unreachable_because(wrong, "certificate"), what="an unverified server refused"
    )
    assert await status(wrong.url + "/a/x") == 200
    await asyncio.sleep(0)
