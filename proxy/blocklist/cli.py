"""`edgeproxy blocklist …`: keys, signing and checking version files, and the admin-API client.

    keygen --out-dir DIR                         a new Ed25519 signing keypair
    sign --key PRIV --sequence N [--base M] [--table] IN OUT
                                                 --table: also the compiled table + signed
                                                 manifest beside OUT (proxy/blocklist/shipped.py)
    verify --key PUB [--progress] FILE           exit 0, or 1 with "file:line: reason"
    compile --key PUB [--progress] FILE|DIR OUT  verify, then write the mapped table workers load
    show --key PUB FILE|DIR                      sequence, counts by type, signature status
    digest [--content-encoding CE] FILE          the value of a sha256 entry for a saved body
    push --admin URL (--id … --type … --value … | --file entries.jsonl)
    push --fleet REDIS_URL (--key PRIV entries… | --version FILE|DIR [--key PUB])
    remove --admin URL ID
    status --admin URL

Long commands (verify, compile) report progress (entries done, entries/s, ETA) on stderr when
it is a terminal, or with --progress.

The admin commands send `Authorization: Bearer $EDGEPROXY_ADMIN_TOKEN`. Every handler takes the
parsed namespace and returns the exit status; `main(argv)` runs one command line (tests use it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from proxy.blocklist.digest import DecodeLimits, IdentityHasher
from proxy.blocklist.format import (
    AddLine,
    BlocklistError,
    Reading,
    RemoveLine,
    key_id,
    list_versions,
    load_newest,
    read_version,
    render_version,
    write_atomic,
    write_full_version_streamed,
)
from proxy.blocklist.model import CompiledById, Entry, EntryType, InvalidEntry, validate_entry

TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"
ADMIN_URL_ENV = "EDGEPROXY_ADMIN_URL"
PRIVATE_KEY_NAME = "blocklist-signing.key"
PUBLIC_KEY_NAME = "blocklist-signing.pub"
DEFAULT_MAX_BYTES = 1 << 30


class CommandError(Exception):
    """A message for the operator; the command exits 1."""


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _read_key(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read key {path}: {exc.strerror or exc}") from None


def _counts(entries: Sequence[Entry]) -> str:
    counts = dict.fromkeys(EntryType, 0)
    for entry in entries:
        counts[EntryType(entry.type)] += 1
    return " ".join(f"{t.value}={n}" for t, n in counts.items())


# -- offline commands -----------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from proxy.blocklist.format import generate_keypair

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    if not args.force and (priv_path.exists() or pub_path.exists()):
        raise CommandError(f"{priv_path} or {pub_path} exists; use --force to replace")
    private_pem, public_pem = generate_keypair()
    write_atomic(priv_path, private_pem, mode=0o600)
    write_atomic(pub_path, public_pem)
    print(f"private key: {priv_path} (keep secret; signs versions)")
    print(f"public key:  {pub_path} (give to edges; verifies versions)")
    print(f"key id:      {key_id(public_pem)}")
    return 0


def parse_input(path: str, *, allow_removes: bool) -> tuple[list[Entry], list[str]]:
    """Entries (and remove ids) from a JSON Lines file: one Entry object per line, optionally
    with "op":"add", or {"op":"remove","id":…}. Blank lines are skipped."""
    adds: list[Entry] = []
    removes: list[str] = []
    for item in read_input(path, allow_removes=allow_removes):
        if isinstance(item, str):
            removes.append(item)
        else:
            adds.append(item)
    return adds, removes


def read_input(path: str, *, allow_removes: bool) -> Iterator[Entry | str]:
    """`parse_input` one line at a time (a remove is its id): the whole file is never held,
    so a full version of 100M entries can be signed."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a generator's `with` is the same
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = msgspec.json.decode(raw)
                if not isinstance(obj, dict):
                    raise CommandError(f"{path}:{number}: expected a JSON object")
                obj.setdefault("op", "add")
                item = msgspec.convert(obj, AddLine | RemoveLine)
            except msgspec.MsgspecError as exc:
                raise CommandError(f"{path}:{number}: {exc}") from None
            if isinstance(item, RemoveLine):
                if not allow_removes:
                    raise CommandError(f"{path}:{number}: removes need a delta (--base)")
                yield item.id
                continue
            entry = Entry(item.id, item.type, item.value, item.notice, item.reason, item.expires_at)
            try:
                validate_entry(entry)
            except InvalidEntry as exc:
                raise CommandError(f"{path}:{number}: {exc}") from None
            yield entry


