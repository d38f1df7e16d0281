"""Signed blocklist versions on disk (JSON Lines); the format is specified in blocklists/FORMAT.md.

    {"format":"edgeproxy-blocklist/1","sequence":7,"base":6,"created_at":...,"entries":2,"sha256":"…"}
    {"op":"add","id":"n-1","type":"url","value":"http://example.com/a","notice":"…","reason":"…"}
    {"op":"remove","id":"n-0"}
    {"signature":"<base64 Ed25519 over the exact bytes of every line above>","key_id":"…"}

The signature is checked before anything else in the file is parsed, so an unsigned or
tampered file is refused without interpreting its content. Every refusal is a `BlocklistError`
naming the file, the line (1-based; 0 for the file as a whole) and the reason.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import math
import mmap
import os
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from xxhash import xxh3_64_intdigest

from proxy.blocklist.keys import QueryPairs
from proxy.blocklist.model import (
    Compiled,
    CompiledById,
    Entry,
    EntryType,
    InvalidEntry,
    compile_entry,
    validate_entry,
)

FORMAT_TAG = "edgeproxy-blocklist/1"
SUFFIX = ".jsonl"
MAX_DELTA_CHAIN = 1000
# The largest sequence a version may carry: 2^53 - 1 keeps it exact in every JSON reader
# (JavaScript, float-based parsers), and a cap means a signed but absurd sequence cannot make
# every later real version look older.
MAX_SEQUENCE = (1 << 53) - 1
MAX_AUDIT_HEAD_FIELDS = 16
# Progress while a version is read: (entry lines done, entry lines in the file), every
# PROGRESS_EVERY lines and once at the end.
ReadProgress = Callable[[int, int], None]
PROGRESS_EVERY = 65536


class BlocklistError(Exception):
    """A version file the edge refuses; str() is "file:line: reason"."""

    def __init__(self, file: str | os.PathLike[str], line: int, reason: str) -> None:
        self.file = str(file)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.file}:{line}: {reason}")

    def __reduce__(self) -> tuple[type[BlocklistError], tuple[str, int, str]]:
        return (BlocklistError, (self.file, self.line, self.reason))


class Header(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    format: str
    sequence: int
    base: int | None
    created_at: float
    entries: int
    sha256: str
    # Unix time after which the publisher no longer vouches for this list (freeze attack: a
    # node following a feed that stopped must be able to tell). Signed with the rest; omitted
    # (None) in versions from signers that do not set it.
    valid_until: float | None = None
    # A publisher's signed statement that travels with the version (the takedown service puts
    # its signed audit-log head here). Flat scalars only; edges keep and show it, never act on
    # it. Signed with the rest; omitted when the publisher sets none.
    audit_head: dict[str, str | int | float] | None = None


class AddLine(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag="add",
    tag_field="op",
):
    id: str
    type: EntryType
    value: str
    notice: str = ""
    reason: str = ""
    expires_at: float | None = None


class RemoveLine(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="remove", tag_field="op"
):
    id: str


class SignatureLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    signature: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Version:
    """One verified version file."""

    path: str
    sequence: int
    base: int | None  # None for a full version, else the sequence this delta applies to
    adds: tuple[Entry, ...]
    removes: tuple[str, ...]
    sha256: str  # of the entry lines, as in the header
    created_at: float
    key_id: str
    valid_until: float | None = None
    audit_head: dict[str, str | int | float] | None = None
    streamed: bool = False  # the adds went to a `Reading.stream` sink, not into `adds`


@dataclass(slots=True)
class LoadInfo:
    """What `load_newest` tells the caller about the version it returned besides its entries."""

    sha256: str = ""
    valid_until: float | None = None
    # Versions the returned one rests on, itself included (1 for a full version): a publisher
    # writing deltas needs it to know when the next one must be full (`MAX_DELTA_CHAIN`).
    chain_length: int = 0
    audit_head: dict[str, str | int | float] | None = None
    # The path of the version whose entries went to its `Reading.stream` sink ("": none did;
    # the entries are in what `load_newest` returned)
    streamed: str = ""


# -- keys -----------------------------------------------------------------------------------


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 keypair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def _public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def key_id(public_key: Ed25519PublicKey | bytes) -> str:
    """First 16 hex digits of the sha256 of the raw public key: names the key in files."""
    if isinstance(public_key, bytes):
        public_key = _public_key(public_key)
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- writing --------------------------------------------------------------------------------


def version_filename(sequence: int) -> str:
    return f"blocklist-{sequence:010d}{SUFFIX}"


def signature_line(body: bytes, private_key_pem: bytes) -> bytes:
    """The final line that signs `body` (every preceding line, exact bytes)."""
    private = _private_key(private_key_pem)
    sig = base64.b64encode(private.sign(body)).decode("ascii")
    line = SignatureLine(signature=sig, key_id=key_id(private.public_key()))
    return msgspec.json.encode(line) + b"\n"


def render_version(
    sequence: int,
    entries: Iterable[Entry],
    *,
    base: int | None = None,
    removes: Iterable[str] = (),
    private_key_pem: bytes,
    created_at: float | None = None,
    valid_until: float | None = None,
    audit_head: dict[str, str | int | float] | None = None,
) -> bytes:
    """The signed file's bytes. Entries are validated; a full version cannot remove."""
    _check_header_args(sequence, valid_until)
    remove_ids = list(removes)
    if base is None and remove_ids:
        raise ValueError("a full version (no base) cannot remove entries")
    if base is not None and not 0 <= base < sequence:
        raise ValueError("a delta's base must be an earlier sequence")
    lines: list[bytes] = []
    seen: set[str] = set()
    for entry_id in remove_ids:
        if not entry_id:
            raise ValueError("empty id in removes")
        lines.append(msgspec.json.encode(RemoveLine(id=entry_id)) + b"\n")
    for entry in entries:
        line = add_line(entry)
        if entry.id in seen:
            raise InvalidEntry(entry.id, "duplicate id")
        seen.add(entry.id)
        lines.append(line)
    body = b"".join(lines)
    header = Header(
        format=FORMAT_TAG,
        sequence=sequence,
        base=base,
        created_at=time.time() if created_at is None else created_at,
        entries=len(lines),
        sha256=hashlib.sha256(body).hexdigest(),
        valid_until=valid_until,
        audit_head=audit_head,
    )
    signed = msgspec.json.encode(header) + b"\n" + body
    return signed + signature_line(signed, private_key_pem)


