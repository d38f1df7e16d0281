"""Issue 4: the access log. A running node (`edgeproxy serve --access-log FILE`) writes one JSON
line per request with the fields an operator greps for; sampling 0 writes none. Then the writer
itself, in-process: batching, the bounded buffer, pipes shared by workers, rotation, close.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from proxy.metrics import Result, WorkerStats
from proxy.node.accesslog import AccessLog
from proxy.rfc.storable import NoStoreReason
from proxy.rfc.target import canonical_target
from tests.integration.conftest import raw_request
from tests.integration.node import Node

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def origin_app(seen: list[str]) -> web.Application:
    async def cacheable(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"c" * 100, headers={"Cache-Control": "max-age=60"})

    async def no_store(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"n" * 50, headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/c/{n}", cacheable)
    app.router.add_get("/blocked/{n}", cacheable)
    app.router.add_get("/nostore", no_store)
    return app


def write_config(tmp_path: Path, origin: str, log: str) -> Path:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n\n'
        f'[[sites]]\nname = "a"\nhosts = ["a.test"]\norigin = "{origin}"\n\n'
        f"[log]\n{log}\n"
    )
    return cfg


@pytest.fixture
async def nodes():
    started: list[Node] = []
    yield started
    for n in started:
        await n.stop()


async def read_lines(path: Path, want: int, timeout_s: float = 5.0) -> list[dict]:
    """The log's lines once there are `want` of them (the writer batches every ~0.2 s)."""
    async with asyncio.timeout(timeout_s):
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) >= want:
                return [json.loads(line) for line in lines]
            await asyncio.sleep(0.05)


async def test_one_json_line_per_request_with_the_operator_fields(
    origin_server, nodes, tmp_path: Path
) -> None:
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    log = tmp_path / "access.log"
    node = Node(
        [
            "--config",
            str(write_config(tmp_path, origin, "")),
            "--workers",
            "2",
            "--access-log",
            str(log),
        ]
    )
    nodes.append(node)
    await node.start()
    status, _ = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {"entries": [{"id": "take-7", "type": "prefix", "value": "http://a.test/blocked/"}]},
    )
    assert status == 200
    h = {"Host": "a.test"}
    keep = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    async with keep, fresh:
        for _ in range(2):  # a miss, then a hit on the same worker
            async with keep.get(node.url + "/c/1?x=%7e", headers=h) as r:
                assert r.status == 200 and len(await r.read()) == 100
        for n in range(10):  # new connections: both workers write to the one file
            async with fresh.get(node.url + f"/c/{10 + n}", headers=h) as r:
                assert r.status == 200
        async with fresh.get(node.url + "/nostore", headers=h) as r:
            assert r.status == 200
        async with fresh.get(node.url + "/blocked/9", headers=h) as r:
            assert r.status == 451
        async with fresh.get(node.url + "/c/1", headers={"Host": "elsewhere.test"}) as r:
            assert r.status == 421
    answer = await raw_request(node.port, b"GET /bad%zz HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")

    records = await read_lines(log, 16)
    await asyncio.sleep(0.5)  # no more than one line per request arrives
    assert len(log.read_text().splitlines()) == 16
    for rec in records:
        assert RFC3339_UTC.match(rec["time"]), rec
        assert rec["worker"] in (0, 1) and rec["method"] == "GET"
        assert isinstance(rec["duration_ms"], float) and rec["duration_ms"] >= 0
    assert {r["worker"] for r in records} == {0, 1}

    by_target = {}
    for r in records:
        by_target.setdefault(r["target"], []).append(r)
    # The canonical form: %7e is unreserved, so it is decoded.
    miss, hit = sorted(by_target["/c/1?x=~"], key=lambda r: r["time"])
    assert (miss["result"], miss["status"], miss["bytes"], miss["site"]) == ("miss", 200, 100, "a")
    assert miss["host"] == "a.test" and miss["origin_ms"] > 0
    assert (hit["result"], hit["status"], hit["bytes"]) == ("hit", 200, 100)
    assert "origin_ms" not in hit and "blocked_id" not in hit and "no_store" not in hit
    (ns,) = by_target["/nostore"]
    assert (ns["result"], ns["no_store"]) == ("pass", "no-store") and ns["origin_ms"] > 0
    (blocked,) = by_target["/blocked/9"]
    assert (blocked["status"], blocked["result"]) == (451, "blocked")
    assert (blocked["blocked_id"], blocked["blocked_type"]) == ("take-7", "prefix")
    assert "origin_ms" not in blocked
    (bad,) = by_target["/bad%zz"]  # admit refused it: the raw target, no site
    assert (bad["status"], bad["result"], bad["site"]) == (400, "error", "-")
    misdirected = [r for r in records if r["status"] == 421]
    assert len(misdirected) == 1 and misdirected[0]["site"] == "-"
    assert misdirected[0]["target"] == "/c/1"
    assert seen.count("/c/1") == 1


async def test_sample_zero_writes_nothing(origin_server, nodes, tmp_path: Path) -> None:
    origin = await origin_server(origin_app([]))
    log = tmp_path / "access.log"
    cfg = write_config(tmp_path, origin, f'access_log = "{log}"\naccess_log_sample = 0.0')
    node = Node(["--config", str(cfg), "--workers", "1"])
    nodes.append(node)
    await node.start()
    async with aiohttp.ClientSession() as s:
        for n in range(10):
            async with s.get(node.url + f"/c/{n % 3}", headers={"Host": "a.test"}) as r:
                assert r.status == 200
    assert await node.stop() == 0
    assert log.exists() and log.read_text() == ""