def _input_entries(path: str) -> Iterator[Entry]:
    for item in read_input(path, allow_removes=False):
        assert isinstance(item, Entry)
        yield item


def cmd_sign(args: argparse.Namespace) -> int:
    private_pem = _read_key(args.key)
    if args.valid_for_s is not None and args.valid_until is not None:
        raise CommandError("give --valid-for-s or --valid-until, not both")
    valid_until = args.valid_until
    if args.valid_for_s is not None:
        if not args.valid_for_s > 0:
            raise CommandError("--valid-for-s must be a positive number of seconds")
        valid_until = time.time() + args.valid_for_s
    if valid_until is not None and valid_until <= time.time():
        raise CommandError("--valid-until is already in the past")
    if args.table and args.base is not None:
        raise CommandError("--table ships with a full version only (no --base)")
    if args.base is None:
        return _sign_full(args, private_pem, valid_until)
    adds, removes = parse_input(args.input, allow_removes=True)
    try:
        data = render_version(
            args.sequence,
            adds,
            base=args.base,
            removes=removes,
            private_key_pem=private_pem,
            valid_until=valid_until,
        )
        write_atomic(Path(args.output), data)
    except (ValueError, OSError) as exc:
        raise CommandError(f"cannot sign: {exc}") from None
    print(
        f"signed {args.output}: sequence {args.sequence} (delta on {args.base}), "
        f"{len(adds)} adds, {len(removes)} removes"
    )
    return 0


def _sign_full(args: argparse.Namespace, private_pem: bytes, valid_until: float | None) -> int:
    """A full version, streamed from the input (`format.write_full_version_streamed`): memory
    does not grow with the list. With --table the version is written under a name watchers
    ignore, its companions beside OUT from a second pass over the input, and only then is it
    renamed to OUT: a watcher that sees the version finds them."""
    out = Path(args.output)
    staged = out.with_name(f".{out.name}.staged") if args.table else out
    show = _progress(args)
    before = _identity(args.input)
    try:
        header = write_full_version_streamed(
            staged,
            args.sequence,
            _input_entries(args.input),
            private_key_pem=private_pem,
            valid_until=valid_until,
            progress=lambda done: show("sign", done, 0),
        )
        show("sign", header.entries, header.entries)
        if args.table:
            _sign_table(args, staged, header.entries, private_pem)
            if _identity(args.input) != before:  # the table could hold other entries
                raise CommandError(f"{args.input} changed while it was signed; nothing written")
            os.replace(staged, out)
    except BaseException as exc:
        if staged != out:  # no companions without their version
            from proxy.blocklist.shipped import companions

            for companion in companions(out):
                companion.unlink(missing_ok=True)
        if isinstance(exc, (ValueError, OSError)):
            raise CommandError(f"cannot sign: {exc}") from None
        raise
    finally:
        if staged != out:
            staged.unlink(missing_ok=True)
    print(f"signed {out}: sequence {args.sequence} (full), {header.entries} adds, 0 removes")
    return 0


