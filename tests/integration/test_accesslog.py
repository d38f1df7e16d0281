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

from proxy.front.exchange import EMPTY_BODY, Request
from proxy.front.request_id import RequestIds
from proxy.metrics import Result, WorkerStats
from proxy.node.accesslog import AccessLog
from proxy.rfc.storable import NoStoreReason
from proxy.rfc.target import canonical_target
from tests.integration.conftest import raw_request
from tests.integration.node import Node, eventually, metric

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
    ids: dict[str, str] = {}  # target -> the X-Request-Id its answer carried
    async with keep, fresh:
        for n in range(2):  # a miss, then a hit on the same worker
            ref = {"Referer": "http://ref.test/page", "User-Agent": f"probe/{n}"}
            async with keep.get(node.url + "/c/1?x=%7e", headers=h | ref) as r:
                assert r.status == 200 and len(await r.read()) == 100
                ids[f"c1-{n}"] = r.headers["X-Request-Id"]
        # New connections until both workers have answered (an id's tag is its worker's),
        # ten at least: both write to the one file. Which worker accepts is the kernel's.
        tags: set[str] = set()
        spread = 0
        while len(tags) < 2 or spread < 10:
            assert spread < 400, "400 new connections, all answered by one worker"
            async with fresh.get(node.url + f"/c/{10 + spread}", headers=h) as r:
                assert r.status == 200
                tags.add(r.headers["X-Request-Id"].rsplit("-", 1)[0])
            spread += 1
        async with fresh.get(node.url + "/nostore", headers=h) as r:
            assert r.status == 200
        async with fresh.get(node.url + "/blocked/9", headers=h) as r:
            assert r.status == 451
            ids["451"] = r.headers["X-Request-Id"]
        async with fresh.get(node.url + "/c/1", headers={"Host": "elsewhere.test"}) as r:
            assert r.status == 421
            ids["421"] = r.headers["X-Request-Id"]
    answer = await raw_request(node.port, b"GET /bad%zz HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    answer = await raw_request(node.port, b"GET /c/old HTTP/1.0\r\nHost: a.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")

    lines = 7 + spread  # the miss, the hit, the new connections, and five more
    records = await read_lines(log, lines)
    await asyncio.sleep(0.5)  # no more than one line per request arrives
    assert len(log.read_text().splitlines()) == lines
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
    # Issue 17: who asked, how, with which id, for which key, and what came back.
    for n, rec in enumerate((miss, hit)):
        assert (rec["client"], rec["protocol"], rec["tls"]) == ("127.0.0.1", "HTTP/1.1", False)
        assert (rec["user_agent"], rec["referer"]) == (f"probe/{n}", "http://ref.test/page")
        assert rec["request_id"] == ids[f"c1-{n}"]
        assert rec["content_type"] == "application/octet-stream"
        assert rec["key"] == "a.test/c/1?x=~"
    assert ids["c1-0"] != ids["c1-1"]
    assert (hit["result"], hit["status"], hit["bytes"]) == ("hit", 200, 100)
    assert "origin_ms" not in hit and "blocked_id" not in hit and "no_store" not in hit
    (ns,) = by_target["/nostore"]
    assert (ns["result"], ns["no_store"]) == ("pass", "no-store") and ns["origin_ms"] > 0
    (blocked,) = by_target["/blocked/9"]
    assert (blocked["status"], blocked["result"]) == (451, "blocked")
    assert (blocked["blocked_id"], blocked["blocked_type"]) == ("take-7", "prefix")
    assert blocked["request_id"] == ids["451"] and blocked["content_type"].startswith("text/")
    assert "origin_ms" not in blocked
    (old,) = by_target["/c/old"]
    assert old["protocol"] == "HTTP/1.0" and "user_agent" not in old and "referer" not in old
    (bad,) = by_target["/bad%zz"]  # admit refused it: the raw target, no site
    assert (bad["status"], bad["result"], bad["site"]) == (400, "error", "-")
    misdirected = [r for r in records if r["status"] == 421]
    assert len(misdirected) == 1 and misdirected[0]["site"] == "-"
    assert misdirected[0]["target"] == "/c/1"
    # The Host that explains the 421, and no cache key (it never reached the cache).
    assert misdirected[0]["host"] == "elsewhere.test" and "key" not in misdirected[0]
    assert misdirected[0]["request_id"] == ids["421"]
    assert seen.count("/c/1") == 1


async def logged_node(
    origin_server, nodes, tmp_path: Path, settings: str, paths: list[str]
) -> Node:
    """A one-worker node logging to tmp_path/access.log with these `[log]` settings, after
    a GET of each path (site a.test)."""
    origin = await origin_server(origin_app([]))
    log = tmp_path / "access.log"
    cfg = write_config(tmp_path, origin, f'access_log = "{log}"\n{settings}')
    node = Node(["--config", str(cfg), "--workers", "1"])
    nodes.append(node)
    await node.start()
    async with aiohttp.ClientSession() as s:
        for path in paths:
            async with s.get(node.url + path, headers={"Host": "a.test"}) as r:
                assert r.status == 200
    return node


async def test_sample_zero_writes_nothing(origin_server, nodes, tmp_path: Path) -> None:
    paths = [f"/c/{n % 3}" for n in range(10)]
    node = await logged_node(origin_server, nodes, tmp_path, "access_log_sample = 0.0", paths)
    log = tmp_path / "access.log"
    assert await node.stop() == 0
    assert log.exists() and log.read_text() == ""


async def test_the_buffer_and_batch_settings_are_the_configs(
    origin_server, nodes, tmp_path: Path
) -> None:
    """`[log] access_log_max_buffered_records` and `access_log_flush_interval_s` reach the
    workers: with a batch every minute and room for 3 records, 2 of 5 requests are dropped and
    counted, and the 3 kept are written when the node stops."""
    settings = (
        "access_log_flush_interval_s = 60.0\naccess_log_max_buffered_records = 3\n"
        "access_log_format_chunk_rows = 2\naccess_log_client_fields_max_entries = 0"
    )
    paths = [f"/c/{n}" for n in range(5)]
    node = await logged_node(origin_server, nodes, tmp_path, settings, paths)
    log = tmp_path / "access.log"

    async def two_dropped() -> bool:
        return await metric(node, "edgeproxy_access_log_dropped_total") == 2

    await eventually(two_dropped, what="2 records dropped")
    assert log.read_text() == ""  # the next batch is a minute away
    assert await node.stop() == 0
    assert [json.loads(line)["target"] for line in log.read_text().splitlines()] == [
        "/c/0",
        "/c/1",
        "/c/2",
    ]


# -- the writer, in-process -----------------------------------------------------------------


def fake_request(path: str = "/p") -> Request:
    headers = [
        (b"Host", b"a.test"),
        (b"User-Agent", b'curl/8 "quoted"'),
        (b"Referer", b"http://r/"),
    ]
    return Request(
        "GET", path.encode(), "1.1", headers, True, False, None, EMPTY_BODY, "127.0.0.7",
        1_700_000_000.25, b"a.test", False, True, b"X-Request-Id: abc-1\r\n",
    )  # fmt: skip


def fake_ctx(path: str = "/p", *, status: int = 200, result: Result = Result.HIT) -> object:
    target = canonical_target(path.encode(), b"a.test")
    return SimpleNamespace(
        request=fake_request(path),
        key=((target.authority, target.raw_path_query), ("gzip",)),
        entry=SimpleNamespace(headers=((b"Content-Type", b"text/html"),)),
        outcome=None,
        content_type=b"",
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
    ids = RequestIds("X-Request-Id")
    al = AccessLog(str(log), 1.0, ["site-a"], 3, flush_interval_s=0.05, request_ids=ids)
    al.record(fake_ctx("/one"), 0.0012345)  # type: ignore[arg-type]
    assert log.read_text() == ""  # nothing written on the request's path
    records = await read_lines(log, 1)
    assert records == [
        {
            "time": "2023-11-14T22:13:20.250Z",
            "worker": 3,
            "client": "127.0.0.7",
            "site": "site-a",
            "method": "GET",
            "target": "/one",
            "protocol": "HTTP/1.1",
            "tls": True,
            "status": 200,
            "result": "hit",
            "bytes": 10,
            "duration_ms": 1.234,
            "host": "a.test",
            "request_id": "abc-1",
            "user_agent": 'curl/8 "quoted"',
            "referer": "http://r/",
            "content_type": "text/html",
            "key": "a.test/one|gzip",
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
    for n in range(100):  # about 45 KB: within the pipe's buffer, which nobody reads yet
        al.record(fake_ctx(f"/long/{n}/" + "x" * 100), 0.001)  # type: ignore[arg-type]
    al.close()
    monkeypatch.undo()
    got = b""
    while chunk := os.read(reader, 1 << 20):
        got += chunk
    os.close(reader)
    assert len(got.splitlines()) == 100 and len(writes) > 1
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

    real_writev = os.writev

    def slow(fd: int, data: bytes) -> int:
        time.sleep(0.05)
        return real_write(fd, data)

    def slow_v(fd: int, chunks: list[bytes]) -> int:
        time.sleep(0.05)
        return real_writev(fd, chunks)

    monkeypatch.setattr(os, "write", slow)
    monkeypatch.setattr(os, "writev", slow_v)
    for n in range(5):
        al.record(fake_ctx(f"/{n}"), 0.001)  # type: ignore[arg-type]
        await asyncio.sleep(0.02)
    records = await read_lines(log, 5)
    assert [r["target"] for r in records] == [f"/{n}" for n in range(5)]
    al.close()


async def test_record_hit_writes_the_same_line_as_record(tmp_path: Path) -> None:
    """The hot hit path logs without a RequestCtx; its line equals the one `record` writes."""
    log = tmp_path / "a.log"
    for text in (False, True):
        log = tmp_path / f"a-{text}.log"
        al = AccessLog(str(log), 1.0, ["site-a"], 1, text=text, request_ids=RequestIds("X-Id"))
        ctx = fake_ctx("/same")
        al.record(ctx, 0.002)  # type: ignore[arg-type]
        target = ctx.target  # type: ignore[attr-defined]
        entry = _Stored(
            target=target,
            primary=(target.authority, target.raw_path_query),
            variant=("gzip",),
            headers=((b"content-type", b"text/html"),),
        )
        # Twice: the second line comes from what the first worked out for the entry.
        for _ in range(2):
            al.record_hit(ctx.request, entry, 0, 200, 10, 0.002)  # type: ignore[arg-type,attr-defined]
        al.close()
        first, second, third = log.read_text().splitlines()
        assert first == second == third and (
            "result=hit" in first if text else json.loads(first)["result"] == "hit"
        )


class _Stored(SimpleNamespace):
    """A stored entry's stand-in: weakly referable and hashed by identity, as `Entry` is."""

    __hash__ = object.__hash__


async def test_the_text_form_is_combined_then_key_values(tmp_path: Path) -> None:
    """`access_log_format = "text"`: the combined log format shippers parse, then key=value
    pairs; a client's quotes and control bytes are escaped, never a new field or line."""
    al = AccessLog(
        str(tmp_path / "t.log"),
        1.0,
        ["site-a"],
        2,
        text=True,
        request_ids=RequestIds("X-Request-Id"),
    )
    ctx = fake_ctx("/t", result=Result.MISS)
    ctx.request.headers.append((b"User-Agent", b"second"))  # type: ignore[attr-defined]
    ctx.request.headers[1] = (b"User-Agent", b'evil"\n1.2.3.4 - - [x]')  # type: ignore[attr-defined]
    al.record(ctx, 0.0015)  # type: ignore[arg-type]
    al.close()
    line = (tmp_path / "t.log").read_text()
    assert line == (
        '127.0.0.7 - - [2023-11-14T22:13:20.250Z] "GET /t HTTP/1.1" 200 10 "http://r/"'
        ' "evil\\x22\\x0a1.2.3.4 - - [x]" host=a.test site=site-a result=miss request_id=abc-1'
        ' content_type="text/html" key="a.test/t|gzip" duration_ms=1.5 tls=on worker=2\n'
    )


async def test_a_big_batch_is_formatted_a_chunk_a_loop_turn(tmp_path: Path) -> None:
    """Issue 18's tail: thousands of rows formatted at once held the loop for milliseconds.
    A batch is formatted `format_chunk_rows` at a time, the loop free between chunks, and
    every line still lands, in order."""
    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["a"], 0, flush_interval_s=0.01, format_chunk_rows=10)
    sizes: list[int] = []
    turns: list[int] = []
    real_format = al.format

    def format_counted(rows):  # type: ignore[no-untyped-def]
        data = real_format(rows)
        sizes.append(data.count(b"\n"))  # lines of this chunk
        turns.append(ticks[0])
        return data

    al.format = format_counted  # type: ignore[method-assign]
    ticks = [0]
    stop = asyncio.Event()

    async def count_turns() -> None:
        while not stop.is_set():
            ticks[0] += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count_turns())
    for n in range(35):
        al.record(fake_ctx(f"/{n}"), 0.001)  # type: ignore[arg-type]
    records = await read_lines(log, 35)
    stop.set()
    await counter
    assert [r["target"] for r in records] == [f"/{n}" for n in range(35)]
    assert sizes == [10, 10, 10, 5]
    assert len(set(turns)) == 4  # each chunk in a loop turn of its own
    al.close()


async def test_a_chunked_batch_is_handed_to_the_writer_once(tmp_path: Path) -> None:
    """Each hand-over to the writer thread is an executor job, a thread wake-up and a
    callback on the loop; a batch formatted in chunks is handed over once, when its last
    chunk is formatted, not once per chunk."""
    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["a"], 0, flush_interval_s=0.01, format_chunk_rows=10)
    drains: list[int] = []
    real_drain = al._drain

    def drain_counted() -> None:
        drains.append(len(al._pending))
        real_drain()

    al._drain = drain_counted  # type: ignore[method-assign]
    for n in range(35):
        al.record(fake_ctx(f"/{n}"), 0.001)  # type: ignore[arg-type]
    records = await read_lines(log, 35)
    assert [r["target"] for r in records] == [f"/{n}" for n in range(35)]
    assert drains == [4]  # one hand-over, the batch's four chunks in it
    al.close()


async def test_a_hit_row_holds_nothing_the_collector_must_keep_tracking(tmp_path: Path) -> None:
    """Rows wait up to flush_interval_s; a hit's row is plain values, so the collector has
    nothing of it to walk, and it moves the young generation no step towards a collection
    (issue 18: with request objects in the rows, a logged hit load ran full collections of
    10-25 ms; with a tuple per row, ~400 young collections per 300,000 logged hits)."""
    import gc

    al = AccessLog(str(tmp_path / "a.log"), 1.0, ["a"], 0, flush_interval_s=60)
    ctx = fake_ctx("/gc")
    target = ctx.target  # type: ignore[attr-defined]
    entry = _Stored(
        target=target,
        primary=(target.authority, target.raw_path_query),
        variant=(),
        headers=((b"content-type", b"text/html"),),
    )
    al.record_hit(ctx.request, entry, 0, 200, 10, 0.002)  # type: ignore[arg-type,attr-defined]
    gc.collect(0)  # the entry's fields (a tuple of strings, made for its first hit) untracked
    assert not any(gc.is_tracked(value) for value in al._rows)
    gc.disable()
    try:
        young = gc.get_count()[0]
        for _ in range(200):
            al.record_hit(ctx.request, entry, 0, 200, 10, 0.002)  # type: ignore[arg-type,attr-defined]
        assert gc.get_count()[0] - young < 10  # not one tracked object left per hit
    finally:
        gc.enable()
    al.close()
    lines = [json.loads(line) for line in (tmp_path / "a.log").read_text().splitlines()]
    assert len(lines) == 201
    assert (lines[0]["target"], lines[0]["result"], lines[0]["content_type"]) == (
        "/gc",
        "hit",
        "text/html",
    )


async def test_a_file_gets_a_whole_batch_in_one_writev(tmp_path: Path, monkeypatch) -> None:
    """Every system call of the writer thread costs a GIL hand-over, which the loop's thread
    waits for (see the module's docstring): a batch of many chunks goes to a file in one
    `writev`, in order, and the lines are counted as written."""
    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["a"], 0, flush_interval_s=0.01, format_chunk_rows=10)
    calls: list[int] = []
    real_writev = os.writev

    def counted(fd: int, chunks: list[bytes]) -> int:
        calls.append(len(chunks))
        return real_writev(fd, chunks)

    monkeypatch.setattr(os, "writev", counted)
    for n in range(95):
        al.record(fake_ctx(f"/{n}"), 0.001)  # type: ignore[arg-type]
    await read_lines(log, 95)  # formatted 10 rows a loop turn, then handed over
    async with asyncio.timeout(5.0):  # counted once the call has returned, in the thread
        while al.written < 95:
            await asyncio.sleep(0.01)
    assert calls == [10] and al.written == 95
    for n in range(95, 100):
        al.record(fake_ctx(f"/{n}"), 0.001)  # type: ignore[arg-type]
    al.close()
    assert calls == [10, 1] and al.snapshot()["written"] == 100
    assert [json.loads(line)["target"] for line in log.read_text().splitlines()] == [
        f"/{n}" for n in range(100)
    ]


