"""Compiled tables shipped beside a full version: the signer compiles once, a node verifies and
maps (issue 12).

A node that compiles a 10M-entry version itself spends ~10 µs of CPU an entry canonicalising
and writing it (`proxy.blocklist.loader`); under saturating load it may take only a third of
two cores without hurting traffic, so a version could not be enforced within a minute. The
signer has the entries at hand and no traffic: `edgeproxy blocklist sign --table` writes,
beside `NAME.jsonl`, the table a node would write for it (`NAME.table`, the file layer of
`proxy.blocklist.table`) and a signed manifest (`NAME.manifest`) that ties the two together:
the version's identity, the table's sha256 and length, its format, the canonicaliser version
(`keys.CANONICALISER_VERSION`) and the counts. blocklists/FORMAT.md specifies the manifest.

A node offered such a full version (`format.Reading.shipped`, after the version's own checks:
signature, header, line count, entry lines' hash) checks the manifest's signature with the
same key and every binding against the version and its own canonicaliser and table format.
It copies the table into its state and hashes the copy, so what it maps is exactly what it
hashed, whatever happens to the shipped file later; or, `blocklist.table_install = "link"`,
it hard-links the table, hashes it through the link and makes it read-only: no second copy of
a 29 GB table, at the cost of trusting the shipped inode not to be rewritten. It checks the
table whole (`MappedTable.verify`, in the same pass as the hash) and its counts, and
canonicalises a random sample of the version's entry lines itself (drawn here, unpredictably:
`random.SystemRandom`), each of which must be in the table under its keys with its row
(`MappedTable.holds`). Only then is the table the file layer: a copy stamped with the node's
version, a link with its signer's. Any mismatch raises `Rejected` with a `Reason` (logged,
counted by the supervisor); the caller then compiles the version itself, as without
companions.

A manifest that binds the version's exact header also spares the version's own Ed25519 check
over every byte (`vouches`, `format.Reading.vouched`): the header's sha256 of the entry lines
is still checked, so every byte stays vouched for by the key, once.

What the spot check does not prove: lines it did not sample. A table is trusted for those
because the key that signs the version signed the manifest: the check guards against a signer
whose canonicaliser or writer differs from the node's (a missed version bump, a bug), not
against the key's holder, who can sign any list anyway.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mmap
import os
import random
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

from proxy.blocklist.format import (
    SUFFIX,
    AddLine,
    BlocklistError,
    Header,
    SignedFile,
    copy_bytes,
    read_signed_object,
    signature_line,
    write_atomic,
)
from proxy.blocklist.keys import CANONICALISER_VERSION
from proxy.blocklist.model import Entry, InvalidEntry, compile_entry
from proxy.blocklist.table import MAGIC, MappedTable, TableError, restamp, write_table

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "edgeproxy-blocklist-table/1"
TABLE_SUFFIX = ".table"
MANIFEST_SUFFIX = ".manifest"
MANIFEST_MAX_BYTES = 64 << 10
TABLE_FORMAT = MAGIC.decode("ascii")
_COPY_BYTES = 8 << 20
# The shortest entry line there is (`{"op":"add","id":"x","type":"host","value":"a"}` and its
# newline): a line is kept with probability this over its length, which makes a sample drawn
# at random byte offsets uniform over lines (a long line is hit more often, kept less often).
MIN_LINE_BYTES = 48
Progress = Callable[[int, int], None]  # (entries' worth done, entries in all)


class Reason(StrEnum):
    """Why a shipped table was not used (the label of `edgeproxy_blocklist_table_rejected`)."""

    INCOMPLETE = "incomplete"  # the table or the manifest is missing
    MANIFEST = "manifest"  # unreadable, too large or malformed
    SIGNATURE = "signature"  # not signed by the configured key, or the signature fails
    VERSION = "version"  # made for another version (sequence, header or entry lines' hash)
    CANONICALISER = "canonicaliser"  # keys made by another canonicaliser version
    TABLE_FORMAT = "table-format"  # another table format than the node writes
    TABLE_SIZE = "table-size"  # truncated or padded
    COPY = "copy"  # the node could not copy it into its state (disk full, I/O error)
    TABLE_HASH = "table-hash"  # bytes altered
    TABLE_CORRUPT = "table-corrupt"  # its own header, bounds or checksum fail
    COUNTS = "counts"  # lines, entries, keys or counts by type differ from the manifest's
    SPOT_CHECK = "spot-check"  # a sampled line is not in the table as the node compiles it


class Rejected(Exception):
    """A shipped table the node does not use; str() says which file and why."""

    def __init__(self, reason: Reason, text: str) -> None:
        self.reason = reason
        super().__init__(text)


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a signer vouches for about a table (blocklists/FORMAT.md, "Compiled tables")."""

    format: str
    sequence: int  # the version's
    header_sha256: str  # of the version's header line, its exact bytes without the newline
    entries_sha256: str  # the version header's `sha256` (of its entry lines)
    lines: int  # the version's entry lines (its header's `entries`)
    canonicaliser: int  # keys.CANONICALISER_VERSION of the signer
    table_format: str  # the table's magic ("EPBLMAP3")
    table_sha256: str
    table_bytes: int
    entries: int  # in the table: the lines less those expired when it was made
    keys: int
    counts: dict[str, int]  # the table's entries by type
    created_at: float


