"""Reading, checking and compiling a blocklist version, in a child process of the supervisor.

The supervisor never holds a full version's entries as Python objects (hundreds of bytes
each: a 10M-entry list would cost gigabytes, and the soak saw its RSS step up with every
larger version and stay there, because CPython keeps the arenas it grew). A *job* runs in a
fresh child (`python -m proxy.blocklist.loader`): it reads and verifies the signed version
(or takes a fleet version's entries, or the enforced file layer plus changes), canonicalises
every entry, and writes two compiled tables (`proxy.blocklist.table`):

- the *file layer* alone, which the supervisor maps to answer per-entry questions (is this id
  listed by a signed file? which entry does a removed push uncover?) with one hashed probe;
- the *node table* workers map: the file layer with the pushed entries over it (a hard link
  to the file layer when nothing is pushed: one file on disk and in the page cache), or the
  msgpack chunks of `blocklist.compiled_format = "msgpack"`.

A full version read from the directory is *streamed*: each entry, once checked and compiled,
goes straight into the table writers (`_Layers`, `format.Reading.stream`), so the child never
holds the version either; its memory is the writers' per-key arrays (~110-145 bytes an entry,
against ~1 KB when it held the entries). A delta chain, a fleet's entries and the
`msgpack` node format are read whole, as before; but a plain chain of small deltas is
applied by the supervisor as changes over a table (`proxy.blocklist.chain`), and a job then
reads only the chain's full base (`DirSource.path`), when it is not the enforced version.

A full version shipped with its signer's compiled table and signed manifest
(`proxy.blocklist.shipped`, `DirSource.spot_check_entries` > 0, the mapped format) is not
compiled at all: once the version's own checks pass, the companions are checked (signature,
bindings, hash, checksums, counts, a random spot check of lines canonicalised here) and the
table, copied, is the new file layer and, linked, the node table; pushed entries then go to
workers as the overlay they load it with (`Summary.node_overlay`), and no delta is worked out.
A refused table is reported in `Summary.table_refusals` and the version is compiled as always.

When the caller asks for it (`delta_max_fraction`), the child also works out what changed
against the enforced file layer; a small change is written as a delta file instead of a node
table, and goes to workers as a delta. The child answers with a small `Summary` (sequence,
hash, validity, audit head, counts, refusals); its memory is returned to the system when it
exits, whatever the version's size.

Why a plain subprocess and not a `ProcessPoolExecutor`: the supervisor's event loop reads the
child's progress lines as they come (`asyncio.create_subprocess_exec`), a job that hangs or is
killed is one child of known pid (killed on timeout, its half-written temporaries removed), and
nothing is left behind between jobs; a pool hides its processes, breaks for good when one of
them is killed (`BrokenProcessPool`) and needs a second channel for progress. A fresh
interpreter per job costs ~0.2 s, nothing beside a version's load.

Priority: a job beside serving workers runs at nice +10 (`Job.nice`), and starts in the idle
scheduling class (`run_job`'s `idle_s`, `blocklist.compile_idle_s`): a nice value only shares
the cores out by weight, so a worker that wakes beside a job hashing gigabytes may wait for
the job's turn to end, while an idle-class job gives the core up at once and takes only what
serving leaves. Serving that keeps every core busy would starve it, so after `idle_s` it goes
on at its nice value: moved there where allowed (CAP_SYS_NICE, or an RLIMIT_NICE that allows
it), else stopped and run again.

Protocol: the job as msgpack on the child's stdin; JSON lines on its stdout, `Progress` every
`PROGRESS_EVERY_S` at most, then one `Summary` or one `Failure`. Every output file is written
atomically (temporary + rename) and checked whole before the summary names it: a child that
dies leaves at most temporaries, which `cleanup` removes, and never a file a worker could load.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import msgspec

from proxy.blocklist.format import BlocklistError, LoadInfo, Reading, SignedFile, read_version
from proxy.blocklist.model import Compiled, Entry, EntryType, compile_entry
from proxy.blocklist.shipped import Rejected, adopt, vouches
from proxy.blocklist.table import MappedTable, TableWriter

log = logging.getLogger("edgeproxy.blocklist")

PROGRESS_EVERY_S = 0.5


class DirSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where a directory reload reads, and what it checks (`format.load_newest`)."""

    dir: str
    public_key: str
    current_sequence: int | None
    current_sha256: str
    max_bytes: int
    max_sequence_step: int
    require_valid_until: bool
    # > 0: a full version with a signer's compiled table beside it (`proxy.blocklist.shipped`)
    # is taken from that table, once this many of its lines (drawn at random) are found in
    # it; 0: every version is compiled here.
    spot_check_entries: int = 0
    # Set: this full version file alone is read (the base of a delta chain the supervisor
    # applies over its table as changes, `node.chain_in`), not the directory's newest.
    path: str = ""
    table_install: Literal["copy", "link"] = "copy"  # `shipped.adopt`'s `install`


