"""`edgeproxy takedown set-password`, and starting the desk's listener beside the API.

The password never travels on the command line (ps, shell history): it is read from stdin
(`--password-stdin`, for scripts) or prompted for twice on a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import ssl
import sys
import time
from typing import TYPE_CHECKING

from proxy.takedown.desk import passwords
from proxy.takedown.store import Store

if TYPE_CHECKING:  # the parser is built for every command: no aiohttp import until serving
    from aiohttp import web

    from proxy.takedown.service import TakedownService


def add_set_password(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = cmds.add_parser(
        "set-password", help="give an operator or admin account a desk login and password"
    )
    p.add_argument("--db", required=True, help="the service's SQLite database file")
    p.add_argument("--account", type=int, required=True, help="the account's id")
    p.add_argument("--login", help="the name to sign in with (default: the account's name)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of prompting",
    )
    p.set_defaults(takedown_fn=set_password)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new desk password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def set_password(args: argparse.Namespace) -> int:
    try:
        password = _read_password(args.password_stdin)
        if len(password) < passwords.MIN_LENGTH:
            raise ValueError(f"a desk password has at least {passwords.MIN_LENGTH} characters")
    except (ValueError, EOFError) as exc:
        print(f"set-password: {exc}", file=sys.stderr)
        return 2
    hashed = passwords.hash_password(password)
    store = Store(args.db)
    try:
        name = store.run_sync(
            lambda conn: conn.execute(
                "SELECT name FROM accounts WHERE id = ?", (args.account,)
            ).fetchone()
        )
        login = args.login or (name[0] if name else "")
        store.run_sync(passwords.set_password, args.account, login, hashed, time.time())
    except ValueError as exc:
        print(f"set-password: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"account {args.account} signs in to the desk as {login!r}; its old sessions ended")
    return 0


async def start_desk(svc: TakedownService, listen: tuple[str, int]) -> web.AppRunner:
    """Serve the console and the public form; TLS when `[desk] tls_cert_file` is set."""
    from aiohttp import web

    from proxy.takedown.desk.build import build_desk_app

    cfg = svc.cfg.desk
    context = None
    if cfg.tls_cert_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None)
    runner = web.AppRunner(build_desk_app(svc), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listen[0], listen[1], ssl_context=context)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else listen[1]
    scheme = "https" if context else "http"
    print(f"takedown desk on {scheme}://{listen[0]}:{port}/desk/ (public form /notice)", flush=True)
    return runner
