"""`edgeproxy takedown …` commands.

    serve        run the service (HTTP API, publisher, scheduler)
    add-account  create an API account; the key is printed on the last line
    add-site     attach a served host to a customer (created on first use)
    set-contact  a customer's or an account's email and signed webhook for notifications
    decide       an operator decision, sent over HTTP to a running service so publishing starts
                 at once (key from --key or $EDGEPROXY_TAKEDOWN_KEY)
    verify-log   check the audit log's hash chain; exit 1 naming the first bad record
    report       transparency report as json, csv or md, optionally with a PNG chart
    cases, case  the triage list and one case's timeline, read from the database (casefile.py)
    customers, sites, identity, evidence, dcv, accounts, disclosure, roster
                 customer verification (kyc_cli.py)
    fleet        every fleet node's acknowledged version from Redis; exit 1 when one is overdue

`add_commands` plugs these into the `edgeproxy` parser; `main(argv)` runs them standalone
(argv may start with "takedown").
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from proxy.config import FleetConfig
from proxy.takedown import accounts, anchor, audit, casefile, config, reports
from proxy.takedown.states import iso
from proxy.takedown.store import Store

if TYPE_CHECKING:
    from proxy.fleet.ack import FleetFeed
    from proxy.takedown.publisher import FileDrop


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected YYYY-MM-DD") from None


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    td = sub.add_parser("takedown", help="the takedown service")
    cmds = td.add_subparsers(dest="takedown_command", required=True)

    _add_service_commands(cmds)
    _add_operator_commands(cmds)
    casefile.add_commands(cmds)
    from proxy.takedown import kyc_cli  # customer verification (issue 15)

    kyc_cli.add_commands(cmds)


def _add_service_commands(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Running the service and setting it up: serve, add-account, add-site."""
    p = cmds.add_parser("serve", help="run the takedown service")
    p.add_argument(
        "--listen",
        type=_host_port,
        default=("127.0.0.1", 8450),
        help="HOST:PORT of the HTTP API (default 127.0.0.1:8450)",
    )
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    p.add_argument(
        "--edge",
        action="append",
        default=[],
        metavar="ADMIN_URL",
        help="an edge node's admin API (repeatable); token from EDGEPROXY_ADMIN_TOKEN",
    )
    p.add_argument("--blocklist-dir", help="also write each version into this directory")
    p.add_argument("--signing-key", help="Ed25519 private key (PEM) for file-drop versions")
    p.add_argument("--config", help="takedown TOML config")
    p.add_argument(
        "--desk-listen",
        type=_host_port,
        help="HOST:PORT of the desk console and public notice form (default: [desk] listen; "
        "not served when neither is set)",
    )
    p.add_argument(
        "--fleet",
        metavar="REDIS_URL",
        help="also publish each version to the fleet feed on Redis (needs --blocklist-dir)",
    )
    p.add_argument(
        "--fleet-node",
        action="append",
        default=[],
        metavar="NAME",
        help="a fleet node whose acknowledgement each publication waits for (repeatable)",
    )
    p.set_defaults(takedown_fn=_serve)

    p = cmds.add_parser("fleet", help="every fleet node's version; exit 1 when one is overdue")
    p.add_argument("--fleet", required=True, metavar="REDIS_URL", help="the fleet feed")
    p.add_argument("--node", action="append", default=[], help="a node expected (repeatable)")
    p.add_argument("--config", help="takedown TOML config (deadlines.enforcement_s)")
    p.set_defaults(takedown_fn=_fleet)

    p = cmds.add_parser("add-account", help="create an API account")
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    p.add_argument("--name", required=True, help="the account's name (shown in the audit log)")
    p.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in accounts.Role],
        help="what the account may do: submit notices, be trusted (actioned at once), speak for "
        "a customer (customer), decide cases (operator), or everything (admin)",
    )
    p.add_argument("--customer", help="with --role customer: the customer it speaks for")
    p.set_defaults(takedown_fn=_add_account)

    p = cmds.add_parser("add-site", help="attach a served host to a customer")
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    p.add_argument("--host", required=True, help="a host name the customer serves through the edge")
    p.add_argument("--customer", required=True, help="the customer's name (created on first use)")
    p.add_argument(
        "--verification",
        choices=[v.value for v in accounts.Verification],
        help="how far the customer's identity was checked",
    )
    p.add_argument("--method", help="how the identity was verified")
    p.set_defaults(takedown_fn=_add_site)

    p = cmds.add_parser(
        "set-contact", help="where a customer's or an account's notifications are sent"
    )
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", help="a customer's name (takedown notices, warnings)")
    who.add_argument(
        "--account", type=int, help="an account's id (receipts, forwarded counter-notices)"
    )
    p.add_argument("--email", help="an email address")
    p.add_argument(
        "--webhook",
        help="an https URL POSTed to; its HMAC secret is printed on the last line (shown once)",
    )
    p.set_defaults(takedown_fn=_set_contact)

    from proxy.takedown.desk.cli import add_set_password

    add_set_password(cmds)


