"""What zero-copy would give a large hit (issue 18: "measure what zero-copy from the node tier
(mmap, sendfile) gives"). A measurement only: nothing here is wired into the server.

    .venv/bin/python -m benchmarks.zero_copy [--kib 100] [--objects 2000] [--duration-s 5] [--rounds 3]

One small uvloop server per mode, the same in everything but how a response's body reaches the
socket; `wrk -t1 -c64` asks for random objects of `--kib` KiB on keep-alive connections, modes
alternated round by round, and the server's CPU per response (user and system apart, from
/proc) is the figure. Modes:

* **memory-concat**: the body is `bytes` in memory and goes out behind its head as one buffer
  (`head + body`: a copy of the body in user space per response; the edge's L1 did this for
  every body before it wrote bodies of 32 KiB or more apart).
* **memory-writev**: the same bytes, head and body handed to one `sendmsg` (the edge's L1
  today: `writelines`).
* **lmdb-copy**: the body read from an LMDB database (as the node tier stores it) as `bytes`
  (one copy out of the map), then `sendmsg`.
* **lmdb-view**: read with `buffers=True`: a memoryview into the map, sent with `sendmsg` while
  the read transaction is open. No user-space copy; the kernel copies from the mapped pages.
* **file-sendfile**: each body in a file of its own (as nginx's cache keeps them), the head by
  `send` and the body by `sendfile(2)`: page cache to socket, never through user space.

The kernel's copy into the socket happens in every mode but the last; what the modes differ by
is the user-space copies and the syscalls. Over loopback, the reader's copy (wrk's) is the same
in all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lmdb

from benchmarks.cpu import tree, user_system_seconds
from benchmarks.targets import free_port

MODES = ["memory-concat", "memory-writev", "lmdb-copy", "lmdb-view", "file-sendfile"]
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    b"Cache-Control: public, max-age=3600\r\nAge: 1\r\nCache-Status: edgeproxy; hit\r\n"
    b"Content-Length: %d\r\n\r\n"
)


def prepare(workdir: Path, objects: int, size: int) -> None:
    """The same random bodies three ways: an LMDB database and one file per object."""
    rng = random.Random(7)
    env = lmdb.open(str(workdir / "lmdb"), map_size=objects * size * 2 + (64 << 20))
    (workdir / "files").mkdir()
    with env.begin(write=True) as txn:
        for i in range(objects):
            body = rng.randbytes(size)
            txn.put(b"%d" % i, body)
            (workdir / "files" / str(i)).write_bytes(body)
    env.close()


# -- the server (one per mode, in its own process) --------------------------------------------


class Server:
    def __init__(self, mode: str, workdir: Path, objects: int, size: int) -> None:
        self.mode = mode
        self.objects = objects
        self.head = HEAD % size
        self.env = lmdb.open(str(workdir / "lmdb"), readonly=True, lock=False)
        self.memory: list[bytes] = []
        self.fds: list[int] = []
        if mode.startswith("memory"):
            with self.env.begin() as txn:
                self.memory = [txn.get(b"%d" % i) for i in range(objects)]
        if mode == "file-sendfile":
            self.fds = [os.open(workdir / "files" / str(i), os.O_RDONLY) for i in range(objects)]
        self.size = size
        self.loop = asyncio.get_running_loop()

    async def serve(self, port: int) -> None:
        listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        listener.setblocking(False)
        print("ready", flush=True)
        while True:
            conn, _ = await self.loop.sock_accept(listener)
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            asyncio.ensure_future(self.connection(conn))

    async def connection(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                data = await self.loop.sock_recv(conn, 65536)
                if not data:
                    return
                buf += data
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    line = buf[: buf.find(b"\r\n")]
                    buf = buf[end + 4 :]
                    index = int(line.split(b" ", 2)[1].rsplit(b"/", 1)[1]) % self.objects
                    await self.respond(conn, index)
        except (ConnectionError, OSError):
            return
        finally:
            conn.close()

    async def respond(self, conn: socket.socket, i: int) -> None:
        mode = self.mode
        if mode == "memory-concat":
            await self.send_all(conn, [self.head + self.memory[i]])
        elif mode == "memory-writev":
            await self.send_all(conn, [self.head, self.memory[i]])
        elif mode == "lmdb-copy":
            with self.env.begin() as txn:
                body = txn.get(b"%d" % i)
            await self.send_all(conn, [self.head, body])
        elif mode == "lmdb-view":
            with self.env.begin(buffers=True) as txn:
                await self.send_all(conn, [self.head, txn.get(b"%d" % i)])
        else:
            await self.send_all(conn, [self.head])
            await self.send_file(conn, self.fds[i])

    async def send_all(self, conn: socket.socket, parts: list[bytes | memoryview]) -> None:
        views = [memoryview(p) for p in parts]
        while views:
            try:
                sent = conn.sendmsg(views)
            except BlockingIOError:
                await self.writable(conn)
                continue
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    async def send_file(self, conn: socket.socket, fd: int) -> None:
        offset = 0
        while offset < self.size:
            try:
                offset += os.sendfile(conn.fileno(), fd, offset, self.size - offset)
            except BlockingIOError:
                await self.writable(conn)

    async def writable(self, conn: socket.socket) -> None:
        done = self.loop.create_future()
        self.loop.add_writer(conn.fileno(), done.set_result, None)
        try:
            await done
        finally:
            self.loop.remove_writer(conn.fileno())


async def _serve(mode: str, workdir: Path, objects: int, size: int, port: int) -> None:
    server = Server(mode, workdir, objects, size)
    try:
        await server.serve(port)
    finally:
        server.env.close()
        for fd in server.fds:
            os.close(fd)


# -- the driver ----------------------------------------------------------------------------------

LUA = """
math.randomseed(%d)
request = function()
  return wrk.format("GET", "/o/" .. math.random(0, %d))
