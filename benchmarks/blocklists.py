"""Signed blocklist versions of a given size, for the hit-cost and apply-under-load scenarios.

Entries are a realistic mix (url, prefix, host, sha256) none of which matches what the hit
scenarios fetch, plus optional probe entries the runner uses to see when a version is enforced.
Versions are cached under `results/.blocklists/` (keyed by size and sequence) because writing a
million signed entries takes a while.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CACHE_DIR = Path(__file__).parent / "results" / ".blocklists"


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


def entries(count: int, probes: list[tuple[str, str]] | None = None) -> list[Any]:
    """`stream(count)`, then the (type, value) probes."""
    model = importlib.import_module("proxy.blocklist.model")
    entry, types = model.Entry, model.EntryType
    made = list(stream(count))
    for j, (probe_type, probe_value) in enumerate(probes or []):
        made.append(
            entry(
                id=f"probe-{j}",
                type=types(probe_type),
                value=probe_value,
                notice="BENCH-PROBE",
                reason="bench",
            )
        )
    return made


def version_file(count: int, sequence: int, probes: list[tuple[str, str]] | None = None) -> Path:
    """A signed version file with `count` entries (+ probes), built once and cached."""
    _, private_pem = keypair()
    tag = hashlib.sha256(repr((count, sequence, probes)).encode()).hexdigest()[:10]
    fmt = importlib.import_module("proxy.blocklist.format")
    cached = CACHE_DIR / f"v{sequence}-{count}-{tag}" / fmt.version_filename(sequence)
    if not cached.exists():  # write_version writes atomically: never a half file here
        cached.parent.mkdir(parents=True, exist_ok=True)
        fmt.write_version(cached, sequence, entries(count, probes), private_key_pem=private_pem)
    return cached


def blocklist_dir(workdir: Path, count: int, sequence: int = 1) -> tuple[Path, Path]:
    """A fresh watched directory holding one version of `count` entries; (dir, public key)."""
    public, _ = keypair()
    directory = workdir / f"blocklist-{count}"
    directory.mkdir(parents=True, exist_ok=True)
    source = version_file(count, sequence)
    shutil.copyfile(source, directory / source.name)
    return directory, public