def _add_operator_commands(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """An operator's work against the service: decide, verify-log, report."""
    p = cmds.add_parser("decide", help="decide a case (operator)")
    p.add_argument("--server", required=True, help="the service's base URL")
    p.add_argument(
        "--key",
        default=os.environ.get("EDGEPROXY_TAKEDOWN_KEY", ""),
        help="the operator account's API key (default: $EDGEPROXY_TAKEDOWN_KEY, which keeps it "
        "out of ps and shell history)",
    )
    p.add_argument("--case", type=int, required=True, help="the case number to decide")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--action",
        dest="decision",
        action="store_const",
        const="action",
        help="take the content down (publish a blocklist entry)",
    )
    g.add_argument(
        "--reject",
        dest="decision",
        action="store_const",
        const="reject",
        help="refuse the notice; nothing is blocked",
    )
    p.add_argument("--reason", required=True, help="why, for the audit log and the notifier")
    p.set_defaults(takedown_fn=_decide)

    p = cmds.add_parser(
        "verify-log", help="verify the audit log's hash chain against its signed heads"
    )
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    p.add_argument("--heads", help="the signed heads file (default: <db>.heads.jsonl)")
    p.add_argument(
        "--key",
        help="the anchor's public (or private) key PEM (default: [anchor] signing_key of "
        "--config, else <db>.anchor.key.pub); without one, signatures are not checked",
    )
    p.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="JSON",
        help="a signed head kept elsewhere (an edge's GET /blocklist audit_head, a report's "
        "audit_anchor); repeatable",
    )
    p.add_argument("--config", help="takedown TOML config (for [anchor])")
    p.set_defaults(takedown_fn=_verify_log)

    p = cmds.add_parser("report", help="transparency report")
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    p.add_argument("--from", dest="start", type=_date, required=True, help="first day (YYYY-MM-DD)")
    p.add_argument("--to", dest="end", type=_date, required=True, help="last day (YYYY-MM-DD)")
    p.add_argument("--format", choices=["json", "csv", "md"], default="json", help="default json")
    p.add_argument("--chart", help="also write a PNG chart here")
    p.add_argument("--config", help="takedown TOML config (for the deadlines)")
    p.add_argument("--output", help="write the report here instead of stdout")
    p.add_argument("--heads", help="the signed heads file (default: <db>.heads.jsonl)")
    p.set_defaults(takedown_fn=_report)


def run(args: argparse.Namespace) -> int:
    rc: int = args.takedown_fn(args)
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["takedown"]:
        argv.insert(0, "takedown")
    parser = argparse.ArgumentParser(prog="edgeproxy")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