def _identity(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _sign_table(args: argparse.Namespace, staged: Path, total: int, key: bytes) -> None:
    """`sign --table`: the compiled table and its signed manifest beside OUT, for the version
    written at `staged` (proxy/blocklist/shipped.py)."""
    from proxy.blocklist.shipped import companions, write_companions

    with open(staged, "rb") as f:
        header_line = f.readline()
    show = _progress(args)
    show("compile", 0, total)
    manifest = write_companions(
        Path(args.output),
        header_line,
        _input_entries(args.input),
        key,
        progress=lambda done: show("compile", done, total),
    )
    show("compile", total, total)
    table, signed = companions(Path(args.output))
    print(
        f"compiled {table}: {manifest.entries} entries, {manifest.keys} keys, "
        f"{manifest.table_bytes} bytes; manifest {signed} (canonicaliser "
        f"{manifest.canonicaliser})"
    )


class TerminalProgress:
    """One self-overwriting stderr line per phase: entries done of total, rate, ETA."""

    EVERY_S = 0.2

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.phase = ""
        self.started = self.shown = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if phase != self.phase:
            self.phase, self.started, self.shown = phase, now, 0.0
        finished = total > 0 and done >= total
        if not finished and now - self.shown < self.EVERY_S:
            return
        self.shown = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        share = f" ({done / total:.0%})" if total else ""
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 and total else "-"
        line = f"{phase}: {done:,} of {total:,} entries{share}, {rate:,.0f} entries/s, eta {eta}"
        sys.stderr.write(f"\r{line}\x1b[K" + ("\n" if finished else ""))
        sys.stderr.flush()


def _progress(args: argparse.Namespace) -> TerminalProgress:
    return TerminalProgress(bool(args.progress) or sys.stderr.isatty())


def cmd_verify(args: argparse.Namespace) -> int:
    public_pem = _read_key(args.key)
    show = _progress(args)
    try:
        v = read_version(
            args.file,
            public_pem,
            max_bytes=args.max_bytes,
            reading=Reading(progress=lambda done, total: show("verify", done, total)),
        )
    except BlocklistError as exc:
        print(f"INVALID {exc}", file=sys.stderr)
        return 1
    print(
        f"ok {v.path}: sequence {v.sequence}, signature ok (key id {v.key_id}), "
        f"{len(v.adds)} adds, {len(v.removes)} removes"
    )
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """What a node does with a version, by hand: verify it (the newest valid one of a
    directory), then write the mapped table (`proxy.blocklist.table`) and check it whole."""
    from proxy.blocklist.table import MappedTable, write_table

    public_pem = _read_key(args.key)
    show = _progress(args)
    target = Path(args.target)
    compiled: CompiledById = {}  # reading compiles each entry: the writer reuses it

    def read(done: int, total: int) -> None:
        show("verify", done, total)

    if target.is_dir():
        found, errors = load_newest(
            target,
            public_pem,
            current_sequence=None,
            max_bytes=args.max_bytes,
            reading=Reading(progress=read, compiled=compiled, processes=args.processes),
        )
        for exc in errors:
            print(f"INVALID {exc}", file=sys.stderr)
        if found is None:
            return 1
        entries, sequence = found
    else:
        try:
            v = read_version(
                target,
                public_pem,
                max_bytes=args.max_bytes,
                reading=Reading(progress=read, compiled=compiled, processes=args.processes),
            )
        except BlocklistError as exc:
            print(f"INVALID {exc}", file=sys.stderr)
            return 1
        if v.base is not None:
            raise CommandError(f"{target} is a delta on {v.base}: give the directory")
        entries, sequence = list(v.adds), v.sequence
    out = Path(args.output)
    show("compile", 0, len(entries))
    info = write_table(
        out,
        entries,
        sequence,
        time.time(),
        progress=lambda done: show("compile", done, len(entries)),
        compiled=compiled,
    )
    show("compile", len(entries), len(entries))
    MappedTable(out).verify()
    print(
        f"compiled {out}: sequence {sequence}, {info.entries} entries ({_counts(entries)}), "
        f"{info.keys} keys, {info.bytes} bytes"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    public_pem = _read_key(args.key)
    target = Path(args.target)
    files = list_versions(target) if target.is_dir() else [target]
    if target.is_dir() and not files:
        raise CommandError(f"no *.jsonl versions in {target}")
    valid = 0
    for path in files:
        try:
            v = read_version(path, public_pem, max_bytes=args.max_bytes)
        except BlocklistError as exc:
            print(f"{path}: INVALID {exc.reason} (line {exc.line})")
            continue
        valid += 1
        kind = "full" if v.base is None else f"delta on {v.base}"
        print(
            f"{path}: sequence {v.sequence} ({kind}), created {_when(v.created_at)}, "
            f"signature ok (key id {v.key_id})"
        )
        print(f"  adds: {_counts(v.adds)}  removes: {len(v.removes)}")
    if target.is_dir():
        result, _errors = load_newest(
            target, public_pem, current_sequence=None, max_bytes=args.max_bytes
        )
        if result is None:
            print("newest: none usable")
            return 1
        entries, seq = result
        print(f"newest: sequence {seq}, {len(entries)} entries: {_counts(entries)}")
        return 0
    return 0 if valid else 1


# -- admin API client -----------------------------------------------------------------------


def _admin_request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    base = args.admin or os.environ.get(ADMIN_URL_ENV)
    if not base:
        raise CommandError(f"no admin URL: pass --admin or set {ADMIN_URL_ENV}")
    url = base.rstrip("/") + path
    headers = {"Accept": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            detail = str(json.loads(detail).get("error", detail))
        except (ValueError, AttributeError):
            pass
        hint = "" if token or exc.code not in (401, 403) else f" (is {TOKEN_ENV} set?)"
        raise CommandError(f"{method} {url}: HTTP {exc.code}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"{method} {url}: cannot reach the admin API: {reason}") from None
    try:
        return json.loads(payload)
    except ValueError:
        raise CommandError(f"{method} {url}: the answer is not JSON") from None


def _print_applied(answer: Any) -> None:
    workers = answer.get("workers", [])
    current = [w for w in workers if w.get("version") == answer.get("version")]
    print(
        f"applied version {answer.get('version')} at {_when(answer.get('applied_at'))} "
        f"in {len(current)}/{len(workers)} workers"
    )
    for w in workers:
        print(
            f"  worker {w.get('worker')} pid {w.get('pid')}: version {w.get('version')} "
            f"applied {_when(w.get('applied_at'))}"
        )


def _entry_json(entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": entry.id,
        "type": str(entry.type),
        "value": entry.value,
        "notice": entry.notice,
        "reason": entry.reason,
    }
    if entry.expires_at is not None:
        out["expires_at"] = entry.expires_at
    return out


def cmd_push(args: argparse.Namespace) -> int:
    if args.fleet:
        return _push_fleet(args)
    if args.version:
        raise CommandError("--version needs --fleet")
    entries = _push_input(args)
    answer = _admin_request(
        args, "POST", "/blocklist/entries", {"entries": [_entry_json(e) for e in entries]}
    )
    print(f"pushed {len(entries)} entries")
    _print_applied(answer)
    return 0


def _push_fleet(args: argparse.Namespace) -> int:
    """To the fleet feed on Redis (proxy/fleet/push.py) instead of one edge's admin API."""
    import asyncio

    from proxy.config import FleetConfig
    from proxy.fleet.feed import FeedError
    from proxy.fleet.push import push_entries, push_versions
    from proxy.fleet.url import parse_redis_url

    try:
        parse_redis_url(args.fleet)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    cfg = FleetConfig(redis_url=args.fleet, connect_timeout_s=args.timeout)
    try:
        if args.version:
            public = _read_key(args.key) if args.key else None
            seqs = asyncio.run(push_versions(cfg, args.version, public))
            print(f"published versions {seqs} to {args.fleet}" if seqs else "nothing new")
            return 0
        if not args.key:
            raise CommandError("--fleet with entries needs --key PRIVATE_KEY to sign them")
        seq = asyncio.run(push_entries(cfg, _push_input(args), _read_key(args.key)))
    except (FeedError, BlocklistError, OSError) as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - redis-py's errors: say what failed
        raise CommandError(f"{args.fleet}: {type(exc).__name__}: {exc}") from None
    print(f"published version {seq} to {args.fleet}")
    return 0


def _push_input(args: argparse.Namespace) -> list[Entry]:
    if args.file:
        if args.id or args.value:
            raise CommandError("give either --file or --id/--type/--value, not both")
        entries, _ = parse_input(args.file, allow_removes=False)
        if not entries:
            raise CommandError(f"{args.file}: no entries")
    else:
        if not (args.id and args.type and args.value):
            raise CommandError("--id, --type and --value are required (or --file)")
        entry = Entry(args.id, EntryType(args.type), args.value, args.notice, args.reason)
        if args.expires_at is not None:
            entry = Entry(
                entry.id, entry.type, entry.value, entry.notice, entry.reason, args.expires_at
            )
        try:
            validate_entry(entry)
        except InvalidEntry as exc:
            raise CommandError(str(exc)) from None
        entries = [entry]
    return entries


def cmd_remove(args: argparse.Namespace) -> int:
    quoted = urllib.parse.quote(args.entry_id, safe="")
    answer = _admin_request(args, "DELETE", f"/blocklist/entries/{quoted}")
    print(f"removed {args.entry_id}")
    _print_applied(answer)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The same form as `edgeproxy status` (proxy/admin/status.py), `--json` included."""
    import asyncio

    from proxy.admin.status import show_blocklist_status

    return asyncio.run(show_blocklist_status(args.admin, timeout_s=args.timeout, as_json=args.json))


def cmd_digest(args: argparse.Namespace) -> int:
    """A sha256 entry lists the identity representation, so a saved coded body (a `.gz`, a
    `curl --raw` capture) must be decoded first; the same limits as the edge apply, and a body
    the edge would refuse to deliver is reported as such."""
    hasher = IdentityHasher(args.content_encoding, DecodeLimits())
    try:
        with open(args.file, "rb") as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
                if hasher.failure is not None:
                    break
    except OSError as exc:
        raise CommandError(f"{args.file}: {exc.strerror}") from exc
    res = hasher.result()
    if res.failure is not None or res.identity is None:
        fail = res.failure.value if res.failure else "no digest"
        raise CommandError(f"{args.file}: {fail}: {res.detail}; the edge refuses this body")
    print(f"{res.identity.hex()}  {args.file}")
    if res.codings:
        print(f"as received ({', '.join(res.codings)}): {res.raw.hex()}", file=sys.stderr)
    return 0


# -- wiring ---------------------------------------------------------------------------------


Handler = Callable[[argparse.Namespace], int]


def _guarded(func: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except CommandError as exc:
            _err(str(exc))
            return 1

    run.__name__ = func.__name__
    return run


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `blocklist` and its subcommands; each sets `func(args) -> int`."""
    bl = sub.add_parser("blocklist", help="sign, check and push blocklist versions")
    cmds = bl.add_subparsers(dest="blocklist_command", required=True, metavar="COMMAND")

    _add_file_commands(cmds)
    _add_edge_commands(cmds)


def _add_file_commands(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands on keys and version files: keygen, sign, verify, show, digest."""
    p = cmds.add_parser("keygen", help="create an Ed25519 signing keypair")
    p.add_argument("--out-dir", required=True, help="directory for the .key and .pub files")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.set_defaults(func=_guarded(cmd_keygen))

    p = cmds.add_parser("sign", help="sign entries (JSON Lines) into a version file")
    p.add_argument("--key", required=True, help="private key PEM")
    p.add_argument(
        "--sequence",
        required=True,
        type=int,
        help="the version's number; nodes take only higher ones",
    )
    p.add_argument("--base", type=int, default=None, help="make a delta on this sequence")
    p.add_argument(
        "--valid-for-s",
        type=float,
        default=None,
        help="the list is vouched for this many seconds from now (nodes report stale after)",
    )
    p.add_argument("--valid-until", type=float, default=None, help="the same as a Unix time")
    p.add_argument(
        "--table",
        action="store_true",
        help="also write the compiled table and its signed manifest beside OUT (full versions):"
        " nodes map it instead of compiling the version",
    )
    p.add_argument("--progress", action="store_true", help="report the compile's progress")
    p.add_argument("input", help="entries, one JSON object per line")
    p.add_argument("output", help="version file to write (atomically)")
    p.set_defaults(func=_guarded(cmd_sign))

    for name, helptext, func in (
        ("verify", "check one version file's signature and content", cmd_verify),
        ("show", "summarise a version file or a directory of them", cmd_show),
        ("compile", "verify a version and write the mapped table workers load", cmd_compile),
    ):
        p = cmds.add_parser(name, help=helptext)
        p.add_argument("--key", required=True, help="public key PEM")
        p.add_argument(
            "--max-bytes",
            type=int,
            default=DEFAULT_MAX_BYTES,
            help="refuse larger version files (default %(default)s)",
        )
        if name != "show":
            p.add_argument(
                "--progress",
                action="store_true",
                help="show progress on stderr (default: only when it is a terminal)",
            )
        if name == "verify":
            p.add_argument("file", help="the version file")
        else:
            p.add_argument("target", help="a version file, or a directory of them")
        if name == "compile":
            p.add_argument("output", help="the compiled table to write (atomically)")
            p.add_argument(
                "--processes",
                type=int,
                default=1,
                help="read and canonicalise entries in this many processes (default 1)",
            )
        p.set_defaults(func=_guarded(func))

    p = cmds.add_parser("digest", help="the sha256 entry value of a body saved in a file")
    p.add_argument(
        "--content-encoding",
        action="append",
        default=[],
        metavar="CE",
        help="the body's Content-Encoding (e.g. gzip, 'gzip, br'); repeatable",
    )
    p.add_argument("file", help="the body as the origin sent it")
    p.set_defaults(func=_guarded(cmd_digest))


def _admin_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--admin", default=None, help=f"admin API base URL (or ${ADMIN_URL_ENV})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds")


def _add_edge_commands(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands on a running edge through its admin API: push, remove, status."""
    p = cmds.add_parser("push", help="add entries on a running edge (admin API)")
    _admin_options(p)
    p.add_argument("--id", help="the entry's id (one entry given by flags)")
    p.add_argument("--type", choices=[t.value for t in EntryType], help="what --value names")
    p.add_argument("--value", help="the URL, prefix, host or sha256 digest to block")
    p.add_argument("--notice", default="", help="the takedown notice it comes from")
    p.add_argument("--reason", default="", help="why it is blocked (for the audit trail)")
    p.add_argument("--expires-at", type=float, default=None, help="epoch seconds")
    p.add_argument("--file", help="entries, one JSON object per line")
    p.add_argument(
        "--fleet",
        metavar="REDIS_URL",
        help="publish to the fleet feed on Redis instead (entries are signed with --key into "
        "the version after the feed's head)",
    )
    p.add_argument(
        "--version",
        action="append",
        metavar="FILE|DIR",
        help="with --fleet: signed version files, or a directory's newest chain (repeatable)",
    )
    p.add_argument(
        "--key",
        help="with --fleet: the private key signing entries, or the public key checking --version",
    )
    p.set_defaults(func=_guarded(cmd_push))

    p = cmds.add_parser("remove", help="remove an entry on a running edge (admin API)")
    _admin_options(p)
    p.add_argument("entry_id", metavar="ID", help="the pushed entry's id")
    p.set_defaults(func=_guarded(cmd_remove))

    p = cmds.add_parser("status", help="a running edge's blocklist version and workers")
    from proxy.admin.status import add_status_options

    add_status_options(p)
    p.set_defaults(func=cmd_status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `blocklist …` command lines standalone: main(["blocklist", "verify", …])."""
    parser = argparse.ArgumentParser(prog="edgeproxy")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
