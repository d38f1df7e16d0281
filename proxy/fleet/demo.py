"""`edgeproxy demo --fleet N` (`make fleet`): a fleet on one machine, to watch one notice reach
every node.

It starts redis-server (from PATH) on 127.0.0.1, the bundled demo origin, N edge nodes (each its
own `edgeproxy serve --fleet` process with its own state directory) and the takedown service,
whose file drop is mirrored into the feed and whose publications wait for every node's
acknowledgement. Everything binds 127.0.0.1, lives in one temporary directory, and stops after
`--for-s` seconds or on Ctrl-C; processes are stopped by the PIDs this module started.
`FleetProcesses` is also what benchmarks/fleet.py starts its fleet with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from proxy.blocklist.format import generate_keypair, version_filename, write_version

DEMO_TOKEN = "demo-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FleetProcesses:
    """redis-server and N edge nodes as child processes, under one directory."""

    def __init__(self, root: Path, n: int, origin: str, *, base_port: int = 0) -> None:
        self.root = root
        self.n = n
        self.origin = origin
        self.base_port = base_port
        self.redis: asyncio.subprocess.Process | None = None
        self.redis_port = free_port()
        self.nodes: list[asyncio.subprocess.Process] = []
        self.ports: list[tuple[int, int]] = []  # (listen, admin) per node
        self.private, public = generate_keypair()
        (root / "keys").mkdir(parents=True, exist_ok=True)
        self.public_key = root / "keys" / "blocklist.pub"
        self.public_key.write_bytes(public)
        (root / "keys" / "blocklist.key").write_bytes(self.private)
        self.drop = root / "drop"
        self.drop.mkdir(exist_ok=True)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def names(self) -> list[str]:
        return [f"edge-{i + 1}" for i in range(self.n)]

    async def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (Debian: apt-get install redis-server)")
        d = self.root / "redis"
        d.mkdir(exist_ok=True)
        self.redis = await asyncio.create_subprocess_exec(
            binary, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--dir", str(d),
            "--save", "", "--appendonly", "no", "--logfile", str(d / "redis.log"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await until(lambda: _tcp_open(self.redis_port), 10.0, "redis-server answering")

    def seed(self) -> None:
        """Version 1 (empty) in the drop, so nodes have a list to start on."""
        if not any(self.drop.iterdir()):
            write_version(self.drop / version_filename(1), 1, [], private_key_pem=self.private)

    async def start_nodes(self, *, workers: int = 1) -> None:
        for i, name in enumerate(self.names()):
            if self.base_port:
                listen, admin = self.base_port + i, self.base_port + 100 + i
            else:
                listen, admin = free_port(), free_port()
            cfg = self.root / f"{name}.toml"
            cfg.write_text(
                f'[[sites]]\nname = "demo"\nhosts = ["*"]\norigin = "{self.origin}"\n\n'
                f'[blocklist]\npublic_key = "{self.public_key}"\n\n'
                f'[fleet]\nredis_url = "{self.redis_url}"\nnode_name = "{name}"\n'
                "block_s = 2.0\nready_grace_s = 2.0\n"
            )
            log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy.cli", "serve", "--config", str(cfg),
                "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}",
                "--workers", str(workers), "--state-dir", str(self.root / name),
                env={**os.environ, "EDGEPROXY_ADMIN_TOKEN": DEMO_TOKEN},
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            log.close()
            self.nodes.append(proc)
            self.ports.append((listen, admin))
        for (_, admin), proc in zip(self.ports, self.nodes, strict=True):
            await until(lambda a=admin, p=proc: _healthy(a, p), 60.0, f"node on admin {admin}")

    async def stop(self) -> None:
        for proc in [*self.nodes, self.redis]:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.nodes, self.redis]:
            if proc is None:
                continue
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


async def _healthy(admin: int, proc: asyncio.subprocess.Process) -> bool:
    if proc.returncode is not None:
        raise RuntimeError(f"node with admin port {admin} exited with {proc.returncode}")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{admin}/healthz") as r:
                return r.status == 200
    except aiohttp.ClientError:
        return False


async def until(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()  # type: ignore[operator]
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.1)


async def run_fleet_demo(n: int, *, for_s: float, service_port: int, origin_port: int) -> int:
    from aiohttp import web

    from proxy.config import FleetConfig
    from proxy.fleet.ack import FleetFeed
    from proxy.node.demo import demo_origin
    from proxy.takedown import accounts
    from proxy.takedown.accounts import Role
    from proxy.takedown.api import build_app
    from proxy.takedown.config import TakedownConfig
    from proxy.takedown.publisher import FileDrop
    from proxy.takedown.service import TakedownService

    root = Path(tempfile.mkdtemp(prefix="edgeproxy-fleet-"))
    origin_runner = web.AppRunner(demo_origin(), access_log=None)
    await origin_runner.setup()
    await web.TCPSite(origin_runner, "127.0.0.1", origin_port).start()
    fleet = FleetProcesses(root, n, f"http://127.0.0.1:{origin_port}", base_port=8080)
    service_runner = None
    feed = None
    try:
        await fleet.start_redis()
        fleet.seed()
        drop = FileDrop(fleet.drop, fleet.private)
        feed = FleetFeed(FleetConfig(redis_url=fleet.redis_url, block_s=1.0), drop)
        await feed.sync()
        await fleet.start_nodes()
        svc = TakedownService(root / "takedown.db", TakedownConfig(), edges=feed.edges(fleet.names()), file_drop=drop)  # fmt: skip
        feed.bind(svc.store)
        feed.start()
        key = svc.store.run_sync(accounts.create_account, "demo rightsholder", Role.TRUSTED, time.time())  # fmt: skip
        for listen, _ in fleet.ports:
            svc.store.run_sync(accounts.add_site, f"127.0.0.1:{listen}", "demo customer", time.time(), None, None)  # fmt: skip
        service_runner = web.AppRunner(build_app(svc), access_log=None)
        await service_runner.setup()
        await web.TCPSite(service_runner, "127.0.0.1", service_port).start()
        _explain(fleet, service_port, key, root, for_s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), for_s)
        print("stopping the fleet")
        return 0
    finally:
        if service_runner is not None:
            await service_runner.cleanup()
        if feed is not None:
            await feed.close()
        await fleet.stop()
        await origin_runner.cleanup()


def demo_notice(url: str) -> dict[str, Any]:
    """A complete notice (every element the law asks for) naming one URL."""
    return {
        "complainant": {"name": "Rights Holder KK", "email": "legal@example.jp"},
        "works": [{"title": "Manga vol. 1"}],
        "targets": [{"url": url}],
        "legal_basis": "hosted",
        "statements": {"good_faith": True, "accurate": True},
        "signature": "Taro Yamada",
    }


def _explain(fleet: FleetProcesses, service_port: int, key: str, root: Path, for_s: float) -> None:
    first = fleet.ports[0][0]
    print(f"redis-server on {fleet.redis_url}; {fleet.n} edge nodes; files and logs in {root}")
    for name, (listen, admin) in zip(fleet.names(), fleet.ports, strict=True):
        print(f"  {name}: http://127.0.0.1:{listen}  (admin http://127.0.0.1:{admin})")
    print(
        f"takedown service on http://127.0.0.1:{service_port}; stops in {for_s:.0f} s or on Ctrl-C"
    )
    notice = json.dumps(demo_notice(f"http://127.0.0.1:{first}/manga/ch1"), separators=(",", ":"))
    print("try:")
    print(
        f"  curl -s -o /dev/null -w '%{{http_code}}\\n' http://127.0.0.1:{first}/manga/ch1   (200)"
    )
    print(
        f"  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
        f"-d '{notice}' http://127.0.0.1:{service_port}/notices"
    )
    ports = " ".join(str(p) for p, _ in fleet.ports)
    print(
        f"  for p in {ports}; do curl -s -o /dev/null -w '%{{http_code}} ' "
        f"http://127.0.0.1:$p/manga/ch1; done; echo   (451 on every node)"
    )
    names = " ".join(f"--node {n}" for n in fleet.names())
    print(f"  edgeproxy takedown fleet --fleet {fleet.redis_url} {names}")
    print(
        f"  curl -s -H 'Authorization: Bearer {key}' http://127.0.0.1:{service_port}/cases/1"
        "   (each node's enforced_at)"
    )
