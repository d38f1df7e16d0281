"""A node's workers split a burst of new connections (proxy/front/accept.py). Before, the
worker awake first took a whole burst: 64/0 of wrk's 64 connections, measured. The admin's
/status counts each worker's open connections. They also take turns at connections opened one
after another, which left every count at 0 or 1 (one worker took 34 of 34 requests once)."""

from __future__ import annotations

import asyncio

from tests.front.conftest import read_response
from tests.integration.node import Node, eventually
from tests.node.conftest import origin_app

CONNECTIONS = 40
SEQUENTIAL = 20


async def open_burst(port: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`CONNECTIONS` connections opened at once, then one request on each (kept open)."""
    conns = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS))
    )
    for _, writer in conns:
        writer.write(b"GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    for reader, _ in conns:
        assert (await read_response(reader)).status == 200
    return conns


async def per_worker(node: Node) -> list[int]:
    status, body = await node.admin_json("GET", "/status")
    assert status == 200
    return [w["connections"] for w in body["workers"]]


async def start_node(origin_server, nodes, tmp_path) -> Node:
    origin = await origin_server(origin_app([]))
    config = tmp_path / "edge.toml"
    # a deferral long enough for the other worker to be scheduled on a loaded test machine
    config.write_text(
        f'[limits]\naccept_defer_s = 0.2\n\n[[sites]]\nname = "t"\nhosts = ["127.0.0.1"]\norigin = "{origin}"\n'
    )
    node = Node(["--config", str(config), "--workers", "2"])
    nodes.append(node)
    await node.start()
    return node


async def test_a_burst_of_connections_is_split_between_the_workers(
    origin_server, nodes, tmp_path
) -> None:
    node = await start_node(origin_server, nodes, tmp_path)
    conns = await open_burst(node.port)
    counts: list[int] = []

    async def all_counted() -> bool:
        counts[:] = await per_worker(node)
        return sum(counts) == CONNECTIONS

    await eventually(all_counted, timeout_s=10, what="every connection counted")
    assert min(counts) >= CONNECTIONS // 2 - 4, counts
    for _, writer in conns:
        writer.close()


async def test_connections_one_after_another_are_taken_in_turn(
    origin_server, nodes, tmp_path
) -> None:
    node = await start_node(origin_server, nodes, tmp_path)
    status, body = await node.admin_json("GET", "/status")
    before = [w["requests"] for w in body["workers"]]
    for _ in range(SEQUENTIAL):
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await read_response(reader)).status == 200
        writer.close()
        await writer.wait_closed()
    status, body = await node.admin_json("GET", "/status")
    served = [w["requests"] - b for w, b in zip(body["workers"], before, strict=True)]
    assert sum(served) == SEQUENTIAL and min(served) >= SEQUENTIAL // 2 - 3, served
