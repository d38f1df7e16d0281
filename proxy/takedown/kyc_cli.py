"""`edgeproxy takedown …` commands for customer verification: the CLI side of `kyc_api.py`.

    customers    list customers, or --show one (identity, evidence, sites, accounts)
    sites        list sites with level and live state, --show one, or --add HOST --customer C
    identity     record or correct a customer's identity record
    evidence     record what a reviewer checked (method, document reference or file hash)
    dcv          start or check a domain-control validation of a site
    accounts     list accounts, --disable ID, --rotate-key ID
    disclosure   record a court order / 512(h) subpoena, disclose, or reject it
    roster       the newest site roster and which edges took it

They work on the database directly, like add-site; a running service notices the change at its
next verification pass (`[verification] check_interval_s`) and publishes the roster then. Output
is JSON, so scripts read it the way they read the API.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from proxy.takedown import account_ops, config, customers, dcv, disclosure, roster
from proxy.takedown.accounts import Account, Role
from proxy.takedown.elements import site_key
from proxy.takedown.states import Conflict
from proxy.takedown.store import Store

CLI = Account(0, "admin-cli", Role.ADMIN)
ACTOR = "admin-cli"


def add_commands(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def cmd(name: str, help: str, fn: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = cmds.add_parser(name, help=help)
        p.add_argument("--db", required=True, help="the service's SQLite database file")
        p.add_argument("--config", help="takedown TOML config (for [verification])")
        p.set_defaults(takedown_fn=lambda args: _run(args, fn))
        return p

    p = cmd("customers", "list customers or show one", _customers)
    p.add_argument("--show", metavar="CUSTOMER", help="show this customer (name or id)")
    p = cmd("sites", "list sites (level, live on the edges), show or add one", _sites)
    p.add_argument("--show", metavar="HOST", help="show this site (level, validations)")
    p.add_argument("--add", metavar="HOST", help="attach HOST to --customer (moves it if known)")
    p.add_argument("--customer", help="with --add: the customer (created on first use)")
    p = cmd("identity", "record or correct a customer's identity record", _identity)
    p.add_argument("--customer", required=True, help="the customer's name or id")
    for name in customers.REQUIRED + customers.OPTIONAL:
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            help=f"the record's {name} (kept if not given)",
        )
    p = cmd("evidence", "record verification evidence a reviewer checked", _evidence)
    p.add_argument("--customer", required=True, help="the customer's name or id")
    p.add_argument("--method", required=True, help="e.g. passport, company-register")
    p.add_argument("--document-ref", help="where the document is kept")
    p.add_argument("--document-file", help="the document: its SHA-256 is recorded, not its bytes")
    p.add_argument("--expires", type=dt.date.fromisoformat, help="YYYY-MM-DD (default: policy)")
    p.add_argument("--reviewer", type=int, required=True, help="the reviewing account's id")
    p = cmd("dcv", "start or check a domain-control validation", _dcv)
    p.add_argument("--host", required=True, help="the site (as added with add-site)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--start", choices=[m.value for m in dcv.Method], help="issue a challenge")
    g.add_argument("--check", type=int, metavar="ID", help="check validation ID now")
    p = cmd("accounts", "list accounts, disable one or rotate its key", _accounts)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--disable", type=int, metavar="ID", help="disable account ID (its key stops)")
    g.add_argument("--rotate-key", type=int, metavar="ID", help="the new key is printed once")
    p = cmd("disclosure", "record, disclose or reject a disclosure request", _disclosure)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--record",
        metavar="JSON",
        help="the order: kind, issuer, reference, date, document_sha256, requester, site",
    )
    g.add_argument("--disclose", type=int, metavar="CASE", help="disclose the identity (prints it)")
    g.add_argument("--reject", type=int, metavar="CASE", help="refuse the order (needs --reason)")
    p.add_argument("--reason", default="", help="with --reject")
    cmd("roster", "the newest site roster and its delivery to edges", _roster)


def _run(args: argparse.Namespace, fn: Any) -> int:
    policy = config.load(args.config).verification
    store = Store(args.db)
    try:
        out = fn(store, args, policy)
    except (customers.Invalid, LookupError, PermissionError, ValueError, Conflict) as exc:
        print(f"{args.takedown_command}: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(json.dumps(out, indent=2, default=str))
    return 0


def _cid(store: Store, ref: str) -> int:
    cid = store.run_sync(customers.customer_id, ref)
    if cid is None:
        raise LookupError(f"no customer {ref}")
    return int(cid)


def _customers(store: Store, args: argparse.Namespace, policy: Any) -> Any:
    if args.show:
        return store.run_sync(customers.customer_view, _cid(store, args.show), time.time(), policy)
    return store.run_sync(customers.list_customers, time.time(), policy)


def _sites(store: Store, args: argparse.Namespace, policy: Any) -> Any:
    if args.add:
        if not args.customer:
            raise customers.Invalid("--add needs --customer")
        args.show = store.run_sync(
            customers.assign_site, args.add, args.customer, time.time(), ACTOR
        )
    if args.show:
        view = store.run_sync(customers.site_view, site_key(args.show), time.time(), policy)
        if view is None:
            raise LookupError(f"no site {args.show}")
        return view
    return store.run_sync(customers.list_sites, time.time(), policy)


def _identity(store: Store, args: argparse.Namespace, policy: Any) -> Any:
    fields = {
        k: getattr(args, k)
        for k in customers.REQUIRED + customers.OPTIONAL
        if getattr(args, k) is not None
    }
    cid = _cid(store, args.customer)
    return store.run_sync(customers.record_identity, cid, fields, time.time(), ACTOR, policy)


def _evidence(store: Store, args: argparse.Namespace, policy: Any) -> Any:
    body: dict[str, Any] = {"method": args.method, "document_ref": args.document_ref}
    if args.document_file:
        body["document_sha256"] = hashlib.sha256(Path(args.document_file).read_bytes()).hexdigest()
    if args.expires:
        body["expires_at"] = dt.datetime.combine(args.expires, dt.time(), dt.UTC).timestamp()

    def reviewer_ok(conn: sqlite3.Connection) -> bool:
        row = conn.execute(
            "SELECT role FROM accounts WHERE id = ? AND disabled_at IS NULL", (args.reviewer,)
        ).fetchone()
        return row is not None and row[0] in (Role.OPERATOR.value, Role.ADMIN.value)

    if not store.run_sync(reviewer_ok):
        raise customers.Invalid(f"account {args.reviewer} is not an enabled operator or admin")
    cid = _cid(store, args.customer)
    return store.run_sync(
        customers.add_evidence, cid, body, time.time(), args.reviewer, ACTOR, policy
    )


def _dcv(store: Store, args: argparse.Namespace, policy: Any) -> Any:
    host = site_key(args.host)
    if args.start:
        return store.run_sync(dcv.start, host, args.start, time.time(), ACTOR, policy)
    row = store.run_sync(dcv.pending, host, args.check, time.time())
    why = dcv.checkable(row, time.time())
    if why is not None:
        raise customers.Invalid(why)
    error = asyncio.run(_check(row, host, policy))
    return store.run_sync(dcv.record_result, args.check, error, time.time(), ACTOR, policy)


async def _check(row: Any, host: str, policy: Any) -> str | None:
    try:
        if row["method"] == dcv.Method.HTTP:
            async with aiohttp.ClientSession(auto_decompress=False) as s:
                await dcv.check_http(s, host, row["token"], row["key_authorization"], policy)
        else:

            async def resolve(name: str, timeout_s: float) -> list[str]:
                return await dcv.system_txt(name, timeout_s, policy.dcv_dns_nameservers)

            await dcv.check_dns(resolve, host, row["key_authorization"], policy)
    except dcv.ChallengeFailed as exc:
        return str(exc)
    return None


def _accounts(store: Store, args: argparse.Namespace, policy: Any) -> Any:
    if args.disable is not None:
        return store.run_sync(account_ops.disable, args.disable, time.time(), ACTOR)
    if args.rotate_key is not None:
        key = store.run_sync(account_ops.rotate_key, args.rotate_key, time.time(), ACTOR)
        return {"account": args.rotate_key, "key": key}
    return store.run_sync(account_ops.list_accounts)


def _disclosure(store: Store, args: argparse.Namespace, policy: Any) -> Any:
    if args.record:
        try:
            body = json.loads(args.record)
        except ValueError:
            raise customers.Invalid("--record takes a JSON object") from None
        return store.run_sync(disclosure.record, body, time.time(), CLI)
    if args.disclose is not None:
        return store.run_sync(disclosure.disclose, args.disclose, time.time(), CLI)
    return store.run_sync(disclosure.reject, args.reject, args.reason, time.time(), CLI)


def _roster(store: Store, args: argparse.Namespace, policy: Any) -> Any:
    return store.run_sync(roster.deliveries)