# -- the writer, in-process -----------------------------------------------------------------


def fake_ctx(path: str = "/p", *, status: int = 200, result: Result = Result.HIT) -> object:
    target = canonical_target(path.encode(), b"a.test")
    return SimpleNamespace(
        request=SimpleNamespace(received_at=1_700_000_000.25, raw_target=path.encode()),
        site=object(),
        site_index=0,
        target=target,
        method="GET",
        status=status,
        result=result,
        bytes_sent=10,
        origin_s=0.0,
        blocked_id="",
        blocked_type="",
        no_store=None,
    )


async def test_record_batches_and_close_flushes(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["site-a"], 3, flush_interval_s=0.05)
    al.record(fake_ctx("/one"), 0.0012345)  # type: ignore[arg-type]
    assert log.read_text() == ""  # nothing written on the request's path
    records = await read_lines(log, 1)
    assert records == [
        {
            "time": "2023-11-14T22:13:20.250Z",
            "worker": 3,
            "site": "site-a",
            "method": "GET",
            "target": "/one",
            "status": 200,
            "result": "hit",
            "bytes": 10,
            "duration_ms": 1.234,
            "host": "a.test",
        }
    ]
    ctx = fake_ctx("/two", result=Result.PASS)
    ctx.no_store = NoStoreReason.PRIVATE  # type: ignore[attr-defined]
    ctx.origin_s = 0.5  # type: ignore[attr-defined]
    al.record(ctx, 0.6)  # type: ignore[arg-type]
    al.close()  # before the timer: close writes it
    last = json.loads(log.read_text().splitlines()[-1])
    assert (last["no_store"], last["origin_ms"], last["result"]) == ("private", 500.0, "pass")
    al.close()


async def test_a_full_buffer_drops_and_counts(tmp_path: Path) -> None:
    stats = WorkerStats(["a"])
    al = AccessLog(str(tmp_path / "a.log"), 1.0, ["a"], 0, stats=stats, max_buffered=5)
    for _ in range(8):
        al.record(fake_ctx(), 0.001)  # type: ignore[arg-type]
    assert (al.dropped, stats.access_log_dropped) == (3, 3)
    al.close()
    assert len((tmp_path / "a.log").read_text().splitlines()) == 5


async def test_sampling_keeps_about_the_configured_share(tmp_path: Path) -> None:
    random.seed(4)
    al = AccessLog(str(tmp_path / "a.log"), 0.25, ["a"], 0)
    for _ in range(2000):
        al.record(fake_ctx(), 0.001)  # type: ignore[arg-type]
    al.close()
    kept = len((tmp_path / "a.log").read_text().splitlines())
    assert 400 < kept < 600


async def test_pipes_get_whole_lines_in_atomic_chunks(tmp_path: Path, monkeypatch) -> None:
    """Workers share stdout; on a pipe each write is at most PIPE_BUF bytes of whole lines, so
    lines from different workers never interleave."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writes: list[int] = []
    al = AccessLog(str(fifo), 1.0, ["a"], 0)
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(len(data))
        assert bytes(data).endswith(b"\n")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    for n in range(200):
        al.record(fake_ctx(f"/long/{n}/" + "x" * 100), 0.001)  # type: ignore[arg-type]
    al.close()
    monkeypatch.undo()
    got = b""
    while chunk := os.read(reader, 1 << 20):
        got += chunk
    os.close(reader)
    assert len(got.splitlines()) == 200 and len(writes) > 1
    assert max(writes) <= 4096


async def test_a_rotated_file_is_reopened(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["a"], 0, flush_interval_s=0.02)
    al.record(fake_ctx("/before"), 0.001)  # type: ignore[arg-type]
    await read_lines(log, 1)
    log.rename(tmp_path / "a.log.1")
    al.record(fake_ctx("/after"), 0.001)  # type: ignore[arg-type]
    assert (await read_lines(log, 1))[0]["target"] == "/after"
    assert "/before" in (tmp_path / "a.log.1").read_text()
    al.close()


async def test_a_slow_writer_still_gets_every_batch_in_order(tmp_path: Path, monkeypatch) -> None:
    """Batches queued while the writer thread is busy follow it, in order, without waiting for
    more traffic or for close()."""
    import time

    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["a"], 0, flush_interval_s=0.01)
    real_write = os.write

    def slow(fd: int, data: bytes) -> int:
        time.sleep(0.05)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", slow)
    for n in range(5):
        al.record(fake_ctx(f"/{n}"), 0.001)  # type: ignore[arg-type]
        await asyncio.sleep(0.02)
    records = await read_lines(log, 5)
    assert [r["target"] for r in records] == [f"/{n}" for n in range(5)]
    al.close()


async def test_record_hit_writes_the_same_line_as_record(tmp_path: Path) -> None:
    """The hot hit path logs without a RequestCtx; its line equals the one `record` writes."""
    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["site-a"], 1)
    ctx = fake_ctx("/same")
    al.record(ctx, 0.002)  # type: ignore[arg-type]
    al.record_hit(
        SimpleNamespace(received_at=1_700_000_000.25, method="GET"),  # type: ignore[arg-type]
        ctx.target,  # type: ignore[attr-defined]
        0,
        200,
        10,
        0.002,
    )
    al.close()
    first, second = log.read_text().splitlines()
    assert first == second and json.loads(first)["result"] == "hit"