def _check_header_args(sequence: int, valid_until: float | None) -> None:
    """What a signer may put in a header: raises ValueError otherwise."""
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence must be an integer within 1..{MAX_SEQUENCE}")
    if valid_until is not None and not math.isfinite(valid_until):
        raise ValueError("valid_until must be a finite Unix time")


def add_line(entry: Entry) -> bytes:
    """The entry line of `entry` (validated), with its newline."""
    validate_entry(entry)
    add = AddLine(
        id=entry.id,
        type=EntryType(entry.type),
        value=entry.value,
        notice=entry.notice,
        reason=entry.reason,
        expires_at=entry.expires_at,
    )
    return msgspec.json.encode(add) + b"\n"


def write_full_version_streamed(
    path: Path,
    sequence: int,
    entries: Iterable[Entry],
    *,
    private_key_pem: bytes,
    created_at: float | None = None,
    valid_until: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Header:
    """Sign and write a full version without holding its entries or its bytes: for lists too
    large for `render_version` (100M entries are ~14 GB of lines). The entry lines go to a
    temporary file as they come, hashed on the way, with an 8-byte digest of each id; then
    duplicate ids are looked for by sorting the digests (confirmed on the lines themselves),
    the header is written before a kernel copy of the lines, and the signature is made over a
    mapping of the result. Disk: twice the version while it is written. Atomic as
    `write_version`; `progress(entries written)` now and then."""
    _check_header_args(sequence, valid_until)
    directory = path.parent
    made: list[str] = []

    def temp(what: str) -> tuple[int, str]:
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=what)
        made.append(name)
        return fd, name

    try:
        fd, body_name = temp(".lines.tmp")
        digest = hashlib.sha256()
        id_hashes: array[int] = array("Q")
        with os.fdopen(fd, "wb", buffering=_SCAN_BYTES) as body:
            for entry in entries:
                line = add_line(entry)
                digest.update(line)
                body.write(line)
                id_hashes.append(xxh3_64_intdigest(entry.id.encode("utf-8", "surrogatepass")))
                if progress is not None and not len(id_hashes) & 0xFFFF:
                    progress(len(id_hashes))
            size = body.tell()
        with open(body_name, "rb") as body:
            lines = mmap.mmap(body.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            try:
                duplicate = _first_duplicate(lines, 0, size, id_hashes)
            finally:
                if isinstance(lines, mmap.mmap):
                    lines.close()
        if duplicate is not None:
            raise InvalidEntry(duplicate[1], "duplicate id")
        header = Header(
            format=FORMAT_TAG,
            sequence=sequence,
            base=None,
            created_at=time.time() if created_at is None else created_at,
            entries=len(id_hashes),
            sha256=digest.hexdigest(),
            valid_until=valid_until,
        )
        del id_hashes
        fd, out_name = temp(".tmp")
        with os.fdopen(fd, "w+b") as out, open(body_name, "rb") as body:
            out.write(msgspec.json.encode(header) + b"\n")
            out.flush()
            if copy_bytes(body, out, size) != size:
                raise OSError(f"{body_name}: the lines shrank while they were copied")
            os.unlink(body_name)
            out.flush()
            with mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ) as signed:
                signature = signature_line(signed, private_key_pem)  # type: ignore[arg-type]
            out.seek(0, os.SEEK_END)
            out.write(signature)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(out_name, 0o644)
        os.replace(out_name, path)
    finally:
        for name in made:
            Path(name).unlink(missing_ok=True)
    _fsync_dir(directory)
    if progress is not None:
        progress(header.entries)
    return header


def copy_bytes(src: BinaryIO, out: BinaryIO, size: int) -> int:
    """Up to `size` bytes from src's position to out's, by `copy_file_range` where the system
    has it (no pass through this process: 4x faster here), else read and written; the bytes
    copied (fewer when src shrank meanwhile)."""
    src_at, out_at = src.tell(), out.tell()
    left = size
    try:
        while left > 0:
            done = os.copy_file_range(src.fileno(), out.fileno(), min(left, 1 << 30))
            if done == 0:
                return size - left
            left -= done
    except (AttributeError, OSError):  # no copy_file_range, or not between these files
        src.seek(src_at + size - left)
        out.seek(out_at + size - left)
        while left > 0 and (chunk := src.read(min(_SCAN_BYTES, left))):
            out.write(chunk)
            left -= len(chunk)
    return size - left


