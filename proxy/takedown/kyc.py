"""Customer verification inside the running service: the coroutines the API and CLI call.

Owns the roster publisher (`roster.py`) and the client that checks domain-control challenges
(`dcv.py`). Every write runs as one durable transaction (`Store.run`) and then wakes the
roster publisher, so a verified site goes live, and a disabled one is held, without waiting
for the periodic pass. `txt_resolver` is the DNS seam: tests replace it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from proxy.takedown import account_ops, customers, dcv, disclosure, roster
from proxy.takedown.accounts import Account
from proxy.takedown.config import TakedownConfig
from proxy.takedown.elements import site_key
from proxy.takedown.states import actor_of
from proxy.takedown.store import Store


class _Sender(Protocol):
    def kick(self) -> None: ...


class ServiceParts(Protocol):
    """What customer verification uses of the takedown service (proxy/takedown/service.py
    builds `Kyc` with itself): its config, store, clock, outbox and account cache."""

    cfg: TakedownConfig
    store: Store
    clock: Callable[[], float]
    sender: _Sender | None

    def forget_accounts(self) -> None: ...


class Kyc:
    def __init__(
        self,
        svc: ServiceParts,
        *,
        edge_urls: list[str],
        admin_token: str,
        fallback_key_pem: bytes | None,
    ) -> None:
        self.svc = svc
        self.policy = svc.cfg.verification
        key = self.policy.roster_signing_key
        self.roster = roster.RosterPublisher(
            svc.store,
            self.policy,
            svc.clock,
            edge_urls=edge_urls,
            admin_token=admin_token,
            private_key_pem=Path(key).read_bytes() if key else fallback_key_pem,
        )
        self.txt_resolver: dcv.TxtResolver = functools.partial(
            dcv.system_txt, nameservers=self.policy.dcv_dns_nameservers
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.roster.start()

    async def stop(self) -> None:
        await self.roster.stop()
        if self._session is not None:
            await self._session.close()

    async def _write(self, fn: Any, *args: Any) -> Any:
        out = await self.svc.store.run(fn, *args)
        self.roster.kick()
        if self.svc.sender is not None:  # a level drop queues a notification
            self.svc.sender.kick()
        return out

    def _now(self) -> float:
        return self.svc.clock()

    async def _cid(self, ref: str) -> int:
        cid = await self.svc.store.run(customers.customer_id, ref)
        if cid is None:
            raise LookupError(f"no customer {ref}")
        return int(cid)

    async def owner_relations(
        self, customer: str | None, host: str | None, account: Account
    ) -> frozenset[Any]:
        """OWNER when the route names the account's own customer or one of its sites."""
        from proxy.takedown.authz import Relation

        if account.customer_id is None:
            return frozenset()

        def owner(conn: Any) -> bool:
            if customer is not None:
                return customers.customer_id(conn, customer) == account.customer_id
            try:
                key = site_key(host or "")
            except ValueError:
                return False
            row = conn.execute("SELECT customer_id FROM sites WHERE host = ?", (key,)).fetchone()
            return row is not None and row[0] == account.customer_id

        return frozenset({Relation.OWNER}) if await self.svc.store.run(owner) else frozenset()

    # -- customers and sites ------------------------------------------------------------------

    async def customers(self) -> list[dict[str, Any]]:
        return await self.svc.store.run(customers.list_customers, self._now(), self.policy)

    async def customer(self, ref: str) -> dict[str, Any]:
        view = await self.svc.store.run(
            customers.customer_view, await self._cid(ref), self._now(), self.policy
        )
        if view is None:
            raise LookupError(f"no customer {ref}")
        return view

    async def record_identity(self, acct: Account, ref: str, fields: dict[str, Any]) -> Any:
        return await self._write(
            customers.record_identity,
            await self._cid(ref),
            fields,
            self._now(),
            actor_of(acct),
            self.policy,
        )

    async def add_evidence(self, acct: Account, ref: str, body: dict[str, Any]) -> Any:
        return await self._write(
            customers.add_evidence,
            await self._cid(ref),
            body,
            self._now(),
            acct.id,
            actor_of(acct),
            self.policy,
        )

    async def revoke_evidence(self, acct: Account, ref: str, eid: int) -> Any:
        return await self._write(
            customers.revoke_evidence,
            await self._cid(ref),
            eid,
            self._now(),
            actor_of(acct),
            self.policy,
        )

    async def sites(self) -> list[dict[str, Any]]:
        return await self.svc.store.run(customers.list_sites, self._now(), self.policy)

    async def site(self, host: str) -> dict[str, Any]:
        view = await self.svc.store.run(
            customers.site_view, site_key(host), self._now(), self.policy
        )
        if view is None:
            raise LookupError(f"no site {host}")
        return view

    async def put_site(self, acct: Account, host: str, customer: str) -> dict[str, Any]:
        """Add a site, or move it to another customer (created on first use)."""
        key = await self._write(customers.assign_site, host, customer, self._now(), actor_of(acct))
        return await self.site(key)

    # -- domain-control validation -----------------------------------------------------------

    async def start_validation(self, acct: Account, host: str, method: str) -> Any:
        return await self._write(
            dcv.start, site_key(host), method, self._now(), actor_of(acct), self.policy
        )

    async def check_validation(self, acct: Account, host: str, vid: int) -> dict[str, Any]:
        host = site_key(host)
        row = await self.svc.store.run(dcv.pending, host, vid, self._now())
        why = dcv.checkable(row, self._now())
        if why is not None:
            raise customers.Invalid(why)
        error = None
        try:
            if row["method"] == dcv.Method.HTTP:
                assert self._session is not None
                await dcv.check_http(
                    self._session, host, row["token"], row["key_authorization"], self.policy
                )
            else:
                await dcv.check_dns(self.txt_resolver, host, row["key_authorization"], self.policy)
        except dcv.ChallengeFailed as exc:
            error = str(exc)
        out: dict[str, Any] = await self._write(
            dcv.record_result, vid, error, self._now(), actor_of(acct), self.policy
        )
        return out

    # -- accounts ------------------------------------------------------------------------------

    async def accounts(self) -> list[dict[str, Any]]:
        return await self.svc.store.run(account_ops.list_accounts)

    async def disable_account(self, acct: Account, account_id: int) -> dict[str, Any]:
        out = await self.svc.store.run(
            account_ops.disable, account_id, self._now(), actor_of(acct), acct.id
        )
        self.svc.forget_accounts()
        return out

    async def rotate_key(self, acct: Account, account_id: int) -> dict[str, Any]:
        key = await self.svc.store.run(
            account_ops.rotate_key, account_id, self._now(), actor_of(acct)
        )
        self.svc.forget_accounts()
        return {"account": account_id, "key": key}

    # -- disclosures and the roster ------------------------------------------------------------

    async def record_disclosure(self, acct: Account, body: dict[str, Any]) -> Any:
        return await self.svc.store.run(disclosure.record, body, self._now(), acct)

    async def disclose(self, acct: Account, case_id: int) -> Any:
        return await self.svc.store.run(disclosure.disclose, case_id, self._now(), acct)

    async def reject_disclosure(self, acct: Account, case_id: int, reason: str) -> Any:
        return await self.svc.store.run(disclosure.reject, case_id, reason, self._now(), acct)

    async def disclosure(self, case_id: int) -> Any:
        return await self.svc.store.run(disclosure.view, case_id)

    async def roster_status(self) -> dict[str, Any]:
        return await self.svc.store.run(roster.deliveries)
