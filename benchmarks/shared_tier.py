"""CPU per request of a shared-tier hit against an L1 (memory) hit and an origin miss, on a real
edge node (`edgeproxy serve`, one worker), a real redis-server and the bundled origin.

    .venv/bin/python -m benchmarks.shared_tier [--requests 4000] [--rounds 3]
        [--code DIR] [--no-hiredis] [--redis-tls]

Node A stores `--requests` distinct objects in Redis; node B (the one measured) then asks for
each once, so every answer is a `detail=shared` hit. The CPU is read from /proc for the edge's
process tree (supervisor + worker) and for redis-server, before and after each batch; the
client is one keep-alive connection sending one request at a time, so the edge's cost per
request is not hidden by batching. Best of `--rounds`.

`--code DIR` runs the edge from another checkout (to measure a commit before a change);
`--no-hiredis` hides the hiredis package from the edge, so redis-py parses replies in Python.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks import cpu
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]


def _start(argv: list[str], env: dict[str, str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    """Start a server (its output to a file, so no pipe fills) and wait until `port` answers."""
    log = open(tempfile.mktemp(prefix="bench-shared-", suffix=".log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[2:5]} exited: see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{argv[2:5]} did not listen on {port}: see {log.name}")


class Client:
    """One keep-alive HTTP/1.1 connection, one request at a time, `Content-Length` bodies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def get(self, path: str) -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench.test\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return int(head[9:12]), head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the edge closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def _node(
    code: Path, config: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int, int]:
    port, admin = free_port(), free_port()
    state = tempfile.mkdtemp(prefix="bench-shared-")
    argv = [sys.executable, "-m", "proxy.cli", "serve", "--listen", f"127.0.0.1:{port}",
            "--admin", f"127.0.0.1:{admin}", "--workers", "1", "--config", str(config),
            "--state-dir", state]  # fmt: skip
    return _start(argv, env, code, port), port, admin


def _batch(port: int, paths: list[str], expect: bytes, pids: list[int]) -> float:
    """CPU seconds the processes under `pids` spent answering `paths` (on a new connection:
    the edge closes idle ones while node A's writer catches up)."""
    client = Client(port)
    before = cpu.cpu_seconds(pids)
    for path in paths:
        status, head = client.get(path)
        if status != 200 or expect not in head:
            raise AssertionError(f"{path}: {status} {head.decode(errors='replace')[:400]}")
    spent = cpu.cpu_seconds(pids) - before
    client.close()
    return spent


def run(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    code = Path(args.code).resolve()
    env = {**os.environ, "PYTHONPATH": str(code)}
    if args.no_hiredis:
        shim = Path(tempfile.mkdtemp(prefix="no-hiredis-")) / "hiredis"
        shim.mkdir()
        (shim / "__init__.py").write_text("raise ImportError('hidden by --no-hiredis')\n")
        env["PYTHONPATH"] = f"{shim.parent}{os.pathsep}{code}"
    work = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    redis = RedisServer(work / "redis").start()
    origin_port = free_port()
    origin = _start([sys.executable, "-m", "benchmarks.origin", "--port", str(origin_port)],
                    {**os.environ, "PYTHONPATH": str(ROOT)}, ROOT, origin_port)  # fmt: skip
    site = f'[[sites]]\nname = "bench"\nhosts = ["*"]\norigin = "http://127.0.0.1:{origin_port}"\n'
    config, plain_config = work / "shared.toml", work / "plain.toml"
    plain_config.write_text(site)
    config.write_text(
        f'[cache]\nshared_tier_url = "{redis.url}"\nshared_tier_timeout_s = 1.0\n\n{site}'
    )
    procs = [origin]
    results: dict[str, tuple[float, float]] = {}
    try:
        a, a_port, a_admin = _node(code, config, env)
        b, b_port, _ = _node(code, config, env)
        plain, plain_port, _ = _node(code, plain_config, env)
        procs += [a, b, plain]
        n = args.requests
        _batch(b_port, ["/bytes/1024"], b"", [b.pid])  # in B's L1 from here on
        best: dict[str, tuple[float, float]] = {}
        for r in range(args.rounds):
            paths = [f"/cold/r{r}-{i}" for i in range(n)]
            _batch(a_port, paths, b"fwd=miss", [a.pid])
            _wait_stored(a_admin, (r + 1) * n)
            rows = {
                "l1-hit": (b_port, ["/bytes/1024"] * n, b"; hit", b),
                "shared-hit": (b_port, paths, b"detail=shared", b),
                "miss (shared tier on)": (b_port, [f"/cold/m{r}-{i}" for i in range(n)], b"fwd=miss", b),
                "miss (no shared tier)": (plain_port, [f"/cold/p{r}-{i}" for i in range(n)], b"fwd=miss", plain),
            }  # fmt: skip
            for name, (port, ps, expect, proc) in rows.items():
                redis_before = cpu.cpu_seconds([redis.proc.pid])  # type: ignore[union-attr]
                edge = _batch(port, ps, expect, [proc.pid]) / n
                red = (cpu.cpu_seconds([redis.proc.pid]) - redis_before) / n  # type: ignore[union-attr]
                if name not in best or edge < best[name][0]:
                    best[name] = (edge, red)
        results = best
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        redis.stop()
    return results


def _wait_stored(admin_port: int, stores: int) -> None:
    """Until node A's background writer has stored every object (its metrics, polled)."""
    deadline = time.monotonic() + 60
    done = 0.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith("edgeproxy_shared_tier_stores"):
                    done = float(line.split()[-1])
        if done >= stores:
            return
        time.sleep(0.05)
    raise RuntimeError(f"node A stored {done} objects, expected {stores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", default=str(ROOT), help="checkout whose proxy/ the edge runs")
    parser.add_argument("--no-hiredis", action="store_true", help="hide hiredis from the edge")
    args = parser.parse_args()
    results = run(args)
    print(f"{'answer':<24} {'edge CPU µs/req':>16} {'redis CPU µs/req':>17}")
    for name, (edge, red) in results.items():
        print(f"{name:<24} {edge * 1e6:>16.1f} {red * 1e6:>17.1f}")


if __name__ == "__main__":
    main()