def write_version(
    path: str | os.PathLike[str],
    sequence: int,
    entries: Iterable[Entry],
    *,
    base: int | None = None,
    removes: Iterable[str] = (),
    private_key_pem: bytes,
    created_at: float | None = None,
    valid_until: float | None = None,
    audit_head: dict[str, str | int | float] | None = None,
) -> None:
    """Sign and write a version atomically: a temp file in the same directory (named so that
    watchers filtering on the .jsonl suffix ignore it), fsync, os.replace, fsync the dir."""
    data = render_version(
        sequence,
        entries,
        base=base,
        removes=removes,
        private_key_pem=private_key_pem,
        created_at=created_at,
        valid_until=valid_until,
        audit_head=audit_head,
    )
    write_atomic(Path(path), data)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    write_atomic_all({path: data}, mode)


def write_atomic_all(files: Mapping[Path, bytes], mode: int = 0o644) -> None:
    """Replace each file with its bytes, each through a temp file beside it (fsynced, then
    renamed over it) and each directory fsynced once after the renames: a crash leaves every
    file whole, old or new. Every temp file is written before the first fsync, so the
    filesystem's journal commits them together (ext4: one commit for all, where a file at a
    time cost two each; a push writes two state files and waited for four)."""
    fds: list[int] = []
    pending: list[tuple[str, Path]] = []  # temp files not yet renamed over their file
    try:
        for path, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            fds.append(fd)
            pending.append((tmp, path))
            with memoryview(data) as view:
                done = 0
                while done < len(view):
                    done += os.write(fd, view[done:])
            os.fchmod(fd, mode)
        for fd in fds:
            os.fsync(fd)
        while fds:
            os.close(fds.pop())
        while pending:
            os.replace(*pending[0])
            pending.pop(0)
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for tmp, _path in pending:
            Path(tmp).unlink(missing_ok=True)
        raise
    for directory in dict.fromkeys(path.parent for path in files):
        _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- reading --------------------------------------------------------------------------------


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise BlocklistError(path, 0, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise BlocklistError(path, 0, f"file larger than max_bytes ({max_bytes})")
    return data


def _split_lines(path: Path, data: bytes) -> list[bytes]:
    if not data:
        raise BlocklistError(path, 0, "empty file (unsigned)")
    if not data.endswith(b"\n"):
        n = data.count(b"\n") + 1
        raise BlocklistError(path, n, "truncated: the last line has no newline")
    return data[:-1].split(b"\n")


def _verify(path: Path, lines: list[bytes], public: Ed25519PublicKey, expected_id: str) -> str:
    n = len(lines)
    if n < 2:
        raise BlocklistError(path, n, "unsigned or truncated: no header and signature lines")
    return _verify_signed(path, n, lines[-1], b"\n".join(lines[:-1]) + b"\n", public, expected_id)


def _verify_signed(
    path: Path,
    n: int,
    sig_line: bytes,
    signed: bytes | memoryview | None,
    public: Ed25519PublicKey,
    expected_id: str,
) -> str:
    """Check the signature line (line `n`, the last) over `signed`, every byte before it
    (None: its form and key only, the bytes being vouched for otherwise: `Reading.vouched`)."""
    try:
        sig = msgspec.json.decode(sig_line, type=SignatureLine)
    except msgspec.DecodeError:
        raise BlocklistError(
            path, n, "unsigned or truncated: the last line is not a signature line"
        ) from None
    if sig.key_id != expected_id:
        raise BlocklistError(
            path, n, f"wrong key: signed by key id {sig.key_id}, expected {expected_id}"
        )
    try:
        raw_sig = base64.b64decode(sig.signature, validate=True)
    except (binascii.Error, ValueError):
        raise BlocklistError(path, n, "malformed signature (not base64)") from None
    if signed is None:
        return sig.key_id
    try:
        public.verify(raw_sig, signed)
    except InvalidSignature:
        raise BlocklistError(path, n, "bad signature: content does not match") from None
    return sig.key_id


def _header(path: Path, line: bytes) -> Header:
    try:
        header = msgspec.json.decode(line, type=Header)
    except msgspec.DecodeError as exc:
        raise BlocklistError(path, 1, f"malformed header: {exc}") from None
    if header.format != FORMAT_TAG:
        raise BlocklistError(path, 1, f"unknown format {header.format!r}, expected {FORMAT_TAG}")
    if not 1 <= header.sequence <= MAX_SEQUENCE:
        raise BlocklistError(path, 1, f"sequence must be an integer within 1..{MAX_SEQUENCE}")
    if header.valid_until is not None and not math.isfinite(header.valid_until):
        raise BlocklistError(path, 1, "valid_until must be a finite Unix time")
    if header.base is not None and not 0 <= header.base < header.sequence:
        raise BlocklistError(path, 1, "base must be an earlier sequence")
    if header.audit_head is not None and len(header.audit_head) > MAX_AUDIT_HEAD_FIELDS:
        raise BlocklistError(path, 1, f"audit_head has more than {MAX_AUDIT_HEAD_FIELDS} fields")
    return header


class Sink(Protocol):
    """Where a streamed full version's entries go, one at a time as they are read and
    checked (`Reading.stream`)."""

    def add(self, entry: Entry, form: Compiled | None) -> None: ...

    def abort(self) -> None:
        """The version was refused after all (a bad line, a repeated id): drop what was given."""


@dataclass(slots=True)
class Reading:
    """How a caller wants versions read, beyond the checks (which are always the same)."""

    progress: ReadProgress | None = None  # hears how far the entry lines are
    # Receives each entry's compiled form (validating an entry compiles it): `write_table`
    # takes it instead of compiling every entry a second time.
    compiled: CompiledById | None = None
    # More than 1: the entry lines of a large version are decoded, validated and compiled by
    # this many forked processes, a contiguous share each (Linux; the order and every refusal
    # are those of one process).
    processes: int = 1
    # Set (and `processes` 1): a full version's entries are not kept (its `Version` has no
    # adds and `streamed` set) but handed, each once checked and compiled, to the sink that
    # `stream(path, entry lines)` returns; the file is mapped rather than read, so memory does not grow
    # with its size. A refused version's sink is aborted. Deltas are read as always.
    stream: Callable[[str, int], Sink] | None = None
    # Set: a full version that passed every check of its bytes (signature, header, line
    # count, entry lines' hash) is offered to it before its lines are parsed; True means the
    # caller took the version whole (a signer's compiled table, `proxy.blocklist.shipped`):
    # its `Version` comes back `streamed` with no adds, and no line is parsed. False: read on
    # as if it were unset.
    shipped: Callable[[SignedFile], bool] | None = None
    # Set (with `shipped`): asked, for a full version's path and its header line's exact
    # bytes, whether a statement signed by the same key binds that header (its signer's
    # manifest, `shipped.vouches`). True: the version's own signature over every byte is not
    # checked again (Ed25519 hashes all of it: 2 s at 10M entries, 20 s at 100M): the
    # statement vouches for the header, and the header's sha256 for every entry line, which
    # is checked as always. False: the signature is checked as always.
    vouched: Callable[[Path, bytes], bool] | None = None


@dataclass(frozen=True, slots=True)
class SignedFile:
    """A full version whose bytes passed every check (`Reading.shipped`): what a caller that
    does not parse it needs to tie other files to it and to sample its lines."""

    path: Path
    header: Header
    header_line: bytes  # line 1, without its newline (what a companion manifest binds)
    data: bytes | mmap.mmap  # the file's bytes (valid only during the call)
    body: tuple[int, int]  # where its entry lines are: [start, end) of `data`


def read_signed_object(path: Path, data: bytes, public_key_pem: bytes) -> bytes:
    """The first line of a two-line signed object (a companion manifest: one JSON line and a
    signature line over its exact bytes, as a version's), once the signature verifies with
    the key; raises `BlocklistError` ("wrong key", "bad signature", "unsigned or truncated")."""
    lines = _split_lines(path, data)
    if len(lines) != 2:
        raise BlocklistError(path, len(lines), "expected one line and a signature line")
    public = _public_key(public_key_pem)
    _verify(path, lines, public, key_id(public))
    return lines[0]


PARALLEL_MIN_LINES = 50_000  # below this a version is read in one process: forking costs more
_NO_READING = Reading()


def read_version(
    path: str | os.PathLike[str],
    public_key_pem: bytes,
    *,
    max_bytes: int,
    reading: Reading | None = None,
) -> Version:
    """Read and verify one version file; raises `BlocklistError(file, line, reason)`."""
    p = Path(path)
    if reading is not None and (
        reading.shipped is not None or (reading.stream is not None and reading.processes <= 1)
    ):
        return _read_streamed(p, public_key_pem, max_bytes, reading)
    return parse_version(_read_bounded(p, max_bytes), p, public_key_pem, reading=reading)


class _Row(msgspec.Struct, array_like=True, frozen=True):
    """One entry line as parsed (by a forked reader, sent back as msgpack)."""

    line: int
    entry: Entry | None  # None: a remove of `removed`
    removed: str = ""
    # the entry's compiled form (`compile_entry`): its type, key (text, or a digest's bytes)
    type: EntryType | None = None
    key: str = ""
    digest: bytes | None = None
    query: QueryPairs | None = None

    @property
    def form(self) -> Compiled:
        assert self.type is not None
        return self.type, self.key if self.digest is None else self.digest, self.query


def _entries(
    p: Path,
    lines: Iterable[bytes],
    first: int,
    full: bool,
    progress: ReadProgress | None,
    total: int,
    *,
    share: bool = True,
) -> Iterator[tuple[int, Entry | str, Compiled | None]]:
    """Decode, validate and compile entry lines; `first` is the file line of the first one.
    Yields (line, entry, its compiled form), or (line, removed id, None) for a remove.
    `share`: notice and reason texts repeated across entries become one object each (worth
    it when the entries are kept; a streamed version's are not)."""
    shared: dict[str, str] = {}
    decoder = msgspec.json.Decoder(AddLine | RemoveLine)
    for number, raw in enumerate(lines, start=first):
        if progress is not None and number % PROGRESS_EVERY == 0:
            progress(number - 2, total)
        try:
            item = decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise BlocklistError(p, number, f"malformed entry line: {exc}") from None
        if type(item) is RemoveLine:
            if full:
                raise BlocklistError(p, number, "a full version (base null) cannot remove")
            if not item.id:
                raise BlocklistError(p, number, "remove without an id")
            yield number, item.id, None
            continue
        assert isinstance(item, AddLine)
        notice, reason = item.notice, item.reason
        if share:
            notice = shared.setdefault(notice, notice)
            reason = shared.setdefault(reason, reason)
        entry = Entry(item.id, item.type, item.value, notice, reason, item.expires_at)
        try:
            form = compile_entry(entry)  # validates it
        except InvalidEntry as exc:
            raise BlocklistError(p, number, str(exc)) from None
        yield number, entry, form


def _rows(
    p: Path, lines: list[bytes], first: int, full: bool, progress: ReadProgress | None, total: int
) -> Iterator[_Row]:
    """`_entries` as rows a forked reader sends back."""
    for number, entry, form in _entries(p, lines, first, full, progress, total):
        if isinstance(entry, str):
            yield _Row(number, None, entry)
            continue
        assert form is not None
        etype, key, query = form
        if isinstance(key, bytes):
            yield _Row(number, entry, type=etype, digest=key, query=query)
        else:
            yield _Row(number, entry, type=etype, key=key, query=query)


# The entry lines a forked reader works on (set by the parent just before it forks).
_FORKED: tuple[Path, list[bytes], bool] | None = None


def _read_share(start: int, end: int) -> tuple[bytes, tuple[str, int, str] | None]:
    """In a forked reader: lines[start:end], as msgpack rows, and the first refusal met."""
    assert _FORKED is not None
    p, lines, full = _FORKED
    rows: list[_Row] = []
    try:
        rows.extend(_rows(p, lines[start:end], start + 2, full, None, 0))
    except BlocklistError as exc:
        return msgspec.msgpack.encode(rows), (exc.file, exc.line, exc.reason)
    return msgspec.msgpack.encode(rows), None


def _rows_forked(
    p: Path, lines: list[bytes], full: bool, processes: int, progress: ReadProgress | None
) -> Iterator[_Row]:
    """`_rows` over all lines, by `processes` forked readers; rows come back in file order,
    and a share's refusal is raised after the rows before it (so it is the one a single
    reader would have met first)."""
    import concurrent.futures
    import multiprocessing

    global _FORKED
    step = -(-len(lines) // processes)
    bounds = [(i, min(i + step, len(lines))) for i in range(0, len(lines), step)]
    decoder = msgspec.msgpack.Decoder(list[_Row])
    _FORKED = (p, lines, full)
    try:
        with concurrent.futures.ProcessPoolExecutor(
            len(bounds), mp_context=multiprocessing.get_context("fork")
        ) as pool:
            shares = [pool.submit(_read_share, a, b) for a, b in bounds]
            done = 0
            for (a, b), share in zip(bounds, shares, strict=True):
                data, refusal = share.result()
                yield from decoder.decode(data)
                if refusal is not None:
                    raise BlocklistError(*refusal)
                done += b - a
                if progress is not None:
                    progress(done, len(lines))
    finally:
        _FORKED = None


_SCAN_BYTES = 4 << 20  # entry lines are split this many bytes at a time
_HASH_BYTES = 64 << 20  # a mapped version's pages are let go after each this many hashed


def _count_lines(data: bytes | mmap.mmap) -> int:
    if isinstance(data, bytes):
        return data.count(b"\n")
    return sum(data[i : i + _SCAN_BYTES].count(b"\n") for i in range(0, len(data), _SCAN_BYTES))


@dataclass(frozen=True, slots=True)
class _Checked:
    """A version that passed every check made before its entry lines are parsed."""

    header: Header
    key_id: str
    body: tuple[int, int]  # where its entry lines are: [start, end) of the bytes


def _check(
    p: Path,
    data: bytes | mmap.mmap,
    public: Ed25519PublicKey,
    *,
    hash_body: bool = True,
    vouched: Callable[[Path, bytes], bool] | None = None,
) -> _Checked:
    """Framing, signature, header, line count and (unless `hash_body` is False: the caller
    checks it, `_BodyHash`) the entry lines' hash, on the file's bytes or its map: the checks
    and refusals `_split_lines` and `_verify` make on a list of lines, in the same order,
    without one. `vouched` (`Reading.vouched`): when it vouches for the header line, the
    signature line is read and its key checked, not its signature over the file."""
    if not data:
        raise BlocklistError(p, 0, "empty file (unsigned)")
    n = _count_lines(data)
    if data[-1:] != b"\n":
        raise BlocklistError(p, n + 1, "truncated: the last line has no newline")
    if n < 2:
        raise BlocklistError(p, n, "unsigned or truncated: no header and signature lines")
    sig_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    first_end = data.find(b"\n")
    if vouched is not None and vouched(p, bytes(data[:first_end])):
        kid = _verify_signed(p, n, data[sig_start:-1], None, public, key_id(public))
    else:
        with memoryview(data) as view, view[:sig_start] as signed:
            kid = _verify_signed(p, n, data[sig_start:-1], signed, public, key_id(public))
        _release(data)
    header = _header(p, data[:first_end])
    if header.entries != n - 2:
        raise BlocklistError(
            p, 1, f"header says {header.entries} entry lines, the file has {n - 2}"
        )
    checked = _Checked(header, kid, (first_end + 1, sig_start))
    if hash_body:
        with memoryview(data) as view, view[first_end + 1 : sig_start] as body:
            digest = hashlib.sha256(body).hexdigest()
        if digest != header.sha256:
            raise BlocklistError(p, 1, "sha256 of the entry lines does not match the header")
    return checked


class _BodyHash:
    """The sha256 of the entry lines against the header's, computed in a thread (hashlib
    releases the GIL) while the lines are parsed: the signature, checked first, already vouches
    for every byte, so parsing them meanwhile is safe; `check` (before any entry is used, and
    before any entry line's refusal is reported) raises what the hash check would have."""

    def __init__(self, p: Path, data: bytes | mmap.mmap, checked: _Checked) -> None:
        self.p, self.want = p, checked.header.sha256
        self.got = ""
        start, end = checked.body
        view = memoryview(data)
        self._thread = threading.Thread(target=self._run, args=(view, start, end), daemon=True)
        self._thread.start()

    def _run(self, view: memoryview, start: int, end: int) -> None:
        digest = hashlib.sha256()
        with view:
            for at in range(start, end, _HASH_BYTES):
                with view[at : min(at + _HASH_BYTES, end)] as piece:
                    digest.update(piece)
                _release(view.obj)  # type: ignore[arg-type]
        self.got = digest.hexdigest()

    def wait(self) -> None:
        self._thread.join()

    def check(self) -> None:
        self.wait()
        if self.got != self.want:
            raise BlocklistError(self.p, 1, "sha256 of the entry lines does not match the header")


def _release(data: bytes | mmap.mmap) -> None:
    """Drop a mapped version's pages from this process's page tables (they stay in the page
    cache): its RSS then counts what is being read, not every page read so far."""
    if isinstance(data, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        data.madvise(mmap.MADV_DONTNEED)


def _lines(data: bytes | mmap.mmap, start: int, end: int) -> Iterator[bytes]:
    """The lines of data[start:end] (which ends with a newline), a few MiB at a time."""
    pos = start
    scanned = 0
    while pos < end:
        stop = min(pos + _SCAN_BYTES, end)
        if stop < end:
            cut = data.rfind(b"\n", pos, stop)
            stop = data.find(b"\n", stop, end) + 1 if cut == -1 else cut + 1
        chunk = data[pos:stop]
        pos = stop
        scanned += len(chunk)
        if scanned >= _HASH_BYTES:
            _release(data)
            scanned = 0
        yield from chunk[:-1].split(b"\n")


def parse_version(
    data: bytes,
    source: str | os.PathLike[str],
    public_key_pem: bytes,
    *,
    reading: Reading | None = None,
) -> Version:
    """Verify and parse one version's bytes (a file's, or a fleet stream entry's: the same
    checks in the same order); `source` names it in every `BlocklistError`. `reading`: what
    the caller wants beside (`Reading`; its `stream` is for `read_version`)."""
    how = reading or _NO_READING
    p = Path(source)
    checked = _check(p, data, _public_key(public_key_pem))
    header = checked.header
    adds: list[Entry] = []
    removes: list[str] = []
    seen: set[str] = set()
    total = header.entries
    full = header.base is None
    rows: Iterable[tuple[int, Entry | str, Compiled | None]]
    if how.processes > 1 and total >= PARALLEL_MIN_LINES and sys.platform == "linux":
        body_lines = list(_lines(data, *checked.body))
        rows = (
            (r.line, r.removed, None) if r.entry is None else (r.line, r.entry, r.form)
            for r in _rows_forked(p, body_lines, full, how.processes, how.progress)
        )
    else:
        rows = _entries(p, _lines(data, *checked.body), 2, full, how.progress, total)
    compiled = how.compiled
    for line, entry, form in rows:
        if isinstance(entry, str):
            removes.append(entry)
            continue
        if compiled is not None:
            assert form is not None
            compiled[entry.id] = (entry, form)
        if entry.id in seen:
            raise BlocklistError(p, line, f"duplicate id {entry.id!r}")
        seen.add(entry.id)
        adds.append(entry)
    if how.progress is not None:
        how.progress(total, total)
    return _version(p, checked, tuple(adds), tuple(removes))


def _version(
    p: Path, checked: _Checked, adds: tuple[Entry, ...], removes: tuple[str, ...], **kw: bool
) -> Version:
    header = checked.header
    return Version(
        path=str(p),
        sequence=header.sequence,
        base=header.base,
        adds=adds,
        removes=removes,
        sha256=header.sha256,
        created_at=header.created_at,
        key_id=checked.key_id,
        valid_until=header.valid_until,
        audit_head=header.audit_head,
        **kw,
    )


def _read_streamed(p: Path, public_key_pem: bytes, max_bytes: int, how: Reading) -> Version:
    """`read_version` for `Reading.stream` and `Reading.shipped`: the file mapped, not read;
    a full version offered whole to `shipped`, else its entries handed to a sink as they are
    checked, never held (a delta is read as always; without a sink, or with forked readers,
    a declined version is parsed whole)."""
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise BlocklistError(p, 0, f"file larger than max_bytes ({max_bytes})")
            data: bytes | mmap.mmap = (
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            )
    except OSError as exc:
        raise BlocklistError(p, 0, f"cannot read: {exc.strerror or exc}") from None
    body_hash: _BodyHash | None = None
    try:
        public = _public_key(public_key_pem)
        vouched = how.vouched if how.shipped is not None else None
        checked = _check(p, data, public, hash_body=False, vouched=vouched)
        body_hash = _BodyHash(p, data, checked)
        if checked.header.base is not None:  # a delta: small, kept whole
            body_hash.check()
            plain = Reading(progress=how.progress, compiled=how.compiled)
            return parse_version(bytes(data), p, public_key_pem, reading=plain)
        if how.shipped is not None:
            body_hash.check()  # the bytes are the signed ones before anyone is offered them
            first = checked.body[0] - 1
            offer = SignedFile(p, checked.header, bytes(data[:first]), data, checked.body)
            if how.shipped(offer):
                return _version(p, checked, (), (), streamed=True)
        if how.stream is None or how.processes > 1:
            plain = Reading(progress=how.progress, compiled=how.compiled, processes=how.processes)
            return parse_version(bytes(data), p, public_key_pem, reading=plain)
        sink = how.stream(str(p), checked.header.entries)
        try:
            _stream(p, data, checked, sink, how.progress, body_hash)
        except BaseException:
            sink.abort()
            raise
        return _version(p, checked, (), (), streamed=True)
    finally:
        if body_hash is not None:
            body_hash.wait()  # its view of the map must go before the map does
        if isinstance(data, mmap.mmap):
            data.close()


def _stream(
    p: Path,
    data: bytes | mmap.mmap,
    checked: _Checked,
    sink: Sink,
    progress: ReadProgress | None,
    body_hash: _BodyHash,
) -> None:
    """A full version's entries into `sink`. Repeated ids are found from a 64-bit hash of
    each id (8 bytes an entry, not a set of every id): a match is confirmed against the ids
    themselves, and the refusal is the one a reader keeping every id would make first."""
    total = checked.header.entries
    id_hashes: array[int] = array("Q")
    rows = _entries(p, _lines(data, *checked.body), 2, True, progress, total, share=False)
    try:
        for _line, entry, form in rows:
            assert isinstance(entry, Entry) and form is not None
            id_hashes.append(xxh3_64_intdigest(entry.id.encode("utf-8", "surrogatepass")))
            sink.add(entry, form)
    except BlocklistError:
        body_hash.check()
        _refuse_duplicate(p, data, checked, id_hashes)  # an earlier line's refusal first
        raise
    body_hash.check()
    _refuse_duplicate(p, data, checked, id_hashes)
    if progress is not None:
        progress(total, total)


def _refuse_duplicate(
    p: Path, data: bytes | mmap.mmap, checked: _Checked, id_hashes: array[int]
) -> None:
    """Raise the "duplicate id" refusal for the first line (of those hashed) whose id an
    earlier line holds; nothing when none does."""
    found = _first_duplicate(data, *checked.body, id_hashes)
    if found is not None:
        raise BlocklistError(p, found[0] + 2, f"duplicate id {found[1]!r}")


def _first_duplicate(
    data: bytes | mmap.mmap, start: int, end: int, id_hashes: array[int]
) -> tuple[int, str] | None:
    """(index, id) of the first entry line of data[start:end] (of those whose id's xxh3 is in
    `id_hashes`, in order) whose id an earlier line holds: digests sorted, equal neighbours
    confirmed on the lines. Memory: the digests, not the ids."""
    import numpy as np  # the compile child's and the CLI's only: workers never read versions

    hs = np.frombuffer(id_hashes, dtype=np.uint64)
    order = np.argsort(hs, kind="stable")
    ordered = hs[order]
    equal = np.flatnonzero(ordered[1:] == ordered[:-1])
    del ordered
    if not len(equal):
        return None
    suspects = set(order[equal].tolist()) | set(order[equal + 1].tolist())
    decoder = msgspec.json.Decoder(AddLine)
    first_line: dict[str, int] = {}
    for i, raw in enumerate(_lines(data, start, end)):
        if i >= len(id_hashes):
            break
        if i in suspects:
            entry_id = decoder.decode(raw).id
            if entry_id in first_line:
                return i, entry_id
            first_line[entry_id] = i
    return None


# -- a directory of versions ----------------------------------------------------------------


def peek_sequence(path: Path) -> int | None:
    """The sequence a file claims (unverified; used only to decide what to verify first)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096)
        return msgspec.json.decode(first, type=Header).sequence
    except (OSError, msgspec.DecodeError):
        return None


def peek_header(path: Path) -> Header | None:
    """The header a file claims (unverified: to decide what to read, never what to enforce)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096)
        return msgspec.json.decode(first, type=Header)
    except (OSError, msgspec.DecodeError):
        return None


def list_versions(directory: str | os.PathLike[str]) -> list[Path]:
    """Candidate version files: regular *.jsonl files directly in `directory`, no dotfiles."""
    d = Path(directory)
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    return [
        d / name
        for name in names
        if name.endswith(SUFFIX) and not name.startswith(".") and (d / name).is_file()
    ]


DirectoryState = tuple[tuple[str, int, int, int], ...]


def directory_state(directory: str | os.PathLike[str]) -> DirectoryState:
    """(name, inode, size, mtime_ns) of every candidate version file: a listing and a stat per
    file, no read. Equal states mean no version file was added, removed or replaced since
    (`write_atomic` replaces: a new inode), so what was resolved from it still holds."""
    out = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if not name.endswith(SUFFIX) or name.startswith("."):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:
                    continue
                out.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(out))


def load_newest(
    directory: str | os.PathLike[str],
    public_key_pem: bytes,
    *,
    current_sequence: int | None,
    max_bytes: int,
    current_sha256: str = "",
    max_sequence_step: int = 0,
    info: LoadInfo | None = None,
    reading: Reading | None = None,
) -> tuple[tuple[list[Entry], int] | None, list[BlocklistError]]:
    """The full entry set of the newest valid version in `directory` newer than
    `current_sequence`, with its sequence; or None. Deltas are applied onto their base found in
    the same directory (recursively). Files are verified newest first and only as far as
    needed; every refusal met on the way is returned (the caller logs and counts them) and
    the next older candidate is tried. A directory whose newest valid version is older than
    `current_sequence` yields None and an error naming that file.

    `max_sequence_step` > 0 refuses a version more than that far beyond `current_sequence`
    (a signed jump to near the maximum would freeze the feed for good). `current_sha256`, when
    given, makes a *different* file claiming the current sequence an error naming both hashes
    instead of a silent no-op. `info`, when given, receives the returned version's hash and
    `valid_until`. `reading`: how each file is read (`Reading`)."""
    found = _Candidates(directory, public_key_pem, max_bytes, reading)
    for seq in sorted(found.by_seq, reverse=True):
        top = found.version_at(seq)
        if top is None:
            continue
        if current_sequence is not None and seq <= current_sequence:
            found.refuse_not_newer(top, current_sequence, current_sha256)
            return None, found.errors
        if (
            current_sequence is not None
            and max_sequence_step > 0
            and seq - current_sequence > max_sequence_step
        ):
            found.errors.append(
                BlocklistError(
                    top.path,
                    1,
                    f"sequence {seq} jumps {seq - current_sequence} beyond the enforced "
                    f"{current_sequence} (blocklist.max_sequence_step is {max_sequence_step})",
                )
            )
            continue
        chain = found.delta_chain(top)
        if chain is None:
            continue
        if len(chain) > 1 and chain[-1].streamed:
            whole = found.whole(chain[-1])  # a delta chain's base is needed as entries
            if whole is None:
                continue
            chain[-1] = whole
        if info is not None:
            info.sha256, info.valid_until = top.sha256, top.valid_until
            info.chain_length = len(chain)
            info.audit_head = top.audit_head
            info.streamed = top.path if top.streamed else ""
        return (apply_chain(chain), seq), found.errors
    return None, found.errors


class _Candidates:
    """The version files of one directory by the sequence they claim, each verified at most once
    and only when asked for, so that `load_newest` reads no more than it needs. Every refusal
    met is kept in `errors`, in the order met, for the caller to log and count."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        public_key_pem: bytes,
        max_bytes: int,
        reading: Reading | None = None,
    ) -> None:
        self.directory = directory
        self.reading = reading
        self.public_key_pem = public_key_pem
        self.max_bytes = max_bytes
        self.errors: list[BlocklistError] = []
        self.by_seq: dict[int, list[Path]] = {}
        self._verified: dict[Path, Version | BlocklistError] = {}
        for path in list_versions(directory):
            seq = peek_sequence(path)
            if seq is None:
                # Unreadable header: verify it anyway so the operator sees why.
                self.verified(path)
                continue
            self.by_seq.setdefault(seq, []).append(path)

    def verified(self, path: Path) -> Version | None:
        if path not in self._verified:
            try:
                self._verified[path] = read_version(
                    path,
                    self.public_key_pem,
                    max_bytes=self.max_bytes,
                    reading=self.reading,
                )
            except BlocklistError as exc:
                self._verified[path] = exc
                self.errors.append(exc)
        got = self._verified[path]
        return got if isinstance(got, Version) else None

    def whole(self, v: Version) -> Version | None:
        """A streamed version read again, its entries kept (the base of a delta chain)."""
        how = self.reading or _NO_READING
        plain = Reading(progress=how.progress, compiled=how.compiled)
        try:
            return read_version(
                v.path, self.public_key_pem, max_bytes=self.max_bytes, reading=plain
            )
        except BlocklistError as exc:  # changed since it was verified
            self.errors.append(exc)
            return None

    def version_at(self, seq: int) -> Version | None:
        """The first valid file that claims `seq` and really carries it (the claim is unsigned)."""
        for path in self.by_seq.get(seq, []):
            v = self.verified(path)
            if v is not None and v.sequence == seq:
                return v
        return None

    def refuse_not_newer(self, top: Version, current_sequence: int, current_sha256: str) -> None:
        """The newest valid version is not newer than the enforced one: nothing to load, but the
        operator must hear of a rival at the enforced sequence or of a feed that went back."""
        seq = top.sequence
        if seq == current_sequence and current_sha256:
            # Every file claiming the enforced sequence, not only the first valid one: a
            # second publisher (or an attacker with the key) must not go unnoticed.
            for path in self.by_seq[seq]:
                other = self.verified(path)
                if other is not None and other.sha256 != current_sha256:
                    self.errors.append(
                        BlocklistError(
                            other.path,
                            1,
                            f"a different version claims the enforced sequence {seq}: "
                            f"sha256 {other.sha256}, enforced {current_sha256}; "
                            "keeping the enforced one",
                        )
                    )
        if seq < current_sequence:
            self.errors.append(
                BlocklistError(
                    top.path,
                    1,
                    f"sequence {seq} is older than the enforced sequence "
                    f"{current_sequence}; keeping {current_sequence}",
                )
            )

    def delta_chain(self, top: Version) -> list[Version] | None:
        """`top` and the versions it rests on, newest first, down to a full version; None (the
        refusal kept in `errors`) when a base is missing or invalid or the chain is too long."""
        chain = [top]
        while chain[-1].base is not None and len(chain) <= MAX_DELTA_CHAIN:
            base = self.version_at(chain[-1].base)
            if base is None:
                self.errors.append(
                    BlocklistError(
                        chain[-1].path,
                        1,
                        f"delta base sequence {chain[-1].base} not found or invalid "
                        f"in {self.directory}",
                    )
                )
                break
            chain.append(base)
        if chain[-1].base is not None:
            if len(chain) > MAX_DELTA_CHAIN:
                self.errors.append(
                    BlocklistError(top.path, 1, f"delta chain longer than {MAX_DELTA_CHAIN}")
                )
            return None
        return chain


def apply_chain(chain: list[Version]) -> list[Entry]:
    """The entry set a delta chain (newest first, ending in a full version) stands for: applied
    oldest first, so a later version's remove or re-add of an id wins."""
    entries: dict[str, Entry] = {}
    for v in reversed(chain):
        for entry_id in v.removes:
            entries.pop(entry_id, None)
        for entry in v.adds:
            entries[entry.id] = entry
    return list(entries.values())
