"""Publishing the site roster: which hosts may go live on the edges (proxy/gate.py).

A task in the service, woken by every verification change and every `check_interval_s`:
  1. `customers.reverify` marks expired evidence and validations (audited, notified);
  2. the live hosts are derived (`customers.live_hosts`); when they differ from the last
     roster a new one is recorded (`roster_published`, with what was added and removed);
  3. the newest roster is signed with the blocklist key and written into `roster_dir` (the
     file drop edges follow) and PUT to each edge's admin API (`/gate/roster`), retried with
     backoff until the edge takes it. A roster is the whole list, so only the newest matters:
     an edge that missed one gets the next, and every periodic pass sends it again (an edge
     restarted with an empty directory would otherwise hold every site until the next change).

Sequences are `max(last + 1, now in ms)`: they keep growing even when the database is
replaced, so an edge never refuses a fresh service's roster as older than one it holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from proxy import gate
from proxy.takedown import audit, customers
from proxy.takedown.config import Verification
from proxy.takedown.store import Store

log = logging.getLogger("edgeproxy.takedown.roster")


def settle_roster(
    conn: sqlite3.Connection, now: float, policy: Verification
) -> tuple[int, list[str]]:
    """Re-verify, then record a new roster if the live hosts changed; the newest roster."""
    customers.reverify(conn, now, policy)
    hosts = sorted({gate_host(h) for h in customers.live_hosts(conn, now, policy)})
    last = conn.execute(
        "SELECT sequence, hosts FROM rosters ORDER BY sequence DESC LIMIT 1"
    ).fetchone()
    if last is not None and json.loads(last["hosts"]) == hosts:
        return int(last["sequence"]), hosts
    before = set(json.loads(last["hosts"])) if last is not None else set()
    seq = max((int(last["sequence"]) + 1) if last else 1, int(now * 1000))
    conn.execute(
        "INSERT INTO rosters (sequence, hosts, created_at) VALUES (?, ?, ?)",
        (seq, json.dumps(hosts), now),
    )
    audit.append(
        conn,
        now,
        "roster_published",
        data={
            "sequence": seq,
            "live": len(hosts),
            "added": sorted(set(hosts) - before),
            "removed": sorted(before - set(hosts)),
        },
    )
    return seq, hosts


def gate_host(site: str) -> str:
    """A site key (`host[:port]`) as the edge's admit sees the host: no port."""
    from proxy.takedown.elements import bare_host

    return bare_host(site)


def deliveries(conn: sqlite3.Connection) -> dict[str, Any]:
    last = conn.execute("SELECT * FROM rosters ORDER BY sequence DESC LIMIT 1").fetchone()
    if last is None:
        return {"sequence": 0, "hosts": [], "edges": []}
    edges = [
        dict(r)
        for r in conn.execute(
            "SELECT edge, delivered_at, attempts, last_error FROM roster_deliveries"
            " WHERE sequence = ? ORDER BY edge",
            (last["sequence"],),
        )
    ]
    return {
        "sequence": last["sequence"],
        "created_at": last["created_at"],
        "hosts": json.loads(last["hosts"]),
        "edges": edges,
    }


def _record(conn: sqlite3.Connection, seq: int, edge: str, now: float, error: str | None) -> None:
    """One delivery attempt; the first success per roster and edge is an audit record."""
    before = conn.execute(
        "SELECT delivered_at FROM roster_deliveries WHERE sequence = ? AND edge = ?", (seq, edge)
    ).fetchone()
    if error is None and before is not None and before[0] is not None:
        return  # a periodic re-send of a roster the edge already took
    conn.execute(
        "INSERT INTO roster_deliveries (sequence, edge, delivered_at, attempts, last_error)"
        " VALUES (?, ?, ?, 1, ?) ON CONFLICT(sequence, edge) DO UPDATE SET"
        " delivered_at = excluded.delivered_at, attempts = attempts + 1,"
        " last_error = excluded.last_error",
        (seq, edge, None if error else now, error),
    )
    if error is None:
        audit.append(conn, now, "roster_delivered", data={"sequence": seq, "edge": edge})


class RosterPublisher:
    def __init__(
        self,
        store: Store,
        policy: Verification,
        clock: Callable[[], float],
        *,
        edge_urls: list[str],
        admin_token: str,
        private_key_pem: bytes | None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.edge_urls = list(edge_urls)
        self._headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.key = private_key_pem
        self.directory = Path(policy.roster_dir) if policy.roster_dir else None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._done: dict[str, int] = {}  # edge -> the sequence it took (or refused for good)
        self._warned = False
        self.passes = 0  # completed passes (tests wait on this rather than on time)

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.policy.dcv_timeout_s)
        )
        self._task = asyncio.create_task(self._loop(), name="takedown-roster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def kick(self) -> None:
        self._wake.set()

    async def run_once(self) -> bool:
        """One pass; True when every edge holds the newest roster."""
        seq, hosts = await self.store.run(settle_roster, self.clock(), self.policy)
        if self.key is None:
            if not self._warned:
                log.warning("no roster signing key: the site roster is not published")
                self._warned = True
            return True
        data = gate.render_roster(seq, hosts, self.key, created_at=self.clock())
        if self.directory is not None:
            path = self.directory / gate.roster_filename(seq)
            if not path.exists():
                await asyncio.to_thread(gate.write_roster, self.directory, data, seq)
        ok = True
        for url in self.edge_urls:
            if self._done.get(url) == seq:
                continue
            error = await self._put(url, data)
            await self.store.run(_record, seq, url, self.clock(), error)
            if error is None or error.startswith("gone:"):
                self._done[url] = seq
            else:
                ok = False
                log.warning("edge %s did not take roster %d: %s", url, seq, error)
        return ok

    async def _put(self, url: str, data: bytes) -> str | None:
        assert self._session is not None
        try:
            async with self._session.put(
                f"{url.rstrip('/')}/gate/roster",
                json={"roster": data.decode()},
                headers=self._headers,
            ) as resp:
                if resp.status == 200:
                    return None
                text = (await resp.text())[:300]
                if resp.status in (404, 409):  # gate off there, or it holds a newer one
                    return f"gone: HTTP {resp.status}: {text}"
                return f"HTTP {resp.status}: {text}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _loop(self) -> None:
        delay = 0.5
        while True:
            self._wake.clear()  # a kick from here on means another pass
            wait = self.policy.check_interval_s
            try:
                if await self.run_once():
                    delay = 0.5
                else:
                    wait = min(wait, delay)
                    delay = min(delay * 2, self.policy.roster_retry_max_s)
            except Exception:
                log.exception("roster pass failed")
                wait = min(wait, delay)
            self.passes += 1
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                # A periodic pass sends the newest roster to every edge again: one restarted
                # with an empty roster directory holds every site until it has it.
                self._done.clear()
