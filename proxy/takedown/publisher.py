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
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import aiohttp

from proxy.takedown import publications as pubs
from proxy.takedown.anchor import Anchor
from proxy.takedown.config import Publish
from proxy.takedown.metrics import ServiceMetrics
from proxy.takedown.store import Store

if TYPE_CHECKING:
    from proxy.blocklist.model import Entry

log = logging.getLogger("edgeproxy.takedown.publisher")


class EdgeError(Exception):
    """The edge did not acknowledge; the message is recorded as the delivery's last error."""


@dataclass(frozen=True, slots=True)
class Ack:
    version: int
    enforced_at: float


class Edge(Protocol):
    name: str

    async def deliver(
        self, kind: str, entries: list[dict[str, str]], audit_head: dict[str, Any] | None = None
    ) -> Ack: ...


AUDIT_HEAD_HEADER = "X-Edgeproxy-Audit-Head"  # read by proxy/admin/app.py


class AdminApiEdge:
    """An edge node's admin API: POST entries to block, DELETE them for a removal."""

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

    async def deliver(
        self, kind: str, entries: list[dict[str, str]], audit_head: dict[str, Any] | None = None
    ) -> Ack:
        headers = dict(self._headers)
        if audit_head:  # a header, so edges that predate it ignore it
            headers[AUDIT_HEAD_HEADER] = json.dumps(audit_head, separators=(",", ":"))
        try:
            if kind not in pubs.REMOVALS:
                async with self._session.post(
                    f"{self._base}/blocklist/entries",
                    json={"entries": entries},
                    headers=headers,
                ) as resp:
                    return await self._answer(resp)
            ack: Ack | None = None
            for e in entries:
                async with self._session.delete(
                    f"{self._base}/blocklist/entries/{quote(e['id'], safe='')}",
                    headers=headers,
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


class DropRefused(Exception):
    """The directory's newest version is not one this service can build on (signed by a key it
    does not hold, unreadable, or resting on a missing base): nothing is written, because a
    version on top of an older one would hide, and a full one would erase, what is there."""


@dataclass(frozen=True, slots=True)
class Newest:
    """The directory's newest version as an edge resolves it (sequence 0: no version yet)."""

    sequence: int
    entries: dict[str, Entry]
    chain_length: int  # versions it rests on, itself included; 0 when there is none


def as_entry(e: dict[str, str]) -> Entry:
    from proxy.blocklist.model import Entry, EntryType

    return Entry(
        id=e["id"],
        type=EntryType(e["type"]),
        value=e["value"],
        notice=e.get("notice", ""),
        reason=e.get("reason", ""),
    )


class FileDrop:
    """Writes each publication as the next signed version into a directory edges follow.

    Other publishers (an operator's `blocklist sign`, an imported list) write into the same
    directory with the same key, so a version here is a *delta* on the newest one present: it
    adds the publication's entries, or removes entries this service created, and leaves the
    rest alone. When the newest already rests on `max_delta_chain` versions the next one is
    full: everything the newest resolves to plus the service's own entries, never the
    service's alone. The newest version is read with the edge's own loader, so what is built
    on is exactly what an edge enforces.
    """

    def __init__(
        self,
        directory: str | Path,
        private_key_pem: bytes,
        *,
        max_bytes: int = 1 << 30,
        max_delta_chain: int = 64,
        max_publications_per_version: int = 256,
    ) -> None:
        from cryptography.hazmat.primitives import serialization

        from proxy.blocklist import format as blformat

        self.directory = Path(directory)
        self._key = private_key_pem
        self.private_key_pem = private_key_pem
        private = serialization.load_pem_private_key(private_key_pem, password=None)
        self.public_key_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.max_bytes = max_bytes
        self.max_delta_chain = max(1, min(max_delta_chain, blformat.MAX_DELTA_CHAIN))
        self.max_publications_per_version = max(1, max_publications_per_version)
        # The newest version as last resolved, and the directory's state it holds for: each
        # publication would otherwise re-read and re-verify the whole delta chain (up to
        # `max_delta_chain` signatures, inside the store's write transaction).
        self._known: tuple[blformat.DirectoryState, Newest] | None = None

    def newest(self) -> Newest:
        """The newest version, verified with this service's key; `DropRefused` when a file
        claiming that sequence or a later one (or a file whose sequence cannot be read) is not
        a valid version under that key. Resolved again only when a version file was added,
        removed or replaced since the last time (by this service's `write` it is known)."""
        from proxy.blocklist import format as blformat

        state = blformat.directory_state(self.directory)
        if self._known is not None and self._known[0] == state:
            return self._known[1]
        found = self._resolve()
        self._known = (state, found)
        return found

    def _resolve(self) -> Newest:
        from proxy.blocklist import format as blformat

        info = blformat.LoadInfo()
        found, errors = blformat.load_newest(
            self.directory,
            self.public_key_pem,
            current_sequence=None,
            max_bytes=self.max_bytes,
            info=info,
        )
        sequence = found[1] if found is not None else 0
        for err in errors:
            claimed = blformat.peek_sequence(Path(err.file))
            if claimed is None or claimed >= sequence:
                raise DropRefused(f"refusing to publish over {err}")
        if found is None:
            return Newest(0, {}, 0)
        return Newest(sequence, {e.id: e for e in found[0]}, info.chain_length)

    def needs_full(self, newest: Newest) -> bool:
        return newest.sequence == 0 or newest.chain_length >= self.max_delta_chain

    def write(
        self,
        sequence: int,
        adds: list[Entry],
        *,
        base: int | None = None,
        removes: list[str] | None = None,
        audit_head: dict[str, str | int | float] | None = None,
    ) -> Path:
        from proxy.blocklist import format as blformat

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / blformat.version_filename(sequence)
        known = self._known
        self._known = None
        blformat.write_version(
            path,
            sequence,
            adds,
            base=base,
            removes=removes or (),
            private_key_pem=self._key,
            audit_head=audit_head,
        )
        if known is not None and (base is None or base == known[1].sequence):
            # When nothing but this file changed since `newest()` resolved what it rests on,
            # the newest is now this version.
            built_on = known[1]
            after = blformat.directory_state(self.directory)
            others = tuple(f for f in after if f[0] != path.name)
            if others == tuple(f for f in known[0] if f[0] != path.name):
                entries = {} if base is None else dict(built_on.entries)
                for entry_id in removes or ():
                    entries.pop(entry_id, None)
                entries.update((e.id, e) for e in adds)
                chain = 1 if base is None else built_on.chain_length + 1
                self._known = (after, Newest(sequence, entries, chain))
        return path


class Publisher:
    def __init__(
        self,
        store: Store,
        edges: Sequence[Edge],
        policy: Publish,
        clock: Callable[[], float],
        file_drop: FileDrop | None = None,
        anchor: Anchor | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.store = store
        self.anchor = anchor
        self.metrics = metrics or ServiceMetrics([e.name for e in edges])
        self.edges = list(edges)
        self.policy = policy
        self.clock = clock
        self.file_drop = file_drop
        self._dispatch = asyncio.Event()
        self._wake = {e.name: asyncio.Event() for e in self.edges}
        self._tasks: list[asyncio.Task[None]] = []
        self._refusals: dict[int, str] = {}

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
        refused_delay = self.policy.retry_initial_s
        while True:
            await self._dispatch.wait()
            self._dispatch.clear()
            pending: list[int] = []
            try:
                pending = await self.store.run(pubs.unpublished)
                while pending:
                    pending = pending[await self._publish(pending) :]
                refused_delay = self.policy.retry_initial_s
            except DropRefused as exc:
                # Later publications wait too: a restore must not overtake its block.
                await self._refused(pending[0], str(exc))
                await asyncio.sleep(refused_delay)
                refused_delay = min(
                    refused_delay * self.policy.retry_factor, self.policy.retry_max_s
                )
                self._dispatch.set()
            except Exception:  # never let one bad publication stop the pipeline
                log.exception("publishing failed; retrying")
                await asyncio.sleep(self.policy.retry_initial_s)
                self._dispatch.set()
            for ev in self._wake.values():
                ev.set()

    async def _refused(self, pid: int, reason: str) -> None:
        """Log every refusal; record it on the case once per publication and reason."""
        log.error("publication %d not written to the blocklist directory: %s", pid, reason)
        if self._refusals.get(pid) != reason:
            self._refusals[pid] = reason
            await self.store.run(pubs.record_refusal, pid, self.clock(), reason)

    async def _publish(self, pids: list[int]) -> int:
        """Publish the first of `pids` (with a file drop: as many as one version takes); how
        many were published."""
        if self.file_drop is None:
            await self.store.run(self._mark_published, pids[0])
            return 1
        most = self.file_drop.max_publications_per_version
        return int(await self.store.run(self._drop_version, pids[:most]))

    def _signed_head(self, conn: Any) -> dict[str, str | int | float] | None:
        """Every publication carries the chain head signed as it goes out."""
        if self.anchor is None:
            return None
        head = self.anchor.sign(conn, self.store.committed_head)
        return head.public() if head else None

    def _mark_published(self, conn: Any, pid: int) -> None:
        pubs.mark_published(conn, pid, self.clock(), None, self._signed_head(conn))

    def _drop_version(self, conn: Any, pids: list[int]) -> int:
        """Write the next version; inside the transaction, so no sequence is taken twice. It
        carries the first of `pids` and the ones right after it of the same class (all blocks,
        or all removals: a delta applies its removes before its adds, so a block and the
        restore that undoes it never share one), each published as that version: under a
        burst of decisions one signed file, fsync and feed entry serve many. How many it took."""
        drop = self.file_drop
        assert drop is not None
        rows: list[Any] = []
        for pid in pids:
            row = conn.execute(
                "SELECT kind, entries FROM publications WHERE id = ?", (pid,)
            ).fetchone()
            if rows and (row["kind"] in pubs.REMOVALS) != (rows[0]["kind"] in pubs.REMOVALS):
                break
            rows.append(row)
        mine = [e for row in rows for e in json.loads(row["entries"])]
        newest = drop.newest()
        if rows[0]["kind"] in pubs.REMOVALS:
            # Only what this service created may be removed, whatever the publication says.
            own = pubs.own_entry_ids(conn)
            adds, gone = [], list(dict.fromkeys(e["id"] for e in mine if e["id"] in own))
        else:
            adds, gone = list({e["id"]: as_entry(e) for e in mine}.values()), []
        n = max(newest.sequence, pubs.last_file_sequence(conn)) + 1
        head = self._signed_head(conn)
        if drop.needs_full(newest):
            union = dict(newest.entries)
            for e in [as_entry(d) for d in pubs.active_entries(conn)] + adds:
                union[e.id] = e
            for entry_id in gone:
                union.pop(entry_id, None)
            drop.write(n, list(union.values()), audit_head=head)
        else:
            drop.write(n, adds, base=newest.sequence, removes=gone, audit_head=head)
        now = self.clock()
        for pid in pids[: len(rows)]:
            pubs.mark_published(conn, pid, now, n, head)
        return len(rows)

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
                        # Not wait_for: on 3.11 it can swallow stop()'s cancellation.
                        async with asyncio.timeout(self.policy.request_timeout_s):
                            ack = await edge.deliver(p.kind, p.entries, p.audit_head)
                        break
                    except (EdgeError, TimeoutError) as exc:
                        msg = str(exc) or type(exc).__name__
                        # An edge that is down must not be silent: logged, counted, and
                        # its first failure recorded on the case.
                        self.metrics.edge_failures[edge.name].inc()
                        log.warning(
                            "publication %d (%s) not acknowledged by edge %s: %s; retrying in %g s",
                            p.publication,
                            p.kind,
                            edge.name,
                            msg,
                            delay,
                        )
                        await self.store.run(
                            pubs.record_failure, p.publication, edge.name, self.clock(), msg
                        )
                        await asyncio.sleep(delay)
                        delay = min(delay * self.policy.retry_factor, self.policy.retry_max_s)
                took = await self.store.run(
                    pubs.record_ack,
                    p.publication,
                    edge.name,
                    ack.version,
                    ack.enforced_at,
                    self.clock(),
                )
                self.metrics.edge_acks[edge.name].inc()
                if took is not None:
                    self.metrics.time_to_enforcement.observe(took)