def companions(version: Path) -> tuple[Path, Path]:
    """The table and the manifest that go with a version file (`NAME.jsonl`)."""
    stem = version.name[: -len(SUFFIX)] if version.name.endswith(SUFFIX) else version.name
    return version.with_name(stem + TABLE_SUFFIX), version.with_name(stem + MANIFEST_SUFFIX)


# -- the signer ---------------------------------------------------------------------------


def write_companions(
    version: Path,
    data: bytes,
    entries: Iterable[Entry],
    private_key_pem: bytes,
    *,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Compile the table of the signed full version `data` (its `entries`, in file order;
    of `data`, only the header line is read) and sign its manifest, both written atomically
    beside `version` (before the caller writes the version itself, so a watcher that sees it
    finds them)."""
    header_line = data[: data.index(b"\n")]
    header = msgspec.json.decode(header_line, type=Header)
    if header.base is not None:
        raise ValueError("a compiled table ships with a full version only")
    table_path, _ = companions(version)
    write_table(table_path, entries, header.sequence, header.created_at, progress=progress)
    return sign_manifest(version, header_line, private_key_pem)


def sign_manifest(version: Path, header_line: bytes, private_key_pem: bytes) -> Manifest:
    """Check the table beside `version` whole and sign its manifest for the version whose
    header line (exact bytes, no newline) is `header_line`: for a table compiled by
    `write_companions`, or by a signer's own pipeline (streamed, `table.write_table`)."""
    header = msgspec.json.decode(header_line, type=Header)
    table_path, manifest_path = companions(version)
    table = MappedTable(table_path)
    table.verify()
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        sequence=header.sequence,
        header_sha256=hashlib.sha256(header_line).hexdigest(),
        entries_sha256=header.sha256,
        lines=header.entries,
        canonicaliser=CANONICALISER_VERSION,
        table_format=TABLE_FORMAT,
        table_sha256=_file_sha256(table_path),
        table_bytes=table_path.stat().st_size,
        entries=table.entries,
        keys=table.keys,
        counts={str(t): n for t, n in table.counts.items()},
        created_at=header.created_at,
    )
    line = msgspec.json.encode(manifest) + b"\n"
    write_atomic(manifest_path, line + signature_line(line, private_key_pem))
    return manifest


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_COPY_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# -- the node -----------------------------------------------------------------------------


def adopt(
    offer: SignedFile,
    public_key_pem: bytes,
    out: Path,
    version: int,
    *,
    spot_check: int,
    install: str = "copy",
    rng: random.Random | None = None,
    progress: Progress | None = None,
) -> bool:
    """Check the companions of a verified full version and, when every check passes, put
    their table at `out` (atomically): True. False when the version has no companions.
    Raises `Rejected` on any mismatch; `out` is then absent.

    `install` "copy": `out` is the node's own copy, hashed after it was made and stamped with
    node version `version`. "link": `out` is a hard link to the shipped file, made read-only
    and hashed through the link; it keeps its signer's stamp (a link cannot be restamped
    without changing the shipped file), which the supervisor tells workers to expect
    (`BlocklistLoad.stamp`). A link that cannot be made (another filesystem) is a copy."""
    table_path, manifest_path = companions(offer.path)
    present = table_path.is_file(), manifest_path.is_file()
    if not any(present):
        return False
    if not all(present):
        missing = manifest_path if present[0] else table_path
        raise Rejected(Reason.INCOMPLETE, f"{missing}: missing (its companion is there)")
    manifest = _manifest(manifest_path, public_key_pem)
    _bound(manifest_path, manifest, offer)
    tmp = out.with_name(f"{out.name}.tmp")  # `out` is a dotfile the loader's cleanup finds
    try:
        linked = install == "link" and _linked(table_path, tmp)
        if not linked:
            _copy(table_path, tmp, manifest)
        table = _checked_table(table_path, tmp, manifest, progress)
        _spot_check(offer, table, spot_check, rng or random.SystemRandom())
        del table  # unmapped before its header is rewritten
        if linked:
            _read_only(table_path, tmp)
        else:
            restamp(tmp, version)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def vouches(version: Path, header_line: bytes, public_key_pem: bytes) -> bool:
    """A manifest beside `version`, signed by the configured key, binds this exact header
    line (its sequence, its bytes' sha256, its entry lines' sha256): the version's own
    signature over every byte need not be checked (`format.Reading.vouched`). False for no
    manifest or any fault in it: the version is then checked as always, and `adopt` says
    why its table is refused."""
    _, manifest_path = companions(version)
    try:
        m = _manifest(manifest_path, public_key_pem)
        header = msgspec.json.decode(header_line, type=Header)
    except (Rejected, msgspec.DecodeError):
        return False
    return (
        header.base is None
        and (m.sequence, m.entries_sha256) == (header.sequence, header.sha256)
        and m.header_sha256 == hashlib.sha256(header_line).hexdigest()
    )


