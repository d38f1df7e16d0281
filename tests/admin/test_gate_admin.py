"""The edge admin's gate routes (proxy/admin/gate.py) against a fake node: a pushed roster is
verified, written, and answered only once every worker holds it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import gate
from proxy.admin.app import start_admin
from proxy.blocklist.format import generate_keypair
from proxy.config import AdminConfig, Config, GateConfig, Site
from proxy.node.control import ControlError
from tests.admin.fake_node import TOKEN, FakeNode

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class GateNode(FakeNode):
    """Workers that hold whatever the directory's newest good roster is, unless told to lag."""

    held_by: list[int] = field(default_factory=lambda: [0, 0])
    lag: bool = False
    fail: bool = False
    calls: list[str] = field(default_factory=list)

    async def broadcast(self, op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append(op)
        if self.fail:
            raise ControlError("worker 1: timed out")
        key = gate.public_key_of(self.cfg)
        newest, _ = gate.newest_valid(gate.roster_dir(self.cfg), key, 1 << 20)
        seq = newest.sequence if newest else 0
        return [
            {"worker": i, "version": 0 if (self.lag and i == 1) else seq, "pid": 1}
            for i in range(2)
        ]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[GateNode, str, bytes]]:
    private, public = generate_keypair()
    (tmp_path / "k.pub").write_bytes(public)
    port = _port()
    cfg = Config(
        admin=AdminConfig(listen=f"127.0.0.1:{port}"),
        sites=[Site(name="a", hosts=["a.test"], origin="http://127.0.0.1:9")],
        gate=GateConfig(
            enabled=True,
            public_key=str(tmp_path / "k.pub"),
            roster_dir=str(tmp_path / "r"),
            max_roster_bytes=4096,
        ),
    )
    node = GateNode(cfg)
    runner: web.AppRunner = await start_admin(node)
    yield node, f"http://127.0.0.1:{port}", private
    await runner.cleanup()


async def _put(url: str, body: Any, headers: dict[str, str] = AUTH) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.put(url + "/gate/roster", json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def test_push_is_answered_once_every_worker_holds_it(edge: Any) -> None:
    node, url, private = edge
    status, out = await _put(url, {"roster": gate.render_roster(5, ["a.test"], private).decode()})
    assert status == 200, out
    assert out["sequence"] == 5 and [w["sequence"] for w in out["workers"]] == [5, 5]
    assert node.calls == ["gate.reload"]
    assert gate.roster_files(gate.roster_dir(node.cfg))[0].name == gate.roster_filename(5)
    async with aiohttp.ClientSession() as s, s.get(url + "/gate") as r:
        assert (await r.json())["hosts"] == ["a.test"]
    # The same roster again is fine (idempotent); an older one is refused.
    assert (await _put(url, {"roster": gate.render_roster(5, ["a.test"], private).decode()}))[
        0
    ] == 200
    assert (await _put(url, {"roster": gate.render_roster(4, [], private).decode()}))[0] == 409


@pytest.mark.parametrize(("lag", "fail"), [(True, False), (False, True)])
async def test_a_worker_that_did_not_take_it_is_503(edge: Any, lag: bool, fail: bool) -> None:
    node, url, private = edge
    node.lag, node.fail = lag, fail
    status, out = await _put(url, {"roster": gate.render_roster(6, [], private).decode()})
    assert status == 503 and ("worker" in out["error"])


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"roster": "not a roster\n"}, 400),
        ({"roster": "x" * 5000}, 413),
        ({"wrong": 1}, 400),
        ([], 400),
    ],
)
async def test_bad_pushes_are_refused(edge: Any, body: Any, status: int) -> None:
    node, url, _ = edge
    assert (await _put(url, body))[0] == status
    assert node.calls == [] and gate.roster_files(gate.roster_dir(node.cfg)) == []


async def test_push_needs_the_token(edge: Any) -> None:
    node, url, private = edge
    body = {"roster": gate.render_roster(5, ["a.test"], private).decode()}
    assert (await _put(url, body, {}))[0] == 401
    assert (await _put(url, body, {"Authorization": "Bearer wrong"}))[0] == 401
    assert node.calls == []


async def test_unwritable_directory_is_503_and_nothing_changes(edge: Any) -> None:
    node, url, private = edge
    Path(node.cfg.gate.roster_dir).write_text("a file where the directory should be")
    status, out = await _put(url, {"roster": gate.render_roster(5, [], private).decode()})
    assert status == 503 and "cannot write" in out["error"] and node.calls == []


async def test_gate_off_refuses_pushes(make_admin: Any) -> None:
    admin = await make_admin()
    private, _ = generate_keypair()
    status, _ = await _put(admin.url, {"roster": gate.render_roster(1, [], private).decode()})
    assert status == 404
    async with aiohttp.ClientSession() as s, s.get(admin.url + "/gate") as r:
        assert await r.json() == {"enabled": False}
