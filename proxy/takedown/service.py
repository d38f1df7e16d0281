"""The takedown service: one object that owns the store, the publisher and the scheduler.

The HTTP layer (`api.py`) and the tests call these coroutines. Each one is a single durable
transaction followed, when it created publications, by an immediate kick of the publisher, so
enforcement starts the moment a decision is committed rather than on a timer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from proxy.takedown import (
    accounts,
    anchor,
    audit,
    authz,
    cases,
    elements,
    redress,
    rejected,
    reports,
    restore,
    views,
)
from proxy.takedown.accounts import Account
from proxy.takedown.calendar import BusinessCalendar
from proxy.takedown.config import TakedownConfig
from proxy.takedown.metrics import ServiceMetrics
from proxy.takedown.publications import report_overdue
from proxy.takedown.publisher import AdminApiEdge, Edge, FileDrop, Publisher
from proxy.takedown.sender import Sender
from proxy.takedown.states import actor_of
from proxy.takedown.store import Store

log = logging.getLogger("edgeproxy.takedown")


class TakedownService:
    def __init__(
        self,
        db: str | Path,
        cfg: TakedownConfig,
        *,
        edge_urls: Sequence[str] = (),
        admin_token: str = "",
        edges: Sequence[Edge] | None = None,
        file_drop: FileDrop | None = None,
        clock: Callable[[], float] = time.time,
        audit_anchor: anchor.Anchor | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.store = Store(db)
        self._edge_urls = list(edge_urls)
        self._admin_token = admin_token
        self._extra_edges = list(edges or [])
        self._file_drop = file_drop
        r = cfg.restore
        self.calendar = BusinessCalendar.from_policy(r)
        self._session: aiohttp.ClientSession | None = None
        self.publisher: Publisher | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._accounts: dict[str, Account] = {}
        self.anchor = audit_anchor or anchor.for_db(
            db, cfg.anchor, clock, fallback_key_pem=file_drop.private_key_pem if file_drop else None
        )
        self._anchoring: asyncio.Task[None] | None = None
        self.metrics = ServiceMetrics(self.edge_names)
        self.sender: Sender | None = None
        self._notify_session: aiohttp.ClientSession | None = None
        from proxy.takedown.kyc import Kyc  # customer verification and the site roster

        self.kyc = Kyc(
            self,
            edge_urls=self._edge_urls,
            admin_token=admin_token,
            fallback_key_pem=file_drop.private_key_pem if file_drop else None,
        )

    @property
    def edge_names(self) -> list[str]:
        return self._edge_urls + [e.name for e in self._extra_edges]

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.publish.request_timeout_s)
        )
        edges: list[Edge] = [
            AdminApiEdge(u, self._admin_token, self._session) for u in self._edge_urls
        ]
        self.publisher = Publisher(
            self.store,
            edges + self._extra_edges,
            self.cfg.publish,
            self.clock,
            self._file_drop,
            self.anchor,
            self.metrics,
        )
        self.publisher.start()
        self._notify_session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.notify.request_timeout_s)
        )
        self.sender = Sender(
            self.store,
            self.cfg.notify,
            self._notify_session,
            self.metrics,
            self.clock,
            self.cfg.service.operator_name,
        )
        self.sender.start()
        await self.sign_head()  # a log carried over from an earlier run is vouched for at once
        await self.kyc.start()
        self._scheduler = asyncio.create_task(self._schedule(), name="takedown-scheduler")
        self._anchoring = asyncio.create_task(self._anchor_loop(), name="takedown-anchor")

    async def stop(self) -> None:
        await self.kyc.stop()
        for task in (self._scheduler, self._anchoring):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.publisher:
            await self.publisher.stop()
        if self.sender:
            await self.sender.stop()
        if self._notify_session:
            await self._notify_session.close()
        await self.sign_head()  # the last records written are vouched for too
        if self._session:
            await self._session.close()
        await asyncio.to_thread(self.store.close)

    def _kick(self, out: cases.Outcome) -> dict[str, Any]:
        if out.publications and self.publisher is not None:
            self.publisher.kick()
        if self.sender is not None:  # the transaction may have queued notifications
            self.sender.kick()
        return out.result

    def forget_accounts(self) -> None:
        """Drop cached authentications (a key disabled or rotated stops working at once)."""
        self._accounts.clear()

    async def metrics_text(self) -> bytes:
        await self.store.run(self.metrics.refresh, self.clock(), self.cfg)
        return self.metrics.exposition()

    async def authenticate(self, key: str) -> Account | None:
        """Cached by the key's hash after one constant-time check against the database."""
        digest = accounts.key_hash(key)
        hit = self._accounts.get(digest)
        if hit is not None:
            return hit
        acct = await self.store.run(accounts.authenticate, key)
        if acct is not None:
            self._accounts[digest] = acct
        return acct

    async def submit_notice(
        self, account: Account, raw: bytes, remote: str | None
    ) -> dict[str, Any]:
        checked = elements.check_notice(raw)
        digest = hashlib.sha256(raw).hexdigest()
        if checked.error is not None:  # junk: kept, answered 400, never a case
            return await self.store.run(
                rejected.record,
                self.clock(),
                account,
                "notice",
                raw,
                digest,
                remote,
                checked.error,
            )
        out = await self.store.run(
            cases.intake,
            self.clock(),
            account,
            raw,
            digest,
            remote,
            checked,
            self.cfg,
            self.edge_names,
        )
        return self._kick(out)

    async def decide(
        self, account: Account, case_id: int, decision: str, reason: str
    ) -> dict[str, Any]:
        out = await self.store.run(
            cases.decide,
            case_id,
            self.clock(),
            account,
            decision,
            reason,
            self.cfg,
            self.edge_names,
        )
        return self._kick(out)

    async def withdraw(self, account: Account, case_id: int) -> dict[str, Any]:
        out = await self.store.run(
            redress.withdraw, case_id, self.clock(), account, self.cfg, self.edge_names
        )
        return self._kick(out)

    async def reverse(self, account: Account, case_id: int, statement: str) -> dict[str, Any]:
        out = await self.store.run(
            redress.reverse, case_id, self.clock(), account, statement, self.cfg, self.edge_names
        )
        return self._kick(out)

    async def complain(self, account: Account, case_id: int, statement: str) -> dict[str, Any]:
        out = await self.store.run(
            redress.complain, case_id, self.clock(), account, statement, self.cfg
        )
        return self._kick(out)

    async def dismiss_complaints(
        self, account: Account, case_id: int, statement: str
    ) -> dict[str, Any]:
        out = await self.store.run(redress.dismiss, case_id, self.clock(), account, statement)
        return self._kick(out)

    async def unsuspend(self, account: Account, host: str, statement: str) -> dict[str, Any]:
        out = await self.store.run(
            redress.unsuspend, host, self.clock(), account, statement, self.cfg, self.edge_names
        )
        return self._kick(out)

    async def rejected_submissions(self, limit: int) -> list[dict[str, Any]]:
        return await self.store.run(rejected.listing, limit)

    async def rejected_raw(self, rid: int) -> bytes | None:
        return await self.store.run(rejected.raw, rid)

    async def report(self, start: Any, end: Any) -> dict[str, Any]:
        return await self.store.run(reports.build, start, end, self.cfg, self.clock())

    async def counter_notice(
        self, account: Account, case_id: int, raw: bytes, remote: str | None = None
    ) -> dict[str, Any]:
        checked = elements.check_counter_notice(raw)
        digest = hashlib.sha256(raw).hexdigest()
        if checked.error is not None:
            return await self.store.run(
                rejected.record,
                self.clock(),
                account,
                "counter_notice",
                raw,
                digest,
                remote,
                checked.error,
                case_id,
            )
        out = await self.store.run(
            restore.counter_notice,
            case_id,
            self.clock(),
            account,
            raw,
            digest,
            checked,
            self.calendar,
            self.cfg.restore,
        )
        return self._kick(out)

    async def lawsuit(
        self, account: Account, case_id: int, detail: dict[str, Any]
    ) -> dict[str, Any]:
        out = await self.store.run(restore.lawsuit, case_id, self.clock(), account, detail)
        return out.result

    async def case(self, case_id: int) -> dict[str, Any] | None:
        return await self.store.run(views.case_view, case_id, self.clock(), self.cfg)

    async def case_relations(self, case_id: int, account: Account) -> frozenset[authz.Relation]:
        return await self.store.run(authz.case_relations, case_id, account)

    async def notice_relations(self, notice_id: int, account: Account) -> frozenset[authz.Relation]:
        return await self.store.run(authz.notice_relations, notice_id, account)

    async def refused(
        self,
        case_id: int | None,
        account: Account,
        method: str,
        route: str,
        reason: authz.Refusal,
        path: str = "",
    ) -> None:
        """A refused write is evidence (who tried what): on the case when it names an existing
        one, in the log alone when it names none (e.g. a site's unsuspension); nothing else
        changes."""

        def record(conn: Any) -> None:
            if case_id is None or authz.case_exists(conn, case_id):
                audit.append(
                    conn,
                    self.clock(),
                    "access_refused",
                    case_id=case_id,
                    actor=actor_of(account),
                    data={"method": method, "route": route, "path": path, "reason": reason.value},
                )

        await self.store.run(record)

    async def cases(
        self,
        *,
        overdue_only: bool,
        state: str | Sequence[str] | None,
        account_id: int | None,
        sort: str = "id",
        customer_id: int | None = None,
    ) -> list[dict[str, Any]]:
        return await self.store.run(
            lambda conn: views.list_cases(
                conn,
                self.clock(),
                self.cfg,
                overdue_only=overdue_only,
                state=state,
                account_id=account_id,
                customer_id=customer_id,
                sort=sort,
            )
        )

    async def statement(self, case_id: int) -> dict[str, Any] | None:
        return await self.store.run(views.statement_of_reasons, case_id, self.cfg)

    async def notice_raw(self, notice_id: int) -> tuple[bytes, int | None, int] | None:
        def read(conn: Any) -> tuple[bytes, int | None, int] | None:
            r = conn.execute(
                "SELECT raw, case_id, account_id FROM notices WHERE id = ?", (notice_id,)
            ).fetchone()
            return None if r is None else (bytes(r[0]), r[1], r[2])

        return await self.store.run(read)

    async def run_due(self) -> None:
        """One scheduler pass: due restores, overdue decisions and acknowledgements."""
        now = self.clock()
        d = self.cfg.deadlines

        def due(conn: Any) -> list[int]:
            restore.report_decision_overdue(conn, now, d.decision_s)
            report_overdue(conn, now, d.enforcement_s)
            return restore.due_restores(conn, now, self.edge_names)

        self._kick(cases.Outcome(publications=await self.store.run(due)))

    async def sign_head(self) -> anchor.SignedHead | None:
        """Sign the committed chain head now (a no-op when it has not moved)."""
        return await self.store.run(lambda conn: self.anchor.sign(conn, self.store.committed_head))

    async def _anchor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.anchor.interval_s)
            try:
                await self.sign_head()
            except Exception:
                log.exception("signing the audit log head failed")

    async def _schedule(self) -> None:
        while True:
            try:
                await self.run_due()
            except Exception:
                log.exception("scheduler pass failed")
            await asyncio.sleep(self.cfg.service.scheduler_interval_s)
