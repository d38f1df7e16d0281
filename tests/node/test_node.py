"""The whole node as an operator runs it: `edgeproxy serve` with workers, signals, admin."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.integration.node import TOKEN, Node
from tests.node.conftest import get, origin_app


async def test_serve_with_flags_alone_two_workers(origin_server, nodes) -> None:
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    node = Node(["--origin", origin, "--workers", "2"])
    nodes.append(node)
    await node.start()
    statuses = []
    for _ in range(10):  # new connections each time, so both workers take some
        status, headers, body = await get(node.url + "/x")
        assert status == 200 and body == b"A:/x"
        statuses.append(headers["Cache-Status"])
    assert any("hit" in s for s in statuses)
    assert len(seen) <= 2  # at most one miss per worker
    status, _, body = await get(node.admin + "/healthz")
    assert status == 200 and b'"workers":2' in body
    assert len(set(await node.worker_pids())) == 2


async def test_dead_worker_is_restarted(origin_server, nodes) -> None:
    origin = await origin_server(origin_app([]))
    node = Node(["--origin", origin, "--workers", "2"])
    nodes.append(node)
    await node.start()
    await node.kill_worker_and_wait(0)
    for _ in range(6):
        status, _, body = await get(node.url + "/after")
        assert status == 200 and body == b"A:/after"


async def test_sigterm_drains_in_flight_requests(origin_server, nodes) -> None:
    origin = await origin_server(origin_app([], delay_s=1.0))
    node = Node(["--origin", origin, "--workers", "1"])
    nodes.append(node)
    await node.start()
    slow = asyncio.ensure_future(get(node.url + "/slow"))
    await asyncio.sleep(0.3)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    status, _, body = await slow
    assert status == 200 and body == b"A:/slow"
    assert await node.wait_exit() == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(node.url + "/late")


async def test_unknown_host_gets_421_and_never_reaches_origin(
    origin_server, nodes, tmp_path
) -> None:
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[[sites]]\nname = "a"\nhosts = ["a.test"]\norigin = "{origin}"\n')
    node = Node(["--config", str(cfg), "--workers", "1"])
    nodes.append(node)
    await node.start()
    status, headers, _ = await get(node.url + "/p", headers={"Host": "evil.test"})
    assert status == 421 and "Cache-Status" in headers
    status, _, body = await get(node.url + "/p", headers={"Host": "a.test"})
    assert status == 200 and body == b"A:/p"
    assert seen == ["/p"]


async def test_broken_config_refuses_to_start_naming_line_and_field(tmp_path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[[sites]]\nname = "a"\nhosts = ["a"]\norigin = "http://127.0.0.1:1"\n\n'
        '[cache]\nmax_object_bytes = "lots"\n'
    )
    node = Node(["--config", str(cfg)])
    await node.start(expect_ready=False)
    assert await node.wait_exit() == 2
    out = "".join(node.output)
    assert "bad.toml:7" in out and "$.cache.max_object_bytes" in out


async def test_sighup_reloads_config_and_keeps_running_on_a_broken_one(
    origin_server, nodes, tmp_path: Path
) -> None:
    a = await origin_server(origin_app([], tag="A"))
    b = await origin_server(origin_app([], tag="B"))
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[[sites]]\nname = "s"\nhosts = ["*"]\norigin = "{a}"\n')
    node = Node(["--config", str(cfg), "--workers", "1"])
    nodes.append(node)
    await node.start()
    assert (await get(node.url + "/r"))[2] == b"A:/r"
    cfg.write_text(f'[[sites]]\nname = "s"\nhosts = ["*"]\norigin = "{b}"\n')
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    for _ in range(50):
        await asyncio.sleep(0.1)
        if (await get(node.url + "/r2"))[2] == b"B:/r2":
            break
    else:
        raise AssertionError("config not reloaded")
    cfg.write_text("this is not toml [")
    node.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    assert (await get(node.url + "/r3"))[2] == b"B:/r3"
    assert any("config reload refused" in line for line in node.output)


async def test_push_answers_when_every_worker_enforces(origin_server, nodes) -> None:
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    node = Node(["--origin", origin, "--workers", "2"])
    nodes.append(node)
    await node.start()
    for _ in range(6):
        assert (await get(node.url + "/manga/vol1"))[0] == 200
    status, body = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {
            "entries": [
                {
                    "id": "e1",
                    "type": "prefix",
                    "value": node.url + "/manga/",
                    "notice": "N-1",
                    "reason": "test",
                }
            ]
        },
    )
    assert status == 200
    assert {w["version"] for w in body["workers"]} == {body["version"]}
    assert len(body["workers"]) == 2
    before = len(seen)
    for _ in range(10):
        status, headers, text = await get(node.url + "/manga/vol1")
        assert status == 451 and b"e1" in text and "no-store" in headers["Cache-Control"]
        assert 'rel="blocked-by"' in headers["Link"]
    assert len(seen) == before
    status, body = await node.admin_json("DELETE", "/blocklist/entries/e1")
    assert status == 200
    assert (await get(node.url + "/manga/vol1"))[0] == 200
    status, _ = await node.admin_json("DELETE", "/blocklist/entries/e1")
    assert status == 404
    assert TOKEN


async def test_restarted_worker_enforces_pushed_entries_before_listening(
    origin_server, nodes
) -> None:
    """A worker that replaces a dead one loads the compiled version plus every later push."""
    origin = await origin_server(origin_app([]))
    node = Node(["--origin", origin, "--workers", "2"])
    nodes.append(node)
    await node.start()
    for i in range(3):
        status, body = await node.admin_json(
            "POST",
            "/blocklist/entries",
            {"entries": [{"id": f"p{i}", "type": "url", "value": f"{node.url}/p{i}"}]},
        )
        assert status == 200
    version = body["version"]
    await node.kill_worker_and_wait(1)
    _, state = await node.admin_json("GET", "/blocklist")
    assert {w["version"] for w in state["workers"]} == {version}
    for _ in range(10):
        for i in range(3):
            assert (await get(f"{node.url}/p{i}"))[0] == 451


async def test_front_refusals_carry_cache_status_and_are_counted(nodes) -> None:
    """Requests the front refuses never reach the pipeline; they still get Cache-Status
    (RFC 9211) and show in edgeproxy_front_rejected_total."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.integration.conftest import raw_request

    node = Node(["--origin", "http://127.0.0.1:9", "--workers", "1"])
    nodes.append(node)
    await node.start()
    answer = await raw_request(node.port, b"GARBAGE\r\n\r\n")
    assert (
        answer.startswith(b"HTTP/1.1 400") and b"Cache-Status: edgeproxy; detail=refused" in answer
    )
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 40000 + b"\r\n\r\n"
    assert (await raw_request(node.port, big)).startswith(b"HTTP/1.1 431")
    async with aiohttp.ClientSession() as s:
        async with s.get(node.admin + "/metrics") as r:
            text = await r.text()
    counts = {
        sample.labels["status"]: sample.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "edgeproxy_front_rejected"
        for sample in fam.samples
        if sample.name.endswith("_total")
    }
    assert counts["400"] == 1 and counts["431"] == 1 and counts["413"] == 0


