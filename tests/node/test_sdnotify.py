"""Issue 17: under systemd (Type=notify), a real `edgeproxy serve` tells the service manager
READY=1 once its workers listen, RELOADING=1 … READY=1 around a SIGHUP, STOPPING=1 on
SIGTERM, and pings WATCHDOG=1 when WatchdogSec= asks; heard here on a real AF_UNIX datagram
socket standing in for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from proxy.node.sdnotify import notify, watchdog_interval_s
from tests.integration.node import Node
from tests.node.conftest import get, origin_app


class FakeSystemd:
    def __init__(self) -> None:
        # AF_UNIX paths are short (108 bytes): a directory of its own under the system tmp.
        self.dir = tempfile.mkdtemp(prefix="sd-")
        self.path = str(Path(self.dir) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.heard: list[dict[str, str]] = []

    async def next(self, key: str, timeout_s: float = 20.0) -> dict[str, str]:
        """The next datagram carrying `key` (those before it are kept in `heard`)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                fields = dict(line.split("=", 1) for line in data.decode().splitlines())
                self.heard.append(fields)
                if key in fields:
                    return fields

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_notify_without_systemd_does_nothing() -> None:
    assert notify("READY=1", env={}) is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": "/nonexistent/socket"}) is False
    assert watchdog_interval_s({}) == 0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) == 0


def test_notify_to_an_abstract_socket() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"edgeproxy-test-{id(sock)}"
    sock.bind("\0" + name)
    try:
        assert notify("READY=1", "STATUS=x", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1\nSTATUS=x"
    finally:
        sock.close()


async def test_ready_reloading_stopping_and_watchdog(origin_server, nodes) -> None:
    sd = FakeSystemd()
    try:
        node = Node(
            ["--origin", await origin_server(origin_app([])), "--workers", "2"],
            env={"NOTIFY_SOCKET": sd.path, "WATCHDOG_USEC": "200000"},  # ping every 0.1 s
        )
        nodes.append(node)
        await node.start(expect_ready=False)
        ready = await sd.next("READY")
        assert ready["READY"] == "1" and "2 workers" in ready["STATUS"]
        # Ready means serving: a request made the moment systemd hears it is answered.
        assert (await get(node.url + "/now"))[0] == 200
        status, _ = await node.admin_json("GET", "/readyz")
        assert status == 200

        await sd.next("WATCHDOG")
        await sd.next("WATCHDOG")  # repeatedly

        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        reloading = await sd.next("RELOADING")
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert (await sd.next("READY"))["READY"] == "1"

        node.proc.send_signal(signal.SIGTERM)
        assert (await sd.next("STOPPING"))["STOPPING"] == "1"
        assert await node.wait_exit() == 0
        kinds = [
            k for fields in sd.heard for k in fields if k in ("READY", "RELOADING", "STOPPING")
        ]
        assert kinds == ["READY", "RELOADING", "READY", "STOPPING"]
    finally:
        sd.close()
