"""Phase tests without origin sockets: the worker's own wiring (`build_worker`) with an in-memory origin
(`proxy.origin.memory.MemoryOrigin`) and a fake clock, driven through the front's connection
object over a fake transport that records every write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.front.server import Connection
from proxy.origin.memory import MemoryOrigin
from proxy.state import WorkerParts, build_worker
from tests.integration.conftest import config
from tests.integration.helpers_cache import FakeClock


class Transport:
    """Just enough of an asyncio transport for the front to answer into."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.gathered = 0  # writes made with writelines (a head and its body apart)
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, data: Any) -> None:
        self.gathered += 1
        self.writes.append(b"".join(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, **_: int) -> None: ...

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


class Worker:
    def __init__(self, parts: WorkerParts, origin: MemoryOrigin, clock: FakeClock) -> None:
        self.parts = parts
        self.origin = origin
        self.clock = clock

    def connect(self) -> tuple[Connection, Transport]:
        conn = Connection(self.parts.server)
        transport = Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport


@pytest.fixture
async def make_worker() -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    made: list[Worker] = []

    async def factory(handler: Any, **overrides: Any) -> Worker:
        origin = MemoryOrigin(handler)
        clock = FakeClock()
        parts = build_worker(config("http://origin.test", **overrides), origin=origin, clock=clock)
        # The front's timers need its loop; requests never use its socket, only the fake
        # transport.
        await parts.server.start(host="127.0.0.1", port=0)
        w = Worker(parts, origin, clock)
        made.append(w)
        return w

    yield factory
    for w in made:
        await w.parts.server.drain_and_close(0.1)