def _manifest(path: Path, public_key_pem: bytes) -> Manifest:
    try:
        with open(path, "rb") as f:
            data = f.read(MANIFEST_MAX_BYTES + 1)
    except OSError as e:
        raise Rejected(Reason.MANIFEST, f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MANIFEST_MAX_BYTES:
        raise Rejected(Reason.MANIFEST, f"{path}: larger than {MANIFEST_MAX_BYTES} bytes")
    try:
        line = read_signed_object(path, data, public_key_pem)
    except BlocklistError as e:
        raise Rejected(Reason.SIGNATURE, str(e)) from None
    try:
        manifest = msgspec.json.decode(line, type=Manifest)
    except msgspec.DecodeError as e:
        raise Rejected(Reason.MANIFEST, f"{path}:1: malformed manifest: {e}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise Rejected(Reason.MANIFEST, f"{path}:1: unknown format {manifest.format!r}")
    return manifest


def _bound(path: Path, m: Manifest, offer: SignedFile) -> None:
    """The manifest is for this version, this canonicaliser and this table format."""
    header = offer.header
    header_sha256 = hashlib.sha256(offer.header_line).hexdigest()
    if (m.sequence, m.header_sha256, m.entries_sha256) != (
        header.sequence,
        header_sha256,
        header.sha256,
    ):
        raise Rejected(
            Reason.VERSION,
            f"{path}: made for sequence {m.sequence} (header sha256 {m.header_sha256[:16]}…), "
            f"not for {offer.path} (sequence {header.sequence}, {header_sha256[:16]}…)",
        )
    if m.canonicaliser != CANONICALISER_VERSION:
        raise Rejected(
            Reason.CANONICALISER,
            f"{path}: keys made by canonicaliser version {m.canonicaliser}, this node's is "
            f"{CANONICALISER_VERSION}",
        )
    if m.table_format != TABLE_FORMAT:
        raise Rejected(
            Reason.TABLE_FORMAT, f"{path}: table format {m.table_format!r}, not {TABLE_FORMAT}"
        )
    if m.lines != header.entries:
        raise Rejected(
            Reason.COUNTS, f"{path}: {m.lines} entry lines, the version has {header.entries}"
        )


def _linked(src: Path, tmp: Path) -> bool:
    """A hard link to the shipped table at `tmp`; False (nothing made) when the two are on
    different filesystems or the filesystem has no hard links: the caller copies."""
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            log.warning("%s: cannot be linked into the node's state (%s); copying it", src, e)
            return False
        raise Rejected(Reason.COPY, f"{src}: cannot link: {e.strerror or e}") from None
    return True


def _read_only(src: Path, tmp: Path) -> None:
    """A table taken by link loses its write bits (the shipped name's too: one inode), so an
    in-place rewrite of the shipped file fails instead of changing what workers map. Only
    once it passed: a refused table is left as it came."""
    try:
        os.chmod(tmp, os.stat(tmp).st_mode & ~0o222)
    except OSError as e:
        raise Rejected(Reason.COPY, f"{src}: cannot make read-only: {e.strerror or e}") from None


def _copy(src: Path, tmp: Path, m: Manifest) -> None:
    """Copy the table to `tmp` (in the kernel: `copy_file_range`): what the node maps is what
    it hashes next, whatever happens to the shipped file meanwhile."""
    try:
        with open(src, "rb") as f, open(tmp, "wb") as out:
            size = os.fstat(f.fileno()).st_size
            if size != m.table_bytes:
                raise Rejected(
                    Reason.TABLE_SIZE, f"{src}: {size} bytes, the manifest says {m.table_bytes}"
                )
            copy_bytes(f, out, size)  # a short copy fails the sha256
            out.flush()
            os.fsync(out.fileno())
            if hasattr(os, "posix_fadvise"):  # the node maps its copy: the shipped pages can go
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as e:
        raise Rejected(Reason.COPY, f"{src}: cannot copy: {e.strerror or e}") from None


def _hashed(src: Path, tmp: Path, m: Manifest) -> None:
    """The node's file `tmp` (a copy, or a link) is the manifest's table: length and sha256,
    read plainly (only for a file whose own header does not parse: which check failed)."""
    digest = hashlib.sha256()
    try:
        with open(tmp, "rb") as f:
            while chunk := f.read(_COPY_BYTES):
                digest.update(chunk)
    except OSError as e:
        raise Rejected(Reason.COPY, f"{src}: cannot read: {e.strerror or e}") from None
    _matches(src, digest, m)


def _matches(src: Path, digest: Any, m: Manifest) -> None:
    if digest.hexdigest() != m.table_sha256:
        raise Rejected(Reason.TABLE_HASH, f"{src}: sha256 does not match the manifest's")


def _checked_table(src: Path, tmp: Path, m: Manifest, progress: Progress | None) -> MappedTable:
    """The node's file `tmp` (a copy, or a link) is the manifest's table (length, sha256) and
    a whole one (header, bounds, body checksum, counts): the sha256 and the checksum in one
    pass over the file. A mismatch of the bytes is told before what it broke."""
    try:
        size = os.stat(tmp).st_size
    except OSError as e:
        raise Rejected(Reason.COPY, f"{src}: cannot read: {e.strerror or e}") from None
    if size != m.table_bytes:
        raise Rejected(Reason.TABLE_SIZE, f"{src}: {size} bytes, the manifest says {m.table_bytes}")
    try:
        table = MappedTable(tmp)
    except TableError as e:
        _hashed(src, tmp, m)  # altered bytes are reported as such
        raise Rejected(Reason.TABLE_CORRUPT, f"{src}: {e}") from None
    digest = hashlib.sha256()
    lines = m.lines

    def read(done: int, total: int) -> None:
        if progress is not None and total:
            progress(lines * done // total, lines)

    try:
        table.verify(whole=digest, progress=read)
    except TableError as e:
        _matches(src, digest, m)
        raise Rejected(Reason.TABLE_CORRUPT, f"{src}: {e}") from None
    except OSError as e:
        raise Rejected(Reason.COPY, f"{src}: cannot read: {e.strerror or e}") from None
    _matches(src, digest, m)
    if not table.summaries:
        raise Rejected(Reason.TABLE_FORMAT, f"{src}: not a {TABLE_FORMAT} table")
    counts = {str(t): n for t, n in table.counts.items()}
    if (table.entries, table.keys, counts) != (m.entries, m.keys, m.counts) or (
        table.entries > m.lines
    ):
        raise Rejected(
            Reason.COUNTS,
            f"{src}: {table.entries} entries, {table.keys} keys, {counts}; the manifest says "
            f"{m.entries}, {m.keys}, {m.counts} of {m.lines} lines",
        )
    return table


def sample_lines(
    data: bytes | mmap.mmap, start: int, end: int, lines: int, n: int, rng: random.Random
) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of about `n` distinct entry lines of data[start:end] (`lines` of
    them), uniformly at random; every line when there are no more than `n`."""
    if lines <= n:
        at = start
        while at < end:
            stop = data.find(b"\n", at, end)
            yield at, bytes(data[at:stop])
            at = stop + 1
        return
    seen: set[int] = set()
    tries = 0
    while len(seen) < n and tries < 64 * n:
        tries += 1
        at = rng.randrange(start, end)
        line_start = data.rfind(b"\n", start, at) + 1 or start
        line_end = data.find(b"\n", at, end)
        if line_start in seen or rng.random() * (line_end + 1 - line_start) > MIN_LINE_BYTES:
            continue
        seen.add(line_start)
        yield line_start, bytes(data[line_start:line_end])


def _spot_check(offer: SignedFile, table: MappedTable, n: int, rng: random.Random) -> None:
    """A sample of the version's lines, canonicalised here, must each be in the table."""
    decoder = msgspec.json.Decoder(AddLine)
    start, end = offer.body
    for at, raw in sample_lines(offer.data, start, end, offer.header.entries, n, rng):
        try:
            line = decoder.decode(raw)
            entry = Entry(line.id, line.type, line.value, line.notice, line.reason, line.expires_at)
            form = compile_entry(entry)
        except (msgspec.DecodeError, InvalidEntry) as e:
            raise Rejected(
                Reason.SPOT_CHECK, f"{offer.path}: the line at byte {at} does not compile: {e}"
            ) from None
        missing = table.holds(entry, form)
        if missing:
            raise Rejected(
                Reason.SPOT_CHECK, f"{offer.path}: entry {entry.id!r} (byte {at}): {missing}"
            )