async def test_entries_stop_matching_when_they_expire(origin_server, nodes) -> None:
    """An entry's expires_at ends its enforcement without a new version."""
    import time

    origin = await origin_server(origin_app([]))
    node = Node(["--origin", origin, "--workers", "2"])
    nodes.append(node)
    await node.start()
    status, _ = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {
            "entries": [
                {
                    "id": "t",
                    "type": "url",
                    "value": f"{node.url}/temp",
                    "expires_at": time.time() + 1.5,
                }
            ]
        },
    )
    assert status == 200
    assert (await get(node.url + "/temp"))[0] == 451
    await asyncio.sleep(2.0)
    for _ in range(6):  # both workers
        assert (await get(node.url + "/temp"))[0] == 200


async def test_a_port_taken_before_the_node_binds_it_gets_new_ports(origin_server, nodes) -> None:
    """The harness's free_port race (another process takes the pick first) is retried with
    new ports, not reported as the node's failure."""
    import socket

    origin = await origin_server(origin_app([]))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    node = Node(["--origin", origin, "--workers", "1"])
    node.port = busy
    nodes.append(node)
    try:
        await node.start()
    finally:
        taken.close()
    assert node.port != busy and any("address already in use" in x.lower() for x in node.tried)
    status, _, body = await get(node.url + "/p")
    assert status == 200 and body == b"A:/p"