class Job(msgspec.Struct, frozen=True, kw_only=True):
    version: int  # the node version the node table will carry
    now: float
    # The file layer enforced now: a compiled file-layer table and changes over it (a fleet's
    # small delta versions, `None` for a removed id). Empty: no file layer yet.
    base_table: str = ""
    base_changes: dict[str, Entry | None] = {}
    # The new file layer: read from `dir`, or the entries in `entries_path` (msgpack, already
    # verified), or the enforced one; then `changes` over it.
    source: Literal["dir", "entries", "base"]
    dir: DirSource | None = None
    entries_path: str = ""
    changes: dict[str, Entry | None] = {}
    pushed: list[Entry] = []
    file_out: str  # where the new file layer's table goes ("": not wanted)
    node_out: str
    node_format: Literal["mapped", "msgpack"] = "mapped"
    # >= 0: compare with the enforced layer; a change of at most max(1000, this share of the
    # list) is written to `delta_out` (a `Delta`) and no node table is made.
    delta_max_fraction: float = -1.0
    delta_out: str = ""
    processes: int = 1  # entry lines read by this many forked processes (`format.Reading`)
    # Added to the child's nice value: serving workers on the same cores keep their share of
    # the CPU (0 at start-up, when nothing serves yet).
    nice: int = 10


class Delta(msgspec.Struct, frozen=True):
    adds: list[Entry]
    removes: list[str]


class Found(msgspec.Struct, frozen=True):
    sequence: int
    sha256: str
    valid_until: float | None
    audit_head: dict[str, str | int | float] | None


class Refusal(msgspec.Struct, frozen=True):
    text: str
    stale: bool  # "older" / "not newer": a notice, not a failure


class Progress(msgspec.Struct, frozen=True, tag="progress"):
    phase: str  # "read" (verify and parse), "compile"
    done: int
    total: int


class TableRefusal(msgspec.Struct, frozen=True):
    """A shipped table not used (`shipped.Reason`); the version was compiled here instead."""

    reason: str
    text: str


class Summary(msgspec.Struct, frozen=True, tag="summary", kw_only=True):
    found: Found | None = None  # the version read (source "dir"); None: nothing to load
    refusals: list[Refusal] = []
    table_refusals: list[TableRefusal] = []
    shipped: bool = False  # the file layer is the signer's table: no entry was compiled here
    # The node table is the file layer alone (a shipped one): the pushed entries go to workers
    # with it, as their overlay (`BlocklistLoad.add`).
    node_overlay: bool = False
    made: bool = False  # a new file layer was written to file_out
    node_written: bool = False  # node_out holds the new node table
    delta: bool = False  # delta_out holds the change instead
    file_entries: int = 0
    entries: int = 0  # in the node layer (file + pushed)
    counts: dict[str, int] = {}  # the node layer's, by type


class Failure(msgspec.Struct, frozen=True, tag="failure"):
    error: str


Message = Progress | Summary | Failure
ProgressFn = Callable[[Progress], None]


class CompileFailed(Exception):
    """The job did not finish (an error it reported, or a child that died or hung)."""


# -- the child ----------------------------------------------------------------------------


class _Reporter:
    """Progress lines, at most one per PROGRESS_EVERY_S per phase (and each phase's last)."""

    def __init__(self, emit: ProgressFn) -> None:
        self.emit = emit
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == 0 or done >= total or now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.emit(Progress(phase, done, total))


