"""Issue 13, proof per node: the takedown service publishes a case's version to the fleet feed,
every node enforces and acknowledges it through Redis, the case's record lists each node with
its enforced_at, and `edgeproxy takedown fleet` names a node that is overdue."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from proxy.config import FleetConfig
from proxy.fleet.ack import FleetFeed
from proxy.fleet.demo import demo_notice
from proxy.takedown import accounts
from proxy.takedown.accounts import Role
from proxy.takedown.api import build_app
from proxy.takedown.publisher import FileDrop
from proxy.takedown.service import TakedownService
from tests.fleet.conftest import (
    Publisher,
    Relay,
    eventually,
    eventually_status,
    fleet_node,
    origin_app,
    status,
)
from tests.integration.node import Node
from tests.takedown.conftest import fast_config


async def takedown_fleet(url: str, *nodes: str, config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.cli",
        "takedown",
        "fleet",
        "--fleet",
        url,
        "--config",
        str(config),
        *(a for n in nodes for a in ("--node", n)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_case_lists_every_fleet_node_and_overdue_nodes_are_reported(
    redis_server, origin_server, signing, fleet_nodes: list[Node], tmp_path: Path
) -> None:
    private, pub = signing
    origin = await origin_server(origin_app())
    drop = FileDrop(tmp_path / "drop", private)
    fleet = FleetFeed(FleetConfig(redis_url=redis_server.url, block_s=0.5), drop, ack_wait_s=1.0)
    relay = await Relay(redis_server.port).start()
    names = ["edge-a", "edge-b", "edge-far"]
    svc = TakedownService(
        tmp_path / "td.db", fast_config(), edges=fleet.edges(names), file_drop=drop
    )
    fleet.bind(svc.store)
    fleet.start()
    client = TestClient(TestServer(build_app(svc), host="127.0.0.1"))
    await client.start_server()
    try:
        # A first version, so nodes can start on it: an operator's entry in the same drop.
        from proxy.blocklist.format import version_filename, write_version
        from tests.fleet.conftest import entry

        (tmp_path / "drop").mkdir(exist_ok=True)
        write_version(
            tmp_path / "drop" / version_filename(1),
            1,
            [entry("op", "/op/")],
            private_key_pem=private,
        )
        await fleet.sync()
        nodes = {
            "edge-a": fleet_node(tmp_path, "edge-a", redis_server.url, origin, pub),
            "edge-b": fleet_node(tmp_path, "edge-b", redis_server.url, origin, pub),
            "edge-far": fleet_node(tmp_path, "edge-far", relay.url, origin, pub),
        }
        for n in nodes.values():
            fleet_nodes.append(n)
            await n.start()
            assert await status(n.url + "/op/x") == 451
        feed_ = Publisher(redis_server.url, private)

        async def all_on_1() -> bool:  # each node acknowledges the version it started on
            return set(await feed_.acks(1)) == set(names)

        await eventually(all_on_1, what="every node acknowledging version 1")
        relay.cut()  # edge-far is cut off from Redis from now on
        key = svc.store.run_sync(accounts.create_account, "JMPA", Role.TRUSTED, time.time())
        for n in nodes.values():
            svc.store.run_sync(
                accounts.add_site, f"127.0.0.1:{n.port}", "reader", time.time(), None, None
            )
        target = f"{nodes['edge-a'].url}/manga/ch1"
        r = await client.post(
            "/notices", json=demo_notice(target), headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status == 201, await r.text()
        case_id = (await r.json())["case"]
        for name in ("edge-a", "edge-b"):
            await eventually_status(f"{nodes[name].url}/manga/ch1", 451)
        assert await status(f"{nodes['edge-far'].url}/manga/ch1") == 200  # never heard of it

        async def two_acked() -> bool:
            case = await svc.case(case_id)
            assert case is not None
            return sum(1 for e in case["edges"] if e["enforced_at"]) == 2

        await eventually(two_acked, what="edge-a and edge-b acknowledged on the case")
        case = await svc.case(case_id)
        assert case is not None
        by_node = {e["edge"]: e for e in case["edges"]}
        assert set(by_node) == set(names)
        assert by_node["edge-far"]["enforced_at"] is None
        assert by_node["edge-a"]["version"] == 2 and by_node["edge-b"]["version"] == 2
        events = [(t.get("event") or t.get("kind"), t) for t in case["timeline"]]
        enforced = [t for kind, t in events if kind == "edge_enforced"]
        assert {t["data"]["edge"] for t in enforced} == {"edge-a", "edge-b"}
        strict = tmp_path / "strict.toml"
        strict.write_text("[deadlines]\nenforcement_s = 0.0\n")
        code, out = await takedown_fleet(redis_server.url, *names, config=strict)
        assert code == 1, out
        assert "edge-far: version 1" in out and "OVERDUE" in out
        assert "edge-a: version 2" in out and "current" in out
        relay.heal()  # edge-far catches up; the case is enforced on every node

        async def enforced_everywhere() -> bool:
            c = await svc.case(case_id)
            return c is not None and c["state"] == "enforced"

        await eventually(enforced_everywhere, timeout_s=30, what="the case enforced")
        assert await status(f"{nodes['edge-far'].url}/manga/ch1") == 451
        code, out = await takedown_fleet(redis_server.url, *names, config=strict)
        assert code == 0, out
    finally:
        await client.close()
        await fleet.close()
        await relay.stop()


async def run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_takedown_serve_with_fleet_flags(
    redis_server, origin_server, signing, fleet_nodes: list[Node], tmp_path: Path
) -> None:
    """The command line an operator runs: `takedown serve --fleet URL --fleet-node NAME`."""
    import aiohttp

    from tests.integration.conftest import free_port

    private, pub = signing
    (tmp_path / "signing.key").write_bytes(private)
    db = str(tmp_path / "td.db")
    key = (
        (await run("takedown", "add-account", "--db", db, "--name", "RH", "--role", "trusted"))
        .strip()
        .splitlines()[-1]
    )
    origin = await origin_server(origin_app())
    drop = tmp_path / "drop"
    drop.mkdir()
    from proxy.blocklist.format import version_filename, write_version

    write_version(drop / version_filename(1), 1, [], private_key_pem=private)
    port = free_port()
    service = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.cli",
        "takedown",
        "serve",
        "--db",
        db,
        "--listen",
        f"127.0.0.1:{port}",
        "--blocklist-dir",
        str(drop),
        "--signing-key",
        str(tmp_path / "signing.key"),
        "--fleet",
        redis_server.url,
        "--fleet-node",
        "edge-1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert service.stdout is not None
        async with asyncio.timeout(20):
            while b"listening" not in await service.stdout.readline():
                pass
        node = fleet_node(
            tmp_path, "edge-1", redis_server.url, origin, pub, "--allow-empty-blocklist"
        )
        fleet_nodes.append(node)
        await node.start()
        await run(
            "takedown",
            "add-site",
            "--db",
            db,
            "--host",
            f"127.0.0.1:{node.port}",
            "--customer",
            "reader",
        )
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=auth) as s:
            async with s.post(
                f"http://127.0.0.1:{port}/notices", json=demo_notice(f"{node.url}/manga/ch1")
            ) as r:
                assert r.status == 201, await r.text()
                case_id = (await r.json())["case"]
            await eventually_status(f"{node.url}/manga/ch1", 451)

            async def enforced() -> bool:
                async with s.get(f"http://127.0.0.1:{port}/cases/{case_id}") as r:
                    case = await r.json()
                return case["state"] == "enforced" and case["edges"][0]["edge"] == "edge-1"

            await eventually(enforced, what="the case enforced on edge-1")
    finally:
        service.terminate()
        await service.wait()
