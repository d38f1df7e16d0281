"""The bundled benchmark origin: a raw asyncio protocol on llhttp (httptools) and uvloop.

It must never be the bottleneck, so every answer is a pre-serialised byte string built once per
distinct resource and written with one `transport.write`. Routes:

- `/bytes/{n}`     n bytes, `Cache-Control: public, max-age=3600`, a strong ETag
- `/zipf/{i}`      1 KiB, cacheable, distinct per i (the Zipf popularity scenario)
- `/nostore/{n}`   n bytes, `Cache-Control: no-store` (pass-through)
- `/cold/{any}`    1 KiB, cacheable, distinct per path (cold misses)
- `/blocked/{any}` 1 KiB, cacheable: the content under the prefix the scenarios list; marked
                   `X-Bench-Listed: 1`, so a client sees at once if one is ever delivered
- `/same/{any}`    4 KiB, cacheable, one body for every path (placeholders: issue 19)
- `/vary/{i}`      1 KiB, cacheable, `Vary: Accept-Language` (the soak's variants)
- `/obj/{n}/{i}`   n bytes, cacheable, distinct per path, never memoised here (the node-tier
                   scenarios' object sets, `benchmarks.load.ObjectSet`: 100k objects of up to
                   100 KiB would hold gigabytes in this process)
- `/__stats`       `{"requests": N}`: requests that reached the origin, this one excluded

`If-None-Match` matching the ETag answers 304. Anything else is 404.

    python -m benchmarks.origin --port 8081 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import cast

import httptools

_MAX_BODY_BYTES = 64 << 20
_CACHEABLE = b"public, max-age=3600"


class _Stats:
    requests = 0


class _Date:
    """The `Date` value, formatted at most once a second."""

    _second = -1
    _value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls._second:
            cls._second = second
            cls._value = email.utils.formatdate(second, usegmt=True).encode()
        return cls._value


def _body(seed: bytes, n: int) -> bytes:
    block = (hashlib.sha256(seed).hexdigest().encode() * 2)[:64]
    return (block * (n // 64 + 1))[:n]


def _head(status: bytes, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
    lines = [b"HTTP/1.1 " + status]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: " + str(length).encode())
    return b"\r\n".join(lines) + b"\r\n"


class _Resource:
    """One pre-serialised answer; only `Date` (and `Connection`) are added per request."""

    __slots__ = ("etag", "ok_head", "body", "not_modified_head")

    def __init__(
        self,
        body: bytes,
        cache_control: bytes,
        seed: bytes,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self.etag = b'"' + hashlib.sha256(seed + body[:64]).hexdigest()[:16].encode() + b'"'
        common = [
            (b"Content-Type", b"application/octet-stream"),
            (b"Cache-Control", cache_control),
            *extra,
        ]
        if cache_control != b"no-store":
            common.append((b"ETag", self.etag))
        self.ok_head = _head(b"200 OK", common, len(body))
        self.not_modified_head = _head(b"304 Not Modified", common[1:], 0).replace(
            b"Content-Length: 0\r\n", b""
        )
        self.body = body


_LISTED = ((b"X-Bench-Listed", b"1"),)
_VARY = ((b"Vary", b"Accept-Language"),)
_SAME_BODY = _body(b"same", 4096)
_NOT_FOUND = _Resource(b"not found\n", b"no-store", b"404")
_NOT_FOUND.ok_head = _NOT_FOUND.ok_head.replace(b"200 OK", b"404 Not Found", 1)


class Router:
    """Maps a path to a resource; resources are built once and memoised (bounded)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._memo: dict[bytes, _Resource] = {}
        self._max_entries = max_entries

    def resolve(self, path: bytes) -> _Resource:
        found = self._memo.get(path)
        if found is not None:
            return found
        resource = self._build(path)
        if path.startswith(b"/obj/"):
            return resource
        if len(self._memo) >= self._max_entries:
            self._memo.clear()
        self._memo[path] = resource
        return resource

    @staticmethod
    def _build(path: bytes) -> _Resource:
        parts = path.split(b"?", 1)[0].split(b"/")
        if len(parts) < 3 or not parts[2]:
            return _NOT_FOUND
        route, arg = parts[1], parts[2]
        try:
            if route == b"bytes":
                n = int(arg)
                if 0 <= n <= _MAX_BODY_BYTES:
                    return _Resource(_body(b"bytes", n), _CACHEABLE, path)
            elif route == b"obj" and len(parts) > 3:
                n = int(arg)
                if 0 <= n <= _MAX_BODY_BYTES:
                    return _Resource(_body(path, n), _CACHEABLE, path)
            elif route == b"nostore":
                n = int(arg)
                if 0 <= n <= _MAX_BODY_BYTES:
                    return _Resource(_body(b"nostore", n), b"no-store", path)
            elif route in (b"zipf", b"cold"):
                return _Resource(_body(path, 1024), _CACHEABLE, path)
            elif route == b"blocked":
                return _Resource(_body(path, 1024), _CACHEABLE, path, _LISTED)
            elif route == b"same":
                return _Resource(_SAME_BODY, _CACHEABLE, b"same")
            elif route == b"vary":
                return _Resource(_body(path, 1024), _CACHEABLE, path, _VARY)
        except ValueError:
            pass
        return _NOT_FOUND


class OriginProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and in-order pipelining; request bodies are read and dropped."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._inm: bytes | None = None
        self._header_name = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._inm = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 13 and name.lower() == b"if-none-match":
            self._inm = value

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._url == b"/__stats":  # not counted: it is how the runner reads the count
            body = json.dumps({"requests": _Stats.requests}).encode()
            head = _head(b"200 OK", [(b"Content-Type", b"application/json")], len(body))
            transport.write(head + b"\r\n" + body)
            return
        _Stats.requests += 1
        resource = self._router.resolve(self._url)
        keep_alive = self._parser.should_keep_alive()
        tail = (
            b"Date: "
            + _Date.now()
            + (b"\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n")
        )
        if self._inm is not None and self._inm == resource.etag:
            transport.write(resource.not_modified_head + tail)
        elif self._parser.get_method() == b"HEAD":
            transport.write(resource.ok_head + tail)
        else:
            transport.write(resource.ok_head + tail + resource.body)
        if not keep_alive:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    router = Router()
    server = await loop.create_server(
        lambda: OriginProtocol(router), host, port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"origin listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


class Origin:
    """This origin in a child process on a free port, for a benchmark (stopped by `stop`)."""

    def __init__(self, workdir: Path) -> None:
        from benchmarks.targets import free_port, http_status

        self.port = free_port()
        log = open(workdir / "origin.log", "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.origin", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parent.parent,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 15
        while http_status(f"http://127.0.0.1:{self.port}/__stats", 0.5) != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the bundled origin did not start; see origin.log")
            time.sleep(0.05)

    def requests(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/__stats", timeout=5) as r:
            return int(json.loads(r.read())["requests"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


if __name__ == "__main__":
    main()