class FileLayer:
    """A file layer: its compiled table (None: none yet) with changes over it (`None` for a
    removed id). The supervisor asks it about one id at a time; the child also walks it."""

    def __init__(self, table: MappedTable | None, changes: Mapping[str, Entry | None]) -> None:
        self.table = table
        self.changes = changes

    def get(self, entry_id: str) -> Entry | None:
        """The entry with this id: one hashed probe of the table (the full id confirmed in
        its record), or a change made since."""
        if entry_id in self.changes:
            return self.changes[entry_id]
        if self.table is None:
            return None
        index = self.table.index_of(entry_id)
        return self.table.entry(index) if index >= 0 else None

    def count_without(self, ids: Mapping[str, object]) -> int:
        """How many entries the layer holds whose id is not in `ids` (a probe per change and
        per id, not a walk)."""
        table = self.table
        count = table.entries if table is not None else 0
        for entry_id, changed in self.changes.items():
            in_table = table is not None and table.index_of(entry_id) >= 0
            count += (changed is not None) - in_table
        return count - sum(1 for entry_id in ids if self.get(entry_id) is not None)

    def __iter__(self) -> Iterator[Entry]:
        """Every entry: reads the whole table (the child's work, or inspection)."""
        if self.table is not None:
            for entry in self.table:
                if entry.id not in self.changes:
                    yield entry
        yield from (e for e in self.changes.values() if e is not None)


