"""A bundled HTTP/1.1 load generator, used only when `wrk` is not installed.

LESS PRECISE than wrk: it is Python (uvloop + llhttp), so it spends far more CPU per request
than the servers it measures and, on a small machine, competes with them for cores. Its req/s
figures are a floor, its latencies include its own scheduling delay. CPU per request of the
server under test (measured from /proc, not by the client) stays meaningful.

Closed loop like wrk: each of `connections` keep-alive connections sends one request, waits for
the whole response, records the latency and sends the next. Paths are taken round-robin from a
list (one URL, a Zipf sequence, or generated distinct paths).

    python -m benchmarks.loadgen http://127.0.0.1:8080/bytes/1024 -c 64 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools


@dataclass
class LoadResult:
    """What one run measured; latencies in microseconds."""

    requests: int
    duration_s: float
    latencies_us: list[float] = field(repr=False)
    statuses: Counter[int]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def percentile_us(self, p: float) -> float:
        if not self.latencies_us:
            return 0.0
        ordered = sorted(self.latencies_us)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]


class _Client(asyncio.Protocol):
    def __init__(self, host: bytes, next_path: Callable[[], bytes], sink: _Sink) -> None:
        self._host = host
        self._next_path = next_path
        self._sink = sink
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._sent_at = 0.0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        if self._transport is None or self._sink.stopping:
            if self._transport is not None:
                self._transport.close()
            return
        try:
            path = self._next_path()
        except StopIteration:  # a finite path list is done: this connection is too
            self._transport.close()
            return
        self._sent_at = time.perf_counter()
        self._transport.write(b"GET " + path + b" HTTP/1.1\r\nHost: " + self._host + b"\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._sink.errors += 1
            if self._transport is not None:
                self._transport.close()

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        if self._sink.recording:
            self._sink.latencies_us.append((now - self._sent_at) * 1e6)
            self._sink.statuses[self._parser.get_status_code()] += 1
        if not self._parser.should_keep_alive():
            if self._transport is not None:
                self._transport.close()
            return
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._sink.stopping:
            self._sink.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class _Sink:
    latencies_us: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    recording: bool = True
    stopping: bool = False


async def run_load(
    url: str, paths: list[str] | Iterator[str] | None, *, connections: int, duration_s: float
) -> LoadResult:
    """Drive `connections` closed-loop connections at `url`'s host for `duration_s` seconds.

    `paths` is a list cycled round-robin, an iterator (e.g. endlessly distinct cold paths), or
    None for the URL's own path. A finite iterator ends the run early once it is exhausted.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if paths is None:
        source: Iterator[str] = itertools.repeat(parts.path or "/")
    elif isinstance(paths, list):
        source = itertools.cycle(paths)
    else:
        source = paths

    def next_path() -> bytes:
        return next(source).encode()

    loop = asyncio.get_running_loop()
    sink = _Sink()
    clients: list[_Client] = []
    started = time.perf_counter()
    for _ in range(connections):
        try:
            _, client = await loop.create_connection(
                lambda: _Client(f"{host}:{port}".encode(), next_path, sink), host, port
            )
            clients.append(client)
        except OSError:
            sink.errors += 1
    remaining = max(0.0, duration_s - (time.perf_counter() - started))
    if clients:
        await asyncio.wait([c.closed for c in clients], timeout=remaining)
    else:
        await asyncio.sleep(remaining)
    sink.recording = False
    sink.stopping = True
    elapsed = time.perf_counter() - started
    await asyncio.wait([c.closed for c in clients], timeout=2.0)
    return LoadResult(
        requests=len(sink.latencies_us),
        duration_s=elapsed,
        latencies_us=sink.latencies_us,
        statuses=sink.statuses,
        errors=sink.errors,
    )


def run_load_sync(
    url: str, paths: list[str] | Iterator[str] | None, *, connections: int, duration_s: float
) -> LoadResult:
    """`run_load` on a fresh event loop (uvloop when available)."""
    coro = run_load(url, paths, connections=connections, duration_s=duration_s)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bundled (less precise) HTTP load generator")
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-d", "--duration-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = run_load_sync(args.url, None, connections=args.connections, duration_s=args.duration_s)
    print(
        json.dumps(
            {
                "requests": result.requests,
                "rps": round(result.rps, 1),
                "p50_us": round(result.percentile_us(50), 1),
                "p99_us": round(result.percentile_us(99), 1),
                "errors": result.errors,
                "statuses": dict(result.statuses),
                "tool": "benchmarks.loadgen (less precise than wrk)",
            }
        )
    )


if __name__ == "__main__":
    main()
