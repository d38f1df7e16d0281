"""Killing the service mid-intake loses no acknowledged notice (WAL, synchronous=FULL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from proxy.takedown.cli import main
from tests.takedown.conftest import notice

ROOT = Path(__file__).resolve().parents[2]
SERVE = "import sys; from proxy.takedown.cli import main; sys.exit(main(sys.argv[1:]))"


async def test_acknowledged_notices_survive_sigkill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "t.sqlite"
    main(["add-account", "--db", str(db), "--name", "s", "--role", "submitter"])
    key = capsys.readouterr().out.strip().splitlines()[-1]
    main(["add-site", "--db", str(db), "--host", "cdn.example", "--customer", "Acme"])
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--listen", "127.0.0.1:0", "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acked: dict[int, bytes] = {}
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
        base = line.decode().rsplit(" ", 1)[-1].strip()
        assert base.startswith("http://127.0.0.1:")
        headers = {"Authorization": f"Bearer {key}"}
        enough = asyncio.Event()

        async def submit(session: aiohttp.ClientSession, worker: int) -> None:
            for i in range(10_000):
                raw = json.dumps(notice({"url": f"https://cdn.example/{worker}/{i}"})).encode()
                try:
                    async with session.post(f"{base}/notices", data=raw, headers=headers) as r:
                        if r.status == 201:
                            acked[(await r.json())["id"]] = raw
                except (aiohttp.ClientError, ValueError):
                    return  # the service died under us: this one was never acknowledged
                if len(acked) >= 40:
                    enough.set()

        async with aiohttp.ClientSession() as session:
            workers = [asyncio.create_task(submit(session, w)) for w in range(4)]
            await asyncio.wait_for(enough.wait(), 20)
            proc.send_signal(signal.SIGKILL)  # requests are in flight right now
            await asyncio.wait_for(asyncio.gather(*workers), 10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(db)
    stored = dict(conn.execute("SELECT id, raw FROM notices").fetchall())
    conn.close()
    assert len(acked) >= 40
    missing = [i for i in acked if i not in stored]
    assert not missing, f"acknowledged but lost: {missing}"
    assert all(stored[i] == raw for i, raw in acked.items())
    assert main(["verify-log", "--db", str(db)]) == 0