class _NodeChunks:
    """The node layer in `blocklist.compiled_format = "msgpack"`: every entry, kept (that
    format's chunks are built from the whole list), written by `finish`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[Entry] = []

    def add(self, entry: Entry, form: Compiled | None = None) -> None:
        self.entries.append(entry)

    def finish(self, version: int) -> None:
        from proxy.blocklist.compiled import write_compiled

        write_compiled(self.path, self.entries)

    def abort(self) -> None:
        self.entries.clear()


class _Layers:
    """The tables a job writes, fed the new file layer's entries one at a time in list order
    (a streamed version's as they are read and checked, or a list's): nothing holds them all.

    - the file layer (`file_out`): the entries with `job.changes` applied on the way (a
      changed entry in its place, a removed one dropped, new ones after the rest);
    - the node layer (`node_out`), when it is not the same file: each pushed entry in place of
      the file entry with its id, the other pushed ones after (`{**files, **pushed}`);
    - what changed against the enforced file layer, while it may still be sent as a delta
      (`job.delta_max_fraction`): the adds as they pass, the removes counted from the entries
      met again, and looked for only when there are some.
    """

    def __init__(self, job: Job, old: FileLayer, report: _Reporter, total: int) -> None:
        self.job, self.old, self.report, self.total = job, old, report, total
        self.changes = job.changes
        self.pushed = {e.id: e for e in job.pushed}
        self.files = TableWriter(Path(job.file_out), job.now) if job.file_out else None
        self.node: TableWriter | _NodeChunks | None = None
        if job.node_format == "msgpack":
            self.node = _NodeChunks(Path(job.node_out))
        elif self.pushed or not job.file_out:
            self.node = TableWriter(Path(job.node_out), job.now)
        self.file_entries = 0
        self.counts = dict.fromkeys((t.value for t in EntryType), 0)
        self._changed: set[str] = set()
        self._pushed_seen: set[str] = set()
        # the delta, while it may still be one
        self.adds: list[Entry] | None = None
        self._present = 0  # new file entries (not pushed over) whose id the old layer holds
        if job.delta_max_fraction >= 0 and old.table is not None:
            self._cap = max(
                1000, job.delta_max_fraction * (total + len(self.changes) + len(self.pushed))
            )
            if abs(total - old.table.entries) <= self._cap + len(old.changes) + len(self.changes):
                self.adds = []

    def add(self, entry: Entry, form: Compiled | None) -> None:
        """A file entry, in list order (`format.Sink`)."""
        changes = self.changes
        if changes and entry.id in changes:
            self._changed.add(entry.id)
            changed = changes[entry.id]
            if changed is None:
                return
            entry, form = changed, None
        self._file(entry, form)

    def _file(self, entry: Entry, form: Compiled | None) -> None:
        if form is None:
            form = compile_entry(entry)
        self.file_entries += 1
        if self.files is not None:
            self.files.add(entry, form)
        pushed = self.pushed.get(entry.id) if self.pushed else None
        if pushed is not None:
            self._pushed_seen.add(entry.id)
            entry, form = pushed, None
        elif self.adds is not None:
            self._compare(entry)
        if self.node is not None:
            self.node.add(entry, form)
        self.counts[str(entry.type)] += 1

    def _compare(self, entry: Entry) -> None:
        assert self.adds is not None
        before = self.old.get(entry.id)
        if before is not None:
            self._present += 1
        if before != entry:
            self.adds.append(entry)
            if len(self.adds) > self._cap:
                self.adds = None  # no delta: stop comparing

    def abort(self) -> None:
        for writer in (self.files, self.node):
            if writer is not None:
                writer.abort()

    def finish(self) -> tuple[Summary, Delta | None]:
        """Write what is left and the tables; the summary (without `found`, `refusals`) and
        the delta when the change is small enough to be one (then no node table is made)."""
        job = self.job
        for entry_id, changed in self.changes.items():
            if changed is not None and entry_id not in self._changed:
                self._file(changed, None)
        for entry_id, pushed in self.pushed.items():
            if entry_id not in self._pushed_seen:
                if self.node is not None:
                    self.node.add(pushed, None)
                self.counts[str(pushed.type)] += 1
        size = sum(self.counts.values())
        summary = Summary(
            made=True, file_entries=self.file_entries, entries=size, counts=dict(self.counts)
        )
        if self.files is not None:
            self._table(self.files)
        delta = self._delta(size)
        if delta is not None:
            if self.node is not None:
                self.node.abort()
            return summary, delta
        if isinstance(self.node, _NodeChunks):
            self.node.finish(job.version)
        elif self.node is not None:
            self._table(self.node)
        else:
            Path(job.node_out).unlink(missing_ok=True)
            os.link(job.file_out, job.node_out)  # the same entries: one file, one page cache
        return msgspec.structs.replace(summary, node_written=True), None

    def _table(self, writer: TableWriter) -> None:
        total = writer.entries
        self.report("compile", 0, total)
        try:
            writer.finish(self.job.version)
            # Read back whole (checksum) before anyone is told of it: a full disk or a bad
            # write ends the job here, and leaves no file behind.
            MappedTable(writer.path).verify()
        except BaseException:
            writer.path.unlink(missing_ok=True)
            raise
        self.report("compile", total, total)

    def _delta(self, size: int) -> Delta | None:
        """What workers must change, when it is small enough to send as a delta; else None.
        The pushed layer is the same before and after, so only file entries it does not cover
        count. Removes are the old layer's entries not met again: counted, then looked for
        in the old layer (probing the new file table) only when there are some."""
        old, adds = self.old, self.adds
        if adds is None or old.table is None or self.files is None:
            return None
        limit = max(1000, self.job.delta_max_fraction * size)
        if abs(self.file_entries - old.table.entries) > limit + len(old.changes):
            return None
        if len(adds) > limit:
            return None
        old_count = old.count_without(self.pushed)
        if old_count - self._present == 0:
            return Delta(adds, [])
        if len(adds) + old_count - self._present > limit:
            return None
        new = FileLayer(MappedTable(self.files.path), {})
        removes = [e.id for e in old if e.id not in self.pushed and new.get(e.id) is None]
        return Delta(adds, removes)


def run(job: Job, emit: ProgressFn) -> Summary:
    """Do `job` (in the child; tests call it in-process too)."""
    from proxy.blocklist.format import load_newest

    report = _Reporter(emit)
    base = MappedTable(Path(job.base_table)) if job.base_table else None
    old = FileLayer(base, job.base_changes)
    found: Found | None = None
    refusals: list[Refusal] = []
    streamed: dict[str, _Layers] = {}  # every full version read gave its entries to one
    shipped: dict[str, Path] = {}  # or its signer's table was taken: where the copy is
    table_refusals: list[TableRefusal] = []
    layers: _Layers | None = None
    summary: Summary | None = None
    try:
        if job.source == "dir":
            assert job.dir is not None
            src = job.dir
            info = LoadInfo()
            public_key = Path(src.public_key).read_bytes()
            report("read", 0, 1)

            def stream(path: str, total: int) -> _Layers:
                streamed[path] = _Layers(job, old, report, total)
                return streamed[path]

            def ship(offer: SignedFile) -> bool:
                return _ship(job, public_key, offer, report, shipped, table_refusals)

            use_tables = src.spot_check_entries > 0 and job.node_format == "mapped"
            reading = Reading(
                progress=lambda done, total: report("read", done, total),
                processes=job.processes,
                stream=stream,
                shipped=ship if use_tables and job.file_out else None,
                vouched=lambda path, line: vouches(path, line, public_key),
            )
            if src.path:
                got, errors = _read_base(src, public_key, info, reading)
            else:
                got, errors = load_newest(
                    src.dir,
                    public_key,
                    current_sequence=src.current_sequence,
                    max_bytes=src.max_bytes,
                    current_sha256=src.current_sha256,
                    max_sequence_step=src.max_sequence_step,
                    info=info,
                    reading=reading,
                )
            if got is not None and src.require_valid_until and info.valid_until is None:
                errors.append(
                    BlocklistError(
                        src.dir,
                        0,
                        f"version {got[1]} has no valid_until and blocklist.require_valid_until "
                        "is set; keeping the enforced list",
                    )
                )
                got = None
            refusals = [
                Refusal(str(e), "older" in e.reason or "not newer" in e.reason) for e in errors
            ]
            if got is None:
                return Summary(refusals=refusals, table_refusals=table_refusals)
            listed, sequence = got
            found = Found(sequence, info.sha256, info.valid_until, info.audit_head)
            if info.streamed in shipped:
                os.replace(shipped.pop(info.streamed), job.file_out)
                summary = _shipped_summary(job)
            elif info.streamed:
                layers = streamed.pop(info.streamed)
            else:
                layers = _fed(job, old, report, listed)
        elif job.source == "entries":
            # a fleet's entries, decoded whole: the last of a repeated id wins, in the first's place
            entries = msgspec.msgpack.decode(Path(job.entries_path).read_bytes(), type=list[Entry])
            layers = _fed(job, old, report, list({e.id: e for e in entries}.values()))
        else:
            layers = _fed(job, old, report, old)
        delta: Delta | None = None
        if layers is not None:
            summary, delta = layers.finish()
            layers = None
    finally:
        for unused in (*streamed.values(), *([layers] if layers is not None else [])):
            unused.abort()
        for copy in shipped.values():
            copy.unlink(missing_ok=True)
    assert summary is not None
    summary = msgspec.structs.replace(
        summary, found=found, refusals=refusals, table_refusals=table_refusals
    )
    if delta is not None:
        Path(job.delta_out).write_bytes(msgspec.msgpack.encode(delta))
        return msgspec.structs.replace(summary, delta=True)
    return summary


def _read_base(
    src: DirSource, public_key: bytes, info: LoadInfo, reading: Reading
) -> tuple[tuple[list[Entry], int] | None, list[BlocklistError]]:
    """`load_newest` for the one full version the supervisor names (`DirSource.path`): the
    base of a delta chain it applies over the table made here. The file's checks are the
    same; no other file is read."""
    path = Path(src.path)
    try:
        v = read_version(path, public_key, max_bytes=src.max_bytes, reading=reading)
    except BlocklistError as e:
        return None, [e]
    current = src.current_sequence
    if v.base is not None or (current is not None and v.sequence <= current):
        return None, [BlocklistError(path, 1, f"not a full version newer than {current}")]
    info.sha256, info.valid_until, info.audit_head = v.sha256, v.valid_until, v.audit_head
    info.streamed = v.path if v.streamed else ""
    return (list(v.adds), v.sequence), []


def _ship(
    job: Job,
    public_key: bytes,
    offer: SignedFile,
    report: _Reporter,
    shipped: dict[str, Path],
    refusals: list[TableRefusal],
) -> bool:
    """`Reading.shipped`: take a full version from its signer's table when its companions
    pass every check (`shipped.adopt`), copied beside `file_out`; a refused table is noted
    and the version is compiled here as always."""
    assert job.dir is not None
    out = Path(job.file_out)
    copy = out.with_name(f".{out.name}.shipped-{len(shipped) + len(refusals)}")
    try:
        taken = adopt(
            offer,
            public_key,
            copy,
            job.version,
            spot_check=job.dir.spot_check_entries,
            install=job.dir.table_install,
            progress=lambda done, total: report("table", done, total),
        )
    except Rejected as e:
        refusals.append(TableRefusal(e.reason.value, str(e)))
        return False
    if taken:
        shipped[str(offer.path)] = copy
        report("table", offer.header.entries, offer.header.entries)
    return taken


def _shipped_summary(job: Job) -> Summary:
    """The summary of a file layer taken from a shipped table: nothing was compiled, so the
    node table is the same file (a hard link), and the pushed entries, if any, go to workers
    as the overlay they load it with. Counts come from the table's header and a probe per
    pushed entry; no delta is worked out (that would read every entry): workers get a load."""
    table = MappedTable(Path(job.file_out))
    counts = {str(t): n for t, n in table.counts.items()}
    for pushed in job.pushed:
        index = table.index_of(pushed.id)
        if index >= 0:
            counts[str(table.entry(index).type)] -= 1
        counts[str(pushed.type)] += 1
    node = Path(job.node_out)
    node.unlink(missing_ok=True)
    os.link(job.file_out, node)
    return Summary(
        made=True,
        node_written=True,
        file_entries=table.entries,
        entries=sum(counts.values()),
        counts=counts,
        shipped=True,
        node_overlay=bool(job.pushed),
    )


def _fed(job: Job, old: FileLayer, report: _Reporter, entries: Iterable[Entry]) -> _Layers:
    """`_Layers` fed a list that was not streamed (a delta chain's, a fleet's, the enforced
    layer's), with "compile" progress."""
    total = len(entries) if isinstance(entries, list) else old.count_without({})
    layers = _Layers(job, old, report, total)
    report("compile", 0, total)
    try:
        for done, entry in enumerate(entries, start=1):
            layers.add(entry, None)
            if done % 65536 == 0:
                report("compile", done, total)
    except BaseException:
        layers.abort()
        raise
    return layers


def main() -> None:
    """`python -m proxy.blocklist.loader`: one job from stdin, answers on stdout."""
    job = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=Job)
    # A job makes millions of short-lived objects and no reference cycles worth finding: the
    # cyclic collector's passes (a quarter of the writer's time at 1M entries) are skipped, and
    # what the process holds is returned when it exits.
    gc.disable()
    if job.nice:
        with contextlib.suppress(OSError):
            os.nice(job.nice)
    out = sys.stdout.buffer
    encoder = msgspec.json.Encoder()

    def emit(msg: Message) -> None:
        out.write(encoder.encode(msg) + b"\n")
        out.flush()

    try:
        summary = run(job, emit)
    except Exception as e:  # noqa: BLE001 - reported to the supervisor with its cause
        emit(Failure(f"{type(e).__name__}: {e}"))
        sys.exit(1)
    emit(summary)


