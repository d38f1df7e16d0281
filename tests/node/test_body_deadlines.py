"""Issue 10, "Exhaustion", through a whole node (`edgeproxy serve`, a worker, the admin): a POST
body trickled below the minimum rate gets 408, and the connection the edge opened to the origin
for it is closed rather than held open for as long as the client keeps trickling."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.node import Node


class SilentOrigin:
    """A raw HTTP/1.1 origin that takes what the edge sends and never answers; `ended` is set
    when the edge closes a connection to it (EOF or reset)."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()
        self.ended = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(65536):
                self.received += data
        except ConnectionError:
            pass
        finally:
            self.ended.set()
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def trickle(writer: asyncio.StreamWriter, every_s: float) -> None:
    """A byte every `every_s` (about 50 B/s at 20 ms: far below the configured minimum)."""
    try:
        for _ in range(5000):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(every_s)
    except ConnectionError:
        pass


async def counts(node: Node, family: str, label: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s:
        async with s.get(node.admin + "/metrics") as r:
            text = await r.text()
    return {
        sample.labels[label]: sample.value
        for fam in text_string_to_metric_families(text)
        if fam.name == family
        for sample in fam.samples
        if sample.name.endswith("_total")
    }


async def test_trickled_post_is_408_and_its_origin_connection_is_closed_issue_10(
    nodes, tmp_path
) -> None:
    origin = SilentOrigin()
    url = await origin.start()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[[sites]]\nname = "a"\nhosts = ["*"]\norigin = "{url}"\n\n'
        "[limits]\n"
        "body_read_timeout_s = 10.0\n"  # each byte beats the silence deadline
        "body_min_rate_bytes_per_s = 1000\n"
        "body_min_rate_grace_s = 0.5\n\n"
        "[origin]\n"
        "keepalive_timeout_s = 60.0\n"  # a pooled connection would stay open past the test
        "first_byte_timeout_s = 60.0\n"
    )
    node = Node(["--config", str(cfg), "--workers", "1"])
    nodes.append(node)
    try:
        await node.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n")
        sender = asyncio.ensure_future(trickle(writer, 0.02))
        answer = b""
        try:
            async with asyncio.timeout(15):
                while chunk := await reader.read(65536):  # to the edge's close
                    answer += chunk
        finally:
            sender.cancel()
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ") and b"\r\nConnection: close\r\n" in answer
        # The request had reached the origin, body streaming; the edge then dropped that
        # connection: neither held open nor kept for reuse with half a request sent on it.
        async with asyncio.timeout(5):
            await origin.ended.wait()
        assert origin.connections == 1
        assert origin.received.startswith(b"POST /upload HTTP/1.1\r\n")
        assert len(origin.received.partition(b"\r\n\r\n")[2]) < 100000
        timeouts = await counts(node, "edgeproxy_front_timeouts", "reason")
        assert timeouts == {
            "head": 0,
            "body-idle": 0,
            "body-total": 0,
            "body-rate": 1,
            "write-stall": 0,
        }
        assert (await counts(node, "edgeproxy_front_rejected", "status"))["408"] == 1
    finally:
        origin.close()
