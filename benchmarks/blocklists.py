"""Signed blocklist versions of a given size, for the hit-cost and apply-under-load scenarios.

Entries are a realistic mix (url, prefix, host, sha256) none of which matches what the hit
scenarios fetch, plus optional probe entries the runner uses to see when a version is enforced.
Versions are cached under `results/.blocklists/` (keyed by size and sequence) because writing a
million signed entries takes a while.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CACHE_DIR = Path(__file__).parent / "results" / ".blocklists"

# The [blocklist] section of a benchmark edge's config (a config file needs a site).
LIST_CONFIG = """[blocklist]
max_file_bytes = {max_file_bytes}
{extra}

[[sites]]  # a config file needs one; the runner's --origin flag replaces it with the same
name = "default"
hosts = ["*"]
origin = "http://127.0.0.1:{origin_port}"
"""


def signing_available() -> str | None:
    """None when `proxy.blocklist.format` can write signed versions, else the reason."""
    try:
        fmt = importlib.import_module("proxy.blocklist.format")
        importlib.import_module("proxy.blocklist.model")
    except ImportError as e:
        return f"proxy.blocklist.format is not importable ({e})"
    if not hasattr(fmt, "write_version") or not hasattr(fmt, "generate_keypair"):
        return "proxy.blocklist.format lacks write_version/generate_keypair"
    return None


def keypair() -> tuple[Path, bytes]:
    """(public key path, private key PEM), made once and kept in the cache dir."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    private, public = CACHE_DIR / "bench-private.pem", CACHE_DIR / "bench-public.pem"
    if not (private.exists() and public.exists()):
        fmt = importlib.import_module("proxy.blocklist.format")
        pair = fmt.generate_keypair()
        priv_pem, pub_pem = _split_pair(pair)
        private.write_bytes(priv_pem)
        public.write_bytes(pub_pem)
    return public, private.read_bytes()


def _split_pair(pair: Any) -> tuple[bytes, bytes]:
    """`generate_keypair()` returns (private_pem, public_pem) or an object with those fields."""
    if isinstance(pair, tuple):
        first, second = (x if isinstance(x, bytes) else str(x).encode() for x in pair)
        return (first, second) if b"PRIVATE" in first else (second, first)
    priv = getattr(pair, "private_pem", None) or getattr(pair, "private_key_pem", None)
    pub = getattr(pair, "public_pem", None) or getattr(pair, "public_key_pem", None)
    if priv is None or pub is None:
        raise TypeError(f"unexpected keypair shape: {type(pair)!r}")
    return priv, pub


def stream(count: int) -> Iterator[Any]:
    """`count` entries that match nothing the hit scenarios fetch, one at a time (a list of
    them costs ~1 KB an entry: `blocklist_huge` streams 100M)."""
    model = importlib.import_module("proxy.blocklist.model")
    entry, types = model.Entry, model.EntryType
    for i in range(count):
        kind = i % 10
        if kind < 4:
            etype, value = types.URL, f"http://127.0.0.1/listed/url/{i}?v={i % 97}"
        elif kind < 8:
            etype, value = types.PREFIX, f"http://127.0.0.1/listed/tree/{i}/"
        elif kind == 8:
            etype, value = types.HOST, f"site-{i}.listed.example"
        else:
            etype, value = types.SHA256, hashlib.sha256(b"listed-%d" % i).hexdigest()
        yield entry(
            id=f"bench-{i}", type=etype, value=value, notice=f"BENCH-{i // 100}", reason="bench"
        )


def with_probes(count: int, probes: list[tuple[str, str]] | None = None) -> Iterator[Any]:
    """`stream(count)`, then the (type, value) probes, one at a time."""
    model = importlib.import_module("proxy.blocklist.model")
    entry, types = model.Entry, model.EntryType
    yield from stream(count)
    for j, (probe_type, probe_value) in enumerate(probes or []):
        yield entry(
            id=f"probe-{j}",
            type=types(probe_type),
            value=probe_value,
            notice="BENCH-PROBE",
            reason="bench",
        )


