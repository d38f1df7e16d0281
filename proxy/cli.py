"""`edgeproxy`: serve, check-config, init, demo, status, blocklist …, takedown …"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from proxy.config import Config, ConfigError, from_flags, load
from proxy.identity import python_version, version
from proxy.node.servicelog import configure as configure_log


def _token(path: str) -> str:
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read admin token file: {e.strerror}", path) from e
    return os.environ.get("EDGEPROXY_ADMIN_TOKEN", "").strip()


def _config_from_args(args: argparse.Namespace) -> Config:
    base = load(args.config) if args.config else Config()
    if not args.config and not args.origin:
        raise ConfigError("give --origin URL or --config FILE")
    return _with_flags(base, args)


def _with_flags(base: Config, args: argparse.Namespace) -> Config:
    """`base` (the config file) with the command line's flags applied: at start and again at
    every SIGHUP, so a reload re-reads the file without losing `--workers` and the rest."""
    cfg = from_flags(
        listen=args.listen or "",
        origin=args.origin or "",
        admin=args.admin,
        workers=args.workers if args.workers is not None else -1,
        base=base,
    )
    changes: dict[str, object] = {}
    if args.listen_tls:  # checked with the certificate flags below, not before them
        changes["listen_tls"] = args.listen_tls
    if args.tls_cert or args.tls_key:
        changes["tls"] = msgspec.structs.replace(
            cfg.tls, cert_file=args.tls_cert or "", key_file=args.tls_key or ""
        )
    bl = cfg.blocklist
    if args.blocklist_dir or args.blocklist_key or args.allow_empty_blocklist:
        bl = msgspec.structs.replace(
            bl,
            dir=args.blocklist_dir or bl.dir,
            public_key=args.blocklist_key or bl.public_key,
            allow_empty=args.allow_empty_blocklist or bl.allow_empty,
        )
        changes["blocklist"] = bl
    cache = cfg.cache
    if args.memory_cache_bytes is not None:
        cache = msgspec.structs.replace(cache, memory_cache_bytes=args.memory_cache_bytes)
    if args.node_tier_bytes is not None:
        cache = msgspec.structs.replace(cache, node_tier_bytes=args.node_tier_bytes)
    if args.node_tier_preallocate is not None:
        cache = msgspec.structs.replace(cache, node_tier_preallocate=args.node_tier_preallocate)
    if cache is not cfg.cache:
        changes["cache"] = cache
    if args.state_dir:
        changes["state_dir"] = args.state_dir
    if args.fleet or args.fleet_node:
        changes["fleet"] = msgspec.structs.replace(
            cfg.fleet,
            redis_url=args.fleet or cfg.fleet.redis_url,
            node_name=args.fleet_node or cfg.fleet.node_name,
        )
    log = cfg.log
    if args.access_log is not None:
        log = msgspec.structs.replace(log, access_log=args.access_log)
    if args.log_format is not None:
        log = msgspec.structs.replace(log, format=args.log_format)
    if log is not cfg.log:
        changes["log"] = log
    if changes:
        from proxy.config import validate

        cfg = validate(msgspec.structs.replace(cfg, **changes))
    return cfg


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (sites, limits, cache, …)")
    p.add_argument("--listen", help="HOST:PORT for client traffic (default 127.0.0.1:8080)")
    p.add_argument(
        "--listen-tls", help="HOST:PORT for HTTPS clients (TLS terminated here; default: none)"
    )
    p.add_argument("--tls-cert", help="default certificate chain (PEM) for --listen-tls")
    p.add_argument("--tls-key", help="its private key (PEM)")
    p.add_argument("--origin", help="origin URL; with it every Host goes to this origin")
    p.add_argument("--admin", default=None, help="HOST:PORT of the admin API ('' to disable)")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--admin-token-file", default="", help="file holding the admin bearer token")
    p.add_argument("--blocklist-dir", help="directory of signed blocklist versions to follow")
    p.add_argument("--blocklist-key", help="Ed25519 public key (PEM) that signs those versions")
    p.add_argument(
        "--allow-empty-blocklist",
        action="store_true",
        help="start even when --blocklist-dir holds no valid version",
    )
    p.add_argument("--memory-cache-bytes", type=int, help="memory tier size for the whole node")
    p.add_argument(
        "--node-tier-bytes",
        type=int,
        help="node tier size (shared by the workers, kept across restarts; 0: none)",
    )
    p.add_argument(
        "--node-tier-preallocate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reserve the node tier's disk at start: stores through a writable map "
        "(cache.node_tier_preallocate, on by default where the filesystem and disk allow)",
    )
    p.add_argument("--cache-clear", action="store_true", help="start with an empty node tier")
    p.add_argument(
        "--state-dir",
        help="where pushed entries and versions persist (default: $STATE_DIRECTORY, "
        "/var/lib/edgeproxy as root, else $XDG_STATE_HOME/edgeproxy or ~/.local/state/edgeproxy)",
    )
    p.add_argument(
        "--fleet",
        help="follow the fleet's takedown feed on Redis, e.g. redis://127.0.0.1:6379/0 "
        "(needs --blocklist-key)",
    )
    p.add_argument("--fleet-node", help="this node's name in the fleet (default: the host name)")
    p.add_argument("--access-log", help="'-' for stdout or a file path")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="the service log on stderr: text (default) or json, one event a line "
        "(overrides [log] format)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)
    configure_log(cfg.log.format, process="supervisor")
    # The flag wins over the config's [admin] token_file; the environment comes last.
    token = _token(args.admin_token_file or cfg.admin.token_file)
    from proxy.admin.app import start_admin
    from proxy.node.supervisor import serve

    return _run(
        serve(
            cfg,
            config_path=args.config,
            load_config=lambda path: _with_flags(load(path), args),
            admin_token=token,
            start_admin=start_admin,
            cache_clear=args.cache_clear,
        )
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load(args.file)
    print(
        f"{args.file}: OK: {len(cfg.sites)} site(s), listen {cfg.listen}, "
        f"{cfg.worker_count()} worker(s), memory cache {cfg.cache.memory_cache_bytes} bytes"
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write the shipped example config (every setting at its default, two sites) to start from."""
    from importlib.resources import files

    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"edgeproxy: {path} exists; give --force to overwrite it", file=sys.stderr)
        return 1
    text = files("proxy.data").joinpath("edgeproxy.example.toml").read_text()
    path.write_text(text)
    print(f"wrote {path}; edit its [[sites]], then: edgeproxy check-config {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.fleet:  # redis-server, N nodes and the takedown service (proxy/fleet/demo.py)
        from proxy.fleet.demo import run_fleet_demo

        configure_log("text", process="fleet-demo")
        return _run(
            run_fleet_demo(
                args.fleet, for_s=args.for_s, service_port=8450, origin_port=args.origin_port
            )
        )
    from proxy.admin.app import start_admin
    from proxy.node.demo import run_demo

    configure_log("text", process="supervisor")

    return _run(
        run_demo(
            args.listen,
            args.admin,
            args.origin_port,
            args.workers,
            start_admin=start_admin,
            listen_tls=args.listen_tls if args.tls else "",
        )
    )


def cmd_status(args: argparse.Namespace) -> int:
    from proxy.admin.status import show_status

    return _run(show_status(args.admin, timeout_s=args.timeout, as_json=args.json))


def _run(coro: object) -> int:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type,no-any-return]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeproxy",
        description="An RFC 9111 edge cache that enforces copyright takedowns.",
    )
    parser.add_argument(
        "--version", action="version", version=f"edgeproxy {version()} (Python {python_version()})"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run an edge node")
    _add_serve_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="validate a config file and explain errors")
    p.add_argument("file", help="the TOML config to check")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("init", help="write a starter config (the shipped example) to edit")
    p.add_argument(
        "path",
        nargs="?",
        default="edgeproxy.toml",
        help="where to write it (default edgeproxy.toml)",
    )
    p.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "demo", help="an edge node on its defaults in front of a bundled demo origin"
    )
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT for client traffic")
    p.add_argument("--admin", default="127.0.0.1:8081", help="HOST:PORT of the admin API")
    p.add_argument("--origin-port", type=int, default=9000, help="port of the bundled demo origin")
    # One worker: each worker has its own memory tier, and two curls on new connections must
    # meet the same cache to show a MISS and then a HIT (`serve` defaults to one per core).
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--tls",
        action="store_true",
        help="also serve HTTPS, with a certificate from a local CA made for this run",
    )
    p.add_argument("--listen-tls", default="127.0.0.1:8443", help="HOST:PORT for HTTPS with --tls")
    p.add_argument(
        "--fleet",
        type=int,
        metavar="N",
        help="a fleet instead: redis-server, N edge nodes (ports 8080+) and the takedown "
        "service on 8450, to watch one notice reach every node",
    )
    p.add_argument(
        "--for-s", type=float, default=1800.0, help="with --fleet: stop after this many seconds"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="one-screen summary of a running node")
    from proxy.admin.status import add_status_options

    add_status_options(p)
    p.set_defaults(func=cmd_status)

    from proxy.blocklist.cli import add_commands as add_blocklist
    from proxy.takedown.cli import add_commands as add_takedown

    add_blocklist(sub)
    add_takedown(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_log("text", process="edgeproxy")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "takedown":
        from proxy.takedown.cli import run as run_takedown

        fn = run_takedown
    else:
        fn = getattr(args, "func", None)
    if fn is None:
        parser.print_help()
        return 2
    try:
        return int(fn(args) or 0)
    except ConfigError as e:
        print(f"edgeproxy: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from proxy.admin.app import AdminRefused
        from proxy.blocklist.node import StartupRefused
        from proxy.node.supervisor import ListenRefused

        if isinstance(e, AdminRefused | StartupRefused | ListenRefused | OSError):
            print(f"edgeproxy: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