end
"""


def _wrk(port: int, duration_s: float, script: Path) -> tuple[int, float]:
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{max(1, round(duration_s))}s", "-s", str(script),
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration_s + 60, check=True,
    ).stdout  # fmt: skip
    requests = int(next(x for x in out.splitlines() if "requests in" in x).split()[0])
    errors = sum(
        int(n)
        for line in out.splitlines()
        if line.strip().startswith("Socket errors")
        for n in line.replace(",", " ").split()
        if n.isdigit()
    )
    return requests, float(errors)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kib", type=int, default=100)
    p.add_argument("--objects", type=int, default=2000)
    p.add_argument("--duration-s", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = args.kib * 1024
    if args.serve:
        import uvloop

        uvloop.run(_serve(args.serve, Path(args.dir), args.objects, size, args.port))
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt install wrk)", file=sys.stderr)
        return 2
    modes = args.modes.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="zero-copy-"))
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        prepare(workdir, args.objects, size)
        script = workdir / "pick.lua"
        script.write_text(LUA % (7, args.objects - 1))
        for mode in modes:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.zero_copy", "--serve", mode, "--dir",
                 str(workdir), "--port", str(port), "--kib", str(args.kib),
                 "--objects", str(args.objects)],
                stdout=subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"{mode}: the server did not start")
            servers[mode] = (proc, port)
            _wrk(port, 1, script)  # warm: page cache, connections, the loop
        results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
        for r in range(1, args.rounds + 1):
            for mode in modes:
                proc, port = servers[mode]
                pids = [s.pid for s in tree([proc.pid])]
                before = [user_system_seconds(pid) for pid in pids]
                t0 = time.perf_counter()
                requests, errors = _wrk(port, args.duration_s, script)
                seconds = time.perf_counter() - t0
                after = [user_system_seconds(pid) for pid in pids]
                user = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
                system = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
                rps = requests / seconds
                results[mode].append((rps, user * 1e6 / requests, system * 1e6 / requests))
                print(
                    f"round {r} {mode:<14} {rps:>8,.0f} req/s  user {user * 1e6 / requests:5.1f}"
                    f" µs  system {system * 1e6 / requests:5.1f} µs per response"
                    + (f"  ({errors:.0f} socket errors)" if errors else ""),
                    flush=True,
                )
        print(f"\n{args.kib} KiB bodies, {args.objects} objects, best round of {args.rounds}:\n")
        print("| mode | req/s | user µs/resp | system µs/resp | CPU µs/resp |")
        print("|---|---:|---:|---:|---:|")
        for mode in modes:
            rps, user, system = min(results[mode], key=lambda x: x[1] + x[2])
            print(f"| {mode} | {rps:,.0f} | {user:.1f} | {system:.1f} | {user + system:.1f} |")
    finally:
        for proc, _ in servers.values():
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