def _add_account(args: argparse.Namespace) -> int:
    store = Store(args.db)
    try:
        key = store.run_sync(
            accounts.create_account,
            args.name,
            accounts.Role(args.role),
            time.time(),
            args.customer,
        )
    except ValueError as exc:
        print(f"add-account: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"account {args.name!r} ({args.role}) created; its API key (shown once):")
    print(key)
    return 0


def _add_site(args: argparse.Namespace) -> int:
    store = Store(args.db)
    v = accounts.Verification(args.verification) if args.verification else None
    try:
        store.run_sync(accounts.add_site, args.host, args.customer, time.time(), v, args.method)
    finally:
        store.close()
    print(f"site {args.host.lower()} belongs to customer {args.customer!r}")
    return 0


def _set_contact(args: argparse.Namespace) -> int:
    from proxy.takedown import notify

    if not (args.email or args.webhook):
        print("set-contact: give --email, --webhook or both", file=sys.stderr)
        return 2

    def run(conn: sqlite3.Connection) -> str | None:
        if args.customer is not None:
            row = conn.execute("SELECT id FROM customers WHERE name = ?", (args.customer,))
            found = row.fetchone()
            if found is None:
                raise ValueError(f"no customer {args.customer!r}")
            party, pid = "customer", int(found[0])
        else:
            if (
                conn.execute("SELECT 1 FROM accounts WHERE id = ?", (args.account,)).fetchone()
                is None
            ):
                raise ValueError(f"no account {args.account}")
            party, pid = "account", args.account
        return notify.set_contact(
            conn, party, pid, time.time(), email=args.email, webhook_url=args.webhook
        )

    store = Store(args.db)
    try:
        secret = store.run_sync(run)
    except ValueError as exc:
        print(f"set-contact: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print("contact recorded")
    if secret:
        print("webhook secret (HMAC-SHA256 key for X-Edgeproxy-Signature; shown once):")
        print(secret)
    return 0


def _decide(args: argparse.Namespace) -> int:
    body = json.dumps({"decision": args.decision, "reason": args.reason}).encode()
    req = urllib.request.Request(
        f"{args.server.rstrip('/')}/cases/{args.case}/decision",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1


def _verify_log(args: argparse.Namespace) -> int:
    if not Path(args.db).exists():
        print(f"{args.db}: no such database", file=sys.stderr)
        return 1
    cfg = config.load(args.config)
    heads_path = Path(args.heads or cfg.anchor.heads_file or anchor.heads_path_for(args.db))
    key_path = args.key or cfg.anchor.signing_key or f"{args.db}.anchor.key.pub"
    public = None
    if Path(key_path).exists():
        public = anchor.public_key_of(Path(key_path).read_bytes())
    elif args.key:
        print(f"{args.key}: no such key", file=sys.stderr)
        return 2
    found = anchor.read_heads(heads_path, public)
    extra: list[anchor.SignedHead] = []
    for text in args.head:
        try:
            head = msgspec.json.decode(text, type=anchor.SignedHead)
        except msgspec.DecodeError as exc:
            print(f"--head: not a signed head: {exc}", file=sys.stderr)
            return 2
        why = anchor.verify_head(head, public) if public is not None else None
        if why is not None:
            found.problems.append(f"--head (record {head.seq}): {why}")
        else:
            extra.append(head)
    vouched, conflicts = anchor.vouched(found, extra, str(heads_path))
    store = Store(args.db)
    try:
        checked, problem = store.run_sync(audit.verify, vouched)
    finally:
        store.close()
    if problem is not None:
        print(f"audit log BROKEN at {problem} ({checked} records verified before it)")
    for p in found.problems + conflicts:
        print(f"signed heads BROKEN: {p}")
    last = max(vouched, default=0)
    if public is None:
        print(f"WARNING: no anchor key ({key_path}): head signatures were not checked")
    if problem is not None or found.problems or conflicts:
        return 1
    if not vouched and checked:
        print(
            f"audit log UNANCHORED: {checked} records, hash chain intact, but no signed head "
            f"in {heads_path} vouches for them"
        )
        return 1
    print(f"audit log OK: {checked} records, hash chain intact")
    latest = found.latest
    if latest is not None:
        print(
            f"anchored: records 1-{last} match {len(found.lines)} signed heads; latest: record "
            f"{latest.seq} {latest.hash} signed {iso(latest.at)} by key {latest.key_id}"
        )
    if checked > last:
        print(f"records {last + 1}-{checked} are newer than the last signed head (chain only)")
    return 0


def _report(args: argparse.Namespace) -> int:
    if args.end < args.start:
        print(
            f"report: --from {args.start} is after --to {args.end}: the range is reversed",
            file=sys.stderr,
        )
        return 2
    cfg = config.load(args.config)
    store = Store(args.db)
    try:
        rep = store.run_sync(reports.build, args.start, args.end, cfg, time.time())
    finally:
        store.close()
    heads = Path(args.heads or cfg.anchor.heads_file or anchor.heads_path_for(args.db))
    latest = anchor.read_heads(heads, None).latest
    rep["audit_anchor"] = latest.head().public() if latest else None
    text = {"json": reports.to_json, "csv": reports.to_csv, "md": reports.to_markdown}[args.format](
        rep
    )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if args.chart:
        reports.chart(rep, args.chart)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from proxy.takedown.publisher import FileDrop

    cfg = config.load(args.config)
    drop = None
    if args.blocklist_dir:
        if not args.signing_key:
            print("--blocklist-dir needs --signing-key", file=sys.stderr)
            return 2
        drop = FileDrop(
            args.blocklist_dir,
            Path(args.signing_key).read_bytes(),
            max_bytes=cfg.publish.file_drop_max_bytes,
            max_delta_chain=cfg.publish.file_drop_max_delta_chain,
            max_publications_per_version=cfg.publish.file_drop_max_publications_per_version,
        )
    desk = args.desk_listen or (_host_port(cfg.desk.listen) if cfg.desk.listen else None)
    fleet = None
    if args.fleet:
        if drop is None:
            print("--fleet needs --blocklist-dir and --signing-key", file=sys.stderr)
            return 2
        from proxy.fleet.ack import FleetFeed

        fleet = FleetFeed(
            FleetConfig(redis_url=args.fleet),
            drop,
            ack_wait_s=cfg.publish.request_timeout_s * 0.8,
        )
    asyncio.run(
        serve(
            args.listen,
            args.db,
            cfg,
            args.edge,
            os.environ.get("EDGEPROXY_ADMIN_TOKEN", ""),
            drop,
            desk_listen=desk,
            fleet=fleet,
            fleet_nodes=args.fleet_node,
        )
    )
    return 0


def _fleet(args: argparse.Namespace) -> int:
    from proxy.fleet.ack import fleet_report

    cfg = config.load(args.config)
    deadline = cfg.deadlines.enforcement_s
    head, nodes = asyncio.run(fleet_report(FleetConfig(redis_url=args.fleet), args.node, deadline))
    print(f"fleet feed head: version {head}")
    for n in nodes:
        when = iso(n.enforced_at) if n.enforced_at else "never"
        state = "OVERDUE" if n.overdue else ("behind" if n.behind else "current")
        wait = f", {n.behind} behind for {n.waiting_s:.0f} s" if n.behind else ""
        print(f"{n.name}: version {n.version} enforced {when}: {state}{wait}")
    return 1 if any(n.overdue for n in nodes) else 0


async def serve(
    listen: tuple[str, int],
    db: str,
    cfg: config.TakedownConfig,
    edges: list[str],
    token: str,
    file_drop: FileDrop | None = None,
    *,
    desk_listen: tuple[str, int] | None = None,
    fleet: FleetFeed | None = None,
    fleet_nodes: list[str] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM; prints the bound address once listening."""
    from aiohttp import web

    from proxy.takedown.api import build_app
    from proxy.takedown.service import TakedownService

    fleet_edges = fleet.edges(fleet_nodes or []) if fleet is not None else []
    svc = TakedownService(
        db, cfg, edge_urls=edges, admin_token=token, file_drop=file_drop, edges=fleet_edges
    )
    if fleet is not None:  # the fleet's nodes acknowledge through Redis (proxy/fleet/ack.py)
        fleet.bind(svc.store)
        fleet.start()
    runner = web.AppRunner(build_app(svc), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listen[0], listen[1])
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else listen[1]
    desk = None
    if desk_listen is not None:  # the console and the public form, on their own listener
        from proxy.takedown.desk.cli import start_desk

        desk = await start_desk(svc, desk_listen)
    print(f"takedown service listening on http://{listen[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":  # no loop signal handlers there; Ctrl-C still ends the run
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if desk is not None:
            await desk.cleanup()
        await runner.cleanup()
        if fleet is not None:
            await fleet.close()
