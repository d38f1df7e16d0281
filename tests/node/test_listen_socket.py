"""Issue 10, "A second node on the same port": a node shares its listen socket with its own
workers only. A second `edgeproxy serve` on a port an enforcing node holds fails at start naming
the address; the first node keeps every request (its 451s included)."""

from __future__ import annotations

import asyncio
import signal
import socket

import aiohttp
import pytest

from tests.integration.node import Node
from tests.node.conftest import get, origin_app


async def blocking_node(origin_server, nodes: list[Node], workers: int = 2) -> Node:
    origin = await origin_server(origin_app([]))
    node = Node(["--origin", origin, "--workers", str(workers)])
    nodes.append(node)
    await node.start()
    status, _ = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {"entries": [{"id": "taken-down", "type": "url", "value": f"{node.url}/listed"}]},
    )
    assert status == 200
    return node


async def answers_of(node: Node, n: int = 10) -> list[int]:
    """n requests for the listed URL, each on a new connection (so every accepting socket in
    the port's group would get its share)."""
    statuses = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(n):
            async with s.get(node.url + "/listed") as r:
                statuses.append(r.status)
    return statuses


@pytest.mark.parametrize("listen_host", ["127.0.0.1", "0.0.0.0"])
async def test_a_second_node_on_the_port_fails_naming_the_address(
    origin_server, nodes, listen_host: str
) -> None:
    first = await blocking_node(origin_server, nodes)
    origin = await origin_server(origin_app([], tag="B"))
    second = Node(["--origin", origin, "--workers", "2"])  # its own state dir, no list
    nodes.append(second)
    second.port = first.port
    second.args += ["--listen", f"{listen_host}:{first.port}"]  # the later flag wins
    await second.start(expect_ready=False)
    code = await second.wait_exit()
    out = "".join(second.output)
    assert code != 0, out
    assert f"cannot listen on {listen_host}:{first.port}" in out, out
    assert "listening" not in out.replace("cannot listen", ""), out
    assert await answers_of(first) == [451] * 10


async def test_no_program_can_join_the_port_with_so_reuseport(origin_server, nodes) -> None:
    """Not only a second edgeproxy: any socket asking to share the port is refused."""
    first = await blocking_node(origin_server, nodes, workers=1)
    intruder = socket.socket()
    try:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            intruder.bind(("127.0.0.1", first.port))
    finally:
        intruder.close()
    assert await answers_of(first, 4) == [451] * 4


async def test_restarted_and_rolled_workers_serve_on_the_same_socket(
    origin_server, nodes, tmp_path
) -> None:
    """The supervisor holds the socket: a worker that replaces a dead one, and the workers a
    SIGHUP rolls, accept on it; the port never goes free for someone else meanwhile."""
    origin = await origin_server(origin_app([]))
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[[sites]]\nname = "s"\nhosts = ["*"]\norigin = "{origin}"\n')
    node = Node(["--config", str(cfg), "--workers", "2"])
    nodes.append(node)
    await node.start()
    await node.admin_json(
        "POST",
        "/blocklist/entries",
        {"entries": [{"id": "x", "type": "url", "value": f"{node.url}/listed"}]},
    )
    await node.kill_worker_and_wait(0)
    assert await answers_of(node, 6) == [451] * 6
    before = set(await node.worker_pids())
    assert node.proc is not None
    # A change the running workers cannot take (a new origin pool): the SIGHUP rolls them.
    cfg.write_text(cfg.read_text() + "[origin]\nconnect_timeout_s = 4.0\n")
    node.proc.send_signal(signal.SIGHUP)
    async with asyncio.timeout(20):
        while True:
            try:
                now = set(await node.worker_pids())
            except aiohttp.ClientError:
                now = set()
            if len(now) == 2 and not now & before:
                break
            await asyncio.sleep(0.1)
    assert await answers_of(node, 6) == [451] * 6
    status, _, body = await get(node.url + "/other")
    assert status == 200 and body == b"A:/other"
    with socket.socket() as s, pytest.raises(OSError):
        s.bind(("127.0.0.1", node.port))