async def test_a_short_writev_is_carried_on_and_a_failed_one_counted(
    tmp_path: Path, monkeypatch
) -> None:
    """A writev the kernel cuts short (a signal, a disk filling up) goes on where it stopped,
    mid-chunk; one that fails loses its lines, counted, and the next batch is written."""
    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["a"], 0, format_chunk_rows=7)
    real_writev = os.writev
    fail = [False]

    def short(fd: int, chunks: list[bytes]) -> int:
        if fail[0]:
            fail[0] = False
            raise OSError(28, "No space left on device")
        first = bytes(chunks[0])
        return real_writev(fd, [first[: max(1, len(first) // 3)]])  # a third of one chunk

    monkeypatch.setattr(os, "writev", short)
    for n in range(30):
        al.record(fake_ctx(f"/{n}"), 0.001)  # type: ignore[arg-type]
    al.flush()
    fail[0] = True
    for n in range(30, 42):
        al.record(fake_ctx(f"/lost/{n}"), 0.001)  # type: ignore[arg-type]
    al.flush()
    for n in range(42, 45):
        al.record(fake_ctx(f"/{n}"), 0.001)  # type: ignore[arg-type]
    al.close()
    got = [json.loads(line)["target"] for line in log.read_text().splitlines()]
    assert got == [f"/{n}" for n in [*range(30), *range(42, 45)]]
    assert al.snapshot() == {"dropped": 0, "written": 33, "write_errors": 1, "lost": 12}


async def test_formatted_lines_wait_for_the_writer_within_their_bound(
    tmp_path: Path, monkeypatch
) -> None:
    """With the writer stuck, batches are formatted only while the formatted lines waiting for
    it stay under `max_pending_bytes`; later records wait as rows (bounded by max_buffered).
    Once it moves again, every line is written, in order."""
    import threading

    log = tmp_path / "a.log"
    al = AccessLog(str(log), 1.0, ["a"], 0, flush_interval_s=0.01, max_pending_bytes=1)
    release, entered = threading.Event(), threading.Event()
    real_writev = os.writev

    def stuck(fd: int, chunks: list[bytes]) -> int:
        entered.set()
        release.wait(10.0)
        return real_writev(fd, chunks)

    monkeypatch.setattr(os, "writev", stuck)
    al.record(fake_ctx("/0"), 0.001)  # type: ignore[arg-type]
    async with asyncio.timeout(5.0):
        while not entered.is_set():  # the first batch is with the writer, which is stuck
            await asyncio.sleep(0.01)
    al.record(fake_ctx("/1"), 0.001)  # type: ignore[arg-type]
    async with asyncio.timeout(5.0):
        while not al._pending:  # formatted: nothing was waiting for the writer yet
            await asyncio.sleep(0.01)
    ticks = 0
    real_tick = al._tick

    def counted_tick() -> None:
        nonlocal ticks
        ticks += 1
        real_tick()

    al._tick = counted_tick  # type: ignore[method-assign]
    al.record(fake_ctx("/2"), 0.001)  # type: ignore[arg-type]
    async with asyncio.timeout(5.0):
        while ticks < 3:  # batches due three times over: /1 is still waiting for the writer
            await asyncio.sleep(0.01)
    assert len(al._pending) == 1 and al._rows  # so /2 stays a row
    release.set()
    records = await read_lines(log, 3)
    assert [r["target"] for r in records] == ["/0", "/1", "/2"] and al.dropped == 0
    al.close()