def entries(count: int, probes: list[tuple[str, str]] | None = None) -> list[Any]:
    """`with_probes` as a list (~1 KB an entry: not for 100M)."""
    return list(with_probes(count, probes))


def version_file(count: int, sequence: int, probes: list[tuple[str, str]] | None = None) -> Path:
    """A signed version file with `count` entries (+ probes), built once and cached. Streamed
    (`write_full_version_streamed`): nothing holds the list, so 100M entries (~14 GB) can be
    written; the bytes are those `write_version` would write."""
    _, private_pem = keypair()
    tag = hashlib.sha256(repr((count, sequence, probes)).encode()).hexdigest()[:10]
    fmt = importlib.import_module("proxy.blocklist.format")
    cached = CACHE_DIR / f"v{sequence}-{count}-{tag}" / fmt.version_filename(sequence)
    if not cached.exists():  # written atomically: never a half file here
        cached.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        fmt.write_full_version_streamed(
            cached,
            sequence,
            with_probes(count, probes),
            private_key_pem=private_pem,
            progress=progress_printer(30.0, count + len(probes or []), "signed", started),
        )
    return cached


def shipped_file(
    count: int, sequence: int = 1, probes: list[tuple[str, str]] | None = None,
    table: Path | None = None,
) -> Path:  # fmt: skip
    """`version_file` with the companions `blocklist sign --table` writes (a compiled table
    and its signed manifest, proxy/blocklist/shipped.py), made once. `table`: a table already
    compiled from the same entries (`blocklist_huge build`, 100M entries: ~35 min to build)
    moved into place instead of compiling one; it is checked whole before it is signed."""
    shipped = importlib.import_module("proxy.blocklist.shipped")
    version = version_file(count, sequence, probes)
    table_path, manifest = shipped.companions(version)
    if manifest.exists():
        return version
    with open(version, "rb") as f:
        header_line = f.readline().rstrip(b"\n")
    started = time.monotonic()
    if table is not None:
        os.replace(table, table_path)
        shipped.sign_manifest(version, header_line, keypair()[1])
        print(f"signer: signed the manifest of {table_path} in "
              f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
    else:
        shipped.write_companions(
            version, header_line + b"\n", with_probes(count, probes), keypair()[1],
            progress=progress_printer(30.0, count, "compiled", started),
        )  # fmt: skip
        print(f"signer: compiled {count:,} entries in {time.monotonic() - started:.1f} s",
              flush=True)  # fmt: skip
    return version


def progress_printer(
    period_s: float, total: int, what: str, started: float
) -> Callable[[int], None]:
    """A progress callback printing entries done, rate and ETA to stderr at most every
    `period_s` (`started`: `time.monotonic()` when the work began)."""
    last = [started]

    def show(done: int) -> None:
        now = time.monotonic()
        if now - last[0] < period_s:
            return
        last[0] = now
        rate = done / (now - started)
        eta = (total - done) / rate if rate else 0.0
        print(f"  {what} {done:,} of {total:,} entries, {rate:,.0f}/s, ETA {eta:,.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip

    return show


def blocklist_dir(
    workdir: Path, count: int, sequence: int = 1, *, shipped: bool = False,
    table: Path | None = None,
) -> tuple[Path, Path]:  # fmt: skip
    """A fresh watched directory holding one version of `count` entries (with its companions
    when `shipped`); (dir, public key). Files are hard-linked from the cache where they can
    be (a 100M-entry version and its table are 43 GB), else copied."""
    public, _ = keypair()
    directory = workdir / f"blocklist-{count}"
    directory.mkdir(parents=True, exist_ok=True)
    if shipped:
        source = shipped_file(count, sequence, table=table)
        shipped_mod = importlib.import_module("proxy.blocklist.shipped")
        files = [*shipped_mod.companions(source), source]
    else:
        files = [version_file(count, sequence)]
    for f in files:
        dest = directory / f.name
        dest.unlink(missing_ok=True)
        try:
            os.link(f, dest)
        except OSError:
            shutil.copyfile(f, dest)
    return directory, public