# -- the supervisor's side ------------------------------------------------------------------

_decoder = msgspec.json.Decoder(Message)


def _command() -> list[str]:
    return [sys.executable, "-m", "proxy.blocklist.loader"]


def _outcome(summary: Summary | None, failure: str, code: int | None) -> Summary:
    if summary is not None and code == 0:
        return summary
    if failure:
        raise CompileFailed(failure)
    if code is not None and code < 0:
        raise CompileFailed(f"the compile process was killed by {signal.Signals(-code).name}")
    raise CompileFailed(f"the compile process exited with status {code} and no answer")


class _Answers:
    """The child's stdout lines, as they come."""

    def __init__(self, on_progress: ProgressFn) -> None:
        self.on_progress = on_progress
        self.summary: Summary | None = None
        self.failure = ""

    def take(self, line: bytes) -> None:
        try:
            msg = _decoder.decode(line)
        except msgspec.DecodeError:
            return  # not ours (a library printing): ignored
        if isinstance(msg, Progress):
            self.on_progress(msg)
        elif isinstance(msg, Summary):
            self.summary = msg
        else:
            self.failure = msg.error


async def run_job(
    job: Job,
    on_progress: ProgressFn,
    timeout_s: float,
    on_start: Callable[[int], None],
    idle_s: float = 0.0,
) -> Summary:
    """Run `job` in a child; its summary, or `CompileFailed`. `on_start(pid)` names the child
    (status, tests); `on_progress` hears its progress lines on the event loop.

    `idle_s` > 0 (and a job of raised nice value, one that runs beside serving workers): the
    child starts in the idle scheduling class, so it takes only CPU time serving leaves and
    never delays a worker that wakes. A node whose cores serving keeps busy would starve it,
    so after `idle_s` it is moved back to its nice value; where that is not allowed (leaving
    SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE that allows the nice value), it is
    stopped and run again at its nice value, with what is left of `timeout_s`."""
    started = time.monotonic()
    idle = idle_s > 0 and job.nice > 0
    while True:
        left = timeout_s - (time.monotonic() - started)
        try:
            summary, restart = await _run_job_once(job, on_progress, left, on_start, idle_s, idle)
        except TimeoutError:
            raise CompileFailed(f"the compile took longer than {timeout_s:g} s; stopped") from None
        if not restart:
            return summary
        log.warning(
            "blocklist compile job still running after %g s in the idle scheduling class, "
            "which it may not leave (no CAP_SYS_NICE, RLIMIT_NICE): run again at nice +%d",
            idle_s,
            job.nice,
        )
        idle = False


