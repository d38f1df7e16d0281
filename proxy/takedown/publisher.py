"""Moving publications to the edges and collecting their acknowledgements.

A dispatcher publishes each new publication (writing the next signed version into the blocklist
directory when a file drop is configured) and wakes one worker per edge. A worker delivers its
edge's pending publications strictly in order (a restore must never overtake the block it
undoes), retrying with exponential backoff until the edge answers. The edge admin API answers
only once every worker on that edge enforces the version, so its answer is the acknowledgement:
its version and `applied_at` are recorded as the proof of enforcement.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from proxy.takedown import publications as pubs
from proxy.takedown.config import Publish
from proxy.takedown.store import Store

log = logging.getLogger("edgeproxy.takedown.publisher")


class EdgeError(Exception):
    """The edge did not acknowledge; the message is recorded as the delivery's last error."""


@dataclass(frozen=True, slots=True)
class Ack:
    version: int
    enforced_at: float


class Edge(Protocol):
    name: str

    async def deliver(self, kind: str, entries: list[dict[str, str]]) -> Ack: ...


class AdminApiEdge:
    """An edge node's admin API: POST entries to block, DELETE them to restore."""

    def __init__(self, url: str, token: str, session: aiohttp.ClientSession) -> None:
        self.name = url
        self._base = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = session

    async def _answer(self, resp: aiohttp.ClientResponse) -> Ack:
        if resp.status != 200:
            raise EdgeError(f"{resp.method} {resp.url.path}: HTTP {resp.status}")
        body = await resp.json(content_type=None)
        try:
            return Ack(int(body["version"]), float(body["applied_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeError(f"malformed acknowledgement {body!r}") from exc

    async def deliver(self, kind: str, entries: list[dict[str, str]]) -> Ack:
        try:
            if kind != "restore":
                async with self._session.post(
                    f"{self._base}/blocklist/entries",
                    json={"entries": entries},
                    headers=self._headers,
                ) as resp:
                    return await self._answer(resp)
            ack: Ack | None = None
            for e in entries:
                async with self._session.delete(
                    f"{self._base}/blocklist/entries/{quote(e['id'], safe='')}",
                    headers=self._headers,
                ) as resp:
                    if resp.status == 404:  # already gone: nothing to enforce for this one
                        continue
                    ack = await self._answer(resp)
            if ack is None:
                async with self._session.get(
                    f"{self._base}/blocklist", headers=self._headers
                ) as resp:
                    if resp.status != 200:
                        raise EdgeError(f"GET /blocklist: HTTP {resp.status}")
                    body = await resp.json(content_type=None)
                    ack = Ack(int(body["version"]), float(body.get("applied_at") or 0.0))
            return ack
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise EdgeError(f"{type(exc).__name__}: {exc}") from exc


class FileDrop:
    """Writes the full list of active entries as the next signed version into a directory.

    Versions are full (no delta), so an edge that missed some can always load the newest one.
    The sequence continues from the highest one already in the directory or the database.
    """

    def __init__(self, directory: str | Path, private_key_pem: bytes) -> None:
        self.directory = Path(directory)
        self._key = private_key_pem

    def next_sequence(self, last_recorded: int) -> int:
        from proxy.blocklist import format as blformat

        highest = last_recorded
        for path in blformat.list_versions(self.directory):
            try:
                with open(path, "rb") as f:
                    highest = max(highest, int(json.loads(f.readline(4096))["sequence"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours to judge; the edge's loader reports bad files
        return highest + 1

    def write(self, sequence: int, entries: list[dict[str, str]]) -> Path:
        # Imported here so the service runs (without file drop) on nodes lacking the module.
        from proxy.blocklist import format as blformat
        from proxy.blocklist.model import Entry, EntryType

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / blformat.version_filename(sequence)
        items = [
            Entry(
                id=e["id"],
                type=EntryType(e["type"]),
                value=e["value"],
                notice=e.get("notice", ""),
                reason=e.get("reason", ""),
            )
            for e in entries
        ]
        blformat.write_version(path, sequence, items, private_key_pem=self._key)
        return path


class Publisher:
    def __init__(
        self,
        store: Store,
        edges: Sequence[Edge],
        policy: Publish,
        clock: Callable[[], float],
        file_drop: FileDrop | None = None,
    ) -> None:
        self.store = store
        self.edges = list(edges)
        self.policy = policy
        self.clock = clock
        self.file_drop = file_drop
        self._dispatch = asyncio.Event()
        self._wake = {e.name: asyncio.Event() for e in self.edges}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._dispatcher(), name="takedown-dispatch"))
        for e in self.edges:
            self._tasks.append(asyncio.create_task(self._worker(e), name=f"edge {e.name}"))
        self.kick()  # resume whatever a previous run left undelivered

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def kick(self) -> None:
        self._dispatch.set()

    async def _dispatcher(self) -> None:
        while True:
            await self._dispatch.wait()
            self._dispatch.clear()
            try:
                for pid in await self.store.run(pubs.unpublished):
                    await self._publish(pid)
            except Exception:  # never let one bad publication stop the pipeline
                log.exception("publishing failed; retrying")
                await asyncio.sleep(self.policy.retry_initial_s)
                self._dispatch.set()
            for ev in self._wake.values():
                ev.set()

    async def _publish(self, pid: int) -> None:
        if self.file_drop is None:
            await self.store.run(pubs.mark_published, pid, self.clock(), None)
        else:
            await self.store.run(self._drop_version, pid)

    def _drop_version(self, conn: Any, pid: int) -> int:
        """Write the next full version; inside the transaction, so no sequence is taken twice."""
        assert self.file_drop is not None
        active = pubs.active_entries(conn)
        row = conn.execute("SELECT kind, entries FROM publications WHERE id = ?", (pid,)).fetchone()
        mine = json.loads(row["entries"])
        if row["kind"] == "restore":
            gone = {e["id"] for e in mine}
            active = [e for e in active if e["id"] not in gone]
        else:
            known = {e["id"] for e in active}
            active += [e for e in mine if e["id"] not in known]
        n = self.file_drop.next_sequence(pubs.last_file_sequence(conn))
        self.file_drop.write(n, active)
        pubs.mark_published(conn, pid, self.clock(), n)
        return n

    async def _worker(self, edge: Edge) -> None:
        wake = self._wake[edge.name]
        while True:
            pending = await self.store.run(pubs.pending_for, edge.name)
            if not pending:
                await wake.wait()
                wake.clear()
                continue
            for p in pending:
                delay = self.policy.retry_initial_s
                while True:
                    try:
                        ack = await asyncio.wait_for(
                            edge.deliver(p.kind, p.entries), self.policy.request_timeout_s
                        )
                        break
                    except (EdgeError, TimeoutError) as exc:
                        msg = str(exc) or type(exc).__name__
                        await self.store.run(
                            pubs.record_failure, p.publication, edge.name, self.clock(), msg
                        )
                        await asyncio.sleep(delay)
                        delay = min(delay * self.policy.retry_factor, self.policy.retry_max_s)
                await self.store.run(
                    pubs.record_ack,
                    p.publication,
                    edge.name,
                    ack.version,
                    ack.enforced_at,
                    self.clock(),
                )
