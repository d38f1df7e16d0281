"""The supervisor ↔ worker control channel: length-prefixed msgspec JSON frames over a Unix
socketpair. The supervisor sends requests `{"id", "op", "args"}`; a worker answers
`{"id", "ok", "result" | "error"}`. Workers never send unprompted, except `ready`.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Any

import msgspec

_LEN = struct.Struct("!I")
MAX_FRAME_BYTES = 64 << 20

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


async def read_frame(reader: asyncio.StreamReader) -> Any:
    head = await reader.readexactly(_LEN.size)
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME_BYTES:
        raise ValueError(f"control frame of {n} bytes exceeds {MAX_FRAME_BYTES}")
    return _dec.decode(await reader.readexactly(n))


def write_frame(writer: asyncio.StreamWriter, message: Any) -> None:
    body = _enc.encode(message)
    writer.write(_LEN.pack(len(body)) + body)


class ControlError(Exception):
    pass


class Channel:
    """The supervisor's end: request/response with ids, many requests in flight."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                msg = await read_frame(self.reader)
                if msg.get("op") == "ready":
                    if not self.ready.done():
                        self.ready.set_result(msg.get("result", {}))
                    continue
                fut = self._pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    if msg.get("ok"):
                        fut.set_result(msg.get("result"))
                    else:
                        fut.set_exception(ControlError(msg.get("error", "worker error")))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            err = ControlError("worker channel closed")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()
            if not self.ready.done():
                self.ready.set_exception(err)
                self.ready.exception()

    async def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float) -> Any:
        i = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        try:
            write_frame(self.writer, {"id": i, "op": op, "args": args or {}})
            await self.writer.drain()
            async with asyncio.timeout(timeout_s):
                return await fut
        finally:
            self._pending.pop(i, None)

    def close(self) -> None:
        self._task.cancel()
        self.writer.close()
