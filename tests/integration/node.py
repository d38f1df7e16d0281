"""Run a whole node (`edgeproxy serve`: supervisor, workers, admin) as a subprocess."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import free_port

TOKEN = "test-admin-token"


class Node:
    def __init__(self, args: list[str], *, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.args = args
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []
        self.tried: list[str] = []  # starts that lost their port to another process
        self._reader: asyncio.Task[None] | None = None
        # A node of its own: pushed entries persist in the state dir, and must not leak
        # from one test into the next. It outlives the node's restarts within a test, and
        # goes when the test run ends: a run starts hundreds of nodes, and each node's tier
        # reserves its disk (twice its bound), which left behind filled the disk in a day.
        self.state_dir = tempfile.mkdtemp(prefix="edgeproxy-test-")
        atexit.register(shutil.rmtree, self.state_dir, ignore_errors=True)

    @classmethod
    def on_dir(
        cls, origin: str, blocklist_dir: Path, public_key: Path, *args: str, workers: int = 1
    ) -> Node:
        """A node in front of `origin` that enforces the signed versions in `blocklist_dir`."""
        return cls(
            [
                "--origin", origin, "--workers", str(workers),
                "--blocklist-dir", str(blocklist_dir), "--blocklist-key", str(public_key),
                *args,
            ]
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def start(self, *, expect_ready: bool = True, timeout_s: float = 20.0) -> None:
        for attempt in range(3):
            try:
                await self._start(expect_ready, timeout_s)
                return
            except RuntimeError as e:
                if attempt == 2 or "address already in use" not in str(e).lower():
                    raise
                # free_port's pick was taken before the node bound it (another process's
                # ephemeral port, in the same range): the harness's race, not the node's.
                self.tried.append(str(e))
                self.port, self.admin_port = free_port(), free_port()
                self.output = []

    async def _start(self, expect_ready: bool, timeout_s: float) -> None:
        env = {**os.environ, "EDGEPROXY_ADMIN_TOKEN": TOKEN, **self.env}
        argv = [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin",
            f"127.0.0.1:{self.admin_port}",
            *(["--state-dir", self.state_dir] if self.state_dir else []),
            *self.args,
        ]
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read(ready))
        if expect_ready:
            async with asyncio.timeout(timeout_s):
                await ready

    async def _read(self, ready: asyncio.Future[None]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace")
            self.output.append(text)
            if "listening" in text and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(
                RuntimeError("node exited before listening:\n" + "".join(self.output))
            )
            ready.exception()

    async def wait_exit(self, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout_s):
            code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait_exit()
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    async def admin_json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.request(
                method,
                self.admin + path,
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as r:
                return r.status, await r.json(content_type=None)

    async def worker_pids(self) -> list[int]:
        _, data = await self.admin_json("GET", "/blocklist")
        return [w["pid"] for w in data["workers"]]

    async def kill_worker_and_wait(self, index: int = 0, timeout_s: float = 15.0) -> list[int]:
        """SIGKILL one worker and wait until the supervisor has replaced it; the new pids."""
        pids = await self.worker_pids()
        os.kill(pids[index], signal.SIGKILL)
        now: list[int] = []
        for _ in range(int(timeout_s / 0.1)):
            await asyncio.sleep(0.1)
            try:
                now = await self.worker_pids()
            except aiohttp.ClientError:
                continue
            if len(now) == len(pids) and pids[index] not in now:
                return now
        raise AssertionError(f"worker {pids[index]} not replaced: {now}")


# -- what a test asks a running node ------------------------------------------------------


async def metric(node: Node, name: str) -> float:
    """The first sample of metric `name` (a counter's `_total` included) on the admin API."""
    async with aiohttp.ClientSession() as s, s.get(node.admin + "/metrics") as r:
        text = await r.text()
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name in (name, name + "_total"):
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


async def readyz(node: Node) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(node.admin + "/readyz") as r:
        return r.status, await r.json()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 8.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds, or fail at the deadline (never a sleep standing in for an
    event the test cannot see)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(0.05)