async def _run_job_once(
    job: Job,
    on_progress: ProgressFn,
    timeout_s: float,
    on_start: Callable[[int], None],
    idle_s: float,
    idle: bool,
) -> tuple[Summary, bool]:
    """`run_job`'s one child, in the idle class for its first `idle_s` when `idle`: (its
    summary, False), or (a placeholder, True) when it was stopped there to be run again.
    `TimeoutError` past `timeout_s`."""
    proc = await asyncio.create_subprocess_exec(
        *_command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    if idle:  # set here, not by the child: the timer below can then never come first
        try:
            os.sched_setscheduler(proc.pid, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError):  # not Linux: at its nice value throughout
            idle = False
    on_start(proc.pid)
    answers = _Answers(on_progress)
    restart = False

    def leave_idle() -> None:
        nonlocal restart
        if proc.returncode is None and not _leave_idle(proc.pid):
            restart = True
            proc.kill()

    timer = asyncio.get_running_loop().call_later(idle_s, leave_idle) if idle else None
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(timeout_s):
            proc.stdin.write(msgspec.msgpack.encode(job))
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
                proc.stdin.close()
            async for line in proc.stdout:
                answers.take(line)
            code = await proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        cleanup(job)
    if restart:
        return Summary(), True
    return _outcome(answers.summary, answers.failure, code), False


def _leave_idle(pid: int) -> bool:
    """Move every thread of `pid` and of the processes it started (a job's forked readers)
    from the idle scheduling class back to the normal one, at the nice value each has; False
    when that is not allowed."""
    try:
        for tid in _threads_below(pid):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    except PermissionError:
        return False
    except (OSError, AttributeError):
        return True  # not Linux: it never entered the idle class
    log.info("blocklist compile job moved out of the idle scheduling class")
    return True


def _threads_below(pid: int) -> list[int]:
    """The thread ids of `pid` and of its descendants (Linux's /proc), `pid`'s first."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for tid in sorted(os.listdir(f"/proc/{p}/task"), key=int):
                found.append(int(tid))
                with contextlib.suppress(OSError):
                    kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
                    todo.extend(int(k) for k in kids)
    return found or [pid]


def run_job_sync(
    job: Job, on_progress: ProgressFn, timeout_s: float, on_start: Callable[[int], None]
) -> Summary:
    """`run_job` for callers without an event loop (the node's start, before any worker)."""
    proc = subprocess.Popen(_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    on_start(proc.pid)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout_s, stop)
    timer.start()
    answers = _Answers(on_progress)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(msgspec.msgpack.encode(job))
            proc.stdin.close()
        for line in proc.stdout:
            answers.take(line)
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        cleanup(job)
    if timed_out.is_set():
        raise CompileFailed(f"the compile took longer than {timeout_s:g} s; stopped")
    return _outcome(answers.summary, answers.failure, code)


def cleanup(job: Job) -> None:
    """Remove what a child that died mid-write left: temporaries beside its outputs (never a
    finished file: those are renamed into place whole, and the caller decides on them)."""
    for out in (job.file_out, job.node_out, job.delta_out):
        if not out:
            continue
        path = Path(out)
        for tmp in path.parent.glob(f".{path.name}.*"):
            with contextlib.suppress(OSError):
                tmp.unlink()


if __name__ == "__main__":
    main()
