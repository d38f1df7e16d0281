"""The node's blocklist, as the supervisor holds it: two layers and one version number.

- the *file layer*: the newest valid signed version in `blocklist.dir` (or from a fleet feed).
  It is read, verified and compiled in a child process (`proxy.blocklist.loader`; a full
  version shipped with its signer's table is verified and mapped there instead of compiled,
  `proxy.blocklist.shipped`), never held here as Python objects: the supervisor maps the
  layer's compiled table and asks it about one id at a time (a removed push uncovers the
  file's entry; `known`), plus the small changes a fleet's delta versions made since it was
  compiled (`_file_changes`);
- the *push layer*: entries operators (or the takedown service) pushed over the admin API,
  persisted in the state directory so a restart keeps enforcing them.

Deltas never make the node compile the list again: a chain of them over the enforced version,
or over a newer full version (taken from its signer's table), is read here and applied as
changes over the table (`proxy.blocklist.chain`), at a reload and at start. The file layer's
table outlives a stop (`FileRecord` names it and the version it holds): a start whose
directory still holds that version maps it, with no compile job at all.

Every change to either layer makes the next node version. A version counts as applied only when
every worker answers that it enforces it; the time of the last answer is the proof
(`applied_at`) the takedown service collects.

The supervisor's memory so does not grow with the list: what a version costs is the child's,
returned when it exits, and the mapped files' pages (page cache, shared with every worker).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from proxy.blocklist.chain import Chain, chain_in, read_links
from proxy.blocklist.changelog import Change, ChangeLog
from proxy.blocklist.format import (
    BlocklistError,
    Version,
    write_atomic,
    write_atomic_all,
)
from proxy.blocklist.loader import (
    CompileFailed,
    Delta,
    DirSource,
    FileLayer,
    Job,
    Progress,
    Summary,
    run_job,
    run_job_sync,
)
from proxy.blocklist.model import Entry, EntryType, validate_entry
from proxy.blocklist.pin import Pinner
from proxy.blocklist.table import MappedTable, Seal, TableError, stamp_of
from proxy.config import Config

log = logging.getLogger("edgeproxy.blocklist")

Broadcast = Callable[[str, dict[str, Any]], Awaitable[list[dict[str, Any]]]]
PROGRESS_LOG_EVERY_S = 5.0  # a long load says how far it is this often in the log


class StartupRefused(Exception):
    pass


class FileRecord(msgspec.Struct, frozen=True):
    """The state directory's note of the file layer's table (`blocklist-file.json`): the next
    start maps it instead of compiling when the directory still holds its version."""

    table: str  # its file name in the state directory
    stamp: int  # the version in its header (workers are told to expect it: `load_args`)
    sequence: int  # the file version it holds, exactly (no changes over it)
    sha256: str
    valid_until: float | None


@dataclass
class Loading:
    """A compile job running now (what `edgeproxy status` and the metrics show)."""

    pid: int
    what: str  # "file", "feed", "refresh"
    started_at: float
    phase: str = "start"
    done: int = 0
    total: int = 0
    logged_at: float = 0.0

    def rate(self, now: float) -> float:
        """Entries a second in the current phase, from the start of the job."""
        elapsed = now - self.started_at
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self, now: float) -> float | None:
        rate = self.rate(now)
        if rate <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        eta = self.eta_s(now)
        return {
            "pid": self.pid,
            "what": self.what,
            "phase": self.phase,
            "entries_done": self.done,
            "entries_total": self.total,
            "entries_per_s": round(self.rate(now), 1),
            "eta_s": None if eta is None else round(eta, 1),
            "running_s": round(now - self.started_at, 1),
        }


class NodeBlocklist:
    def __init__(self, cfg: Config, state_dir: Path, broadcast: Broadcast) -> None:
        self.cfg = cfg.blocklist
        self.state_dir = state_dir
        self.broadcast = broadcast
        # The probe sections of the table workers map, locked in memory (proxy/blocklist/pin.py)
        self.pinner = Pinner(self.cfg.pin_probe_sections and self.mapped)
        # Pushes and removals between two writes of the state files (proxy/blocklist/changelog.py)
        self._changes: ChangeLog | None = None
        self._audit_head_written: bytes | None = None  # what audit-head.json holds
        self._audit_head_lock = threading.Lock()  # its writers: the loop, a mirror, a state write
        self._head_mirror: asyncio.Future[None] | None = None
        # The file layer: its compiled table (mapped; per-id probes only), and the changes
        # small fleet delta versions made since (folded by the next compile).
        self.file_table: MappedTable | None = None
        self._file_changes: dict[str, Entry | None] = {}
        self._file_generation = 0  # bumped by every change of the file layer
        self.file_sequence: int | None = None
        self.file_sha256 = ""
        # The file version the table holds exactly (sequence, sha256, valid_until), when known:
        # noted in the state directory (`FileRecord`) so that the next start maps it.
        self._table_holds: tuple[int, str, float | None] | None = None
        self._record_written: bytes | None = None
        self._recorded_table = ""  # the table the record names: kept when the node stops
        # The enforced file version's signed validity; None when its signer set none.
        self.valid_until: float | None = None
        self.pushed: dict[str, Entry] = {}
        self._pushed_written: bytes | None = None  # what pushed-entries.json holds
        self.version = 0
        self.applied_at = 0.0
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.reload_failures = 0
        self.last_errors: list[str] = []
        self.lock = asyncio.Lock()
        self.compiled_version = 0
        self._counts: dict[str, int] = {}
        self._counts_version = -1
        self.deltas: list[dict[str, Any]] = []
        self._refresh: asyncio.Future[None] | None = None
        self._public_key = b""
        # The last signed audit-log head a publisher sent (file header or push), kept across
        # restarts: evidence held outside the publisher's database (proxy/takedown/anchor.py).
        self.audit_head: dict[str, Any] | None = None
        # The mapped file workers load now, and the one before it (a worker may be opening
        # it while a newer one is written); older ones are removed.
        self.compiled_path: Path | None = None
        # The version in the compiled file's header, read when it became the compiled path:
        # not `compiled_version` for a signer's table linked in (`shipped.adopt`).
        self._compiled_stamp = 0
        # what the supervisor saw of the compiled file once its job had checked every byte
        # (`table.Seal`): sent with each load, so workers need not check it again
        self._compiled_seal: Seal | None = None
        self._previous_path: Path | None = None
        self._compiled_entries = 0
        # Changes workers hold in their overlay (since the base they mapped), and that base's
        # size: past `overlay_max_fraction` of it, a refreshed base is swapped in (a fold).
        self.overlay_changes = 0
        self._base_entries = 0
        self.folds = 0
        self.compiles = 0  # compile jobs finished (file versions, feed versions, refreshes)
        # File versions taken from their signer's compiled table (proxy/blocklist/shipped.py),
        # and shipped tables refused by reason (those versions were compiled here instead).
        self.tables_shipped = 0
        self.table_rejections: dict[str, int] = {}
        # Pushed entries the compiled node table lacks (it is a shipped file layer): workers
        # load it with these as their overlay.
        self._compiled_overlay: list[Entry] = []
        self.loading: Loading | None = None
        # Called with each job's progress (tests; the supervisor's status reads `loading`).
        self.on_progress: Callable[[Loading], None] | None = None

    # -- persistence --------------------------------------------------------------------------

    @property
    def _pushed_path(self) -> Path:
        return self.state_dir / "pushed-entries.json"

    @property
    def _version_path(self) -> Path:
        return self.state_dir / "blocklist-version"

    @property
    def _change_log_path(self) -> Path:
        return self.state_dir / "blocklist-changes.log"

    @property
    def _audit_head_path(self) -> Path:
        return self.state_dir / "audit-head.json"

    @property
    def _file_record_path(self) -> Path:
        return self.state_dir / "blocklist-file.json"

    def keep_audit_head(self, head: dict[str, Any] | None, via: str) -> None:
        """Keep a publisher's signed audit-log head (with when and how it came), on disk now."""
        if self._take_audit_head(head, via) is not None:
            self._write_audit_head()

    def _write_audit_head(self) -> None:
        """audit-head.json := the head held now (from any thread; the last write is always of
        the newest head, so the file never goes back)."""
        with self._audit_head_lock:
            if self.audit_head is None:
                return
            data = msgspec.json.encode(self.audit_head)
            if data != self._audit_head_written:
                write_atomic(self._audit_head_path, data)
                self._audit_head_written = data

    def _mirror_audit_head(self) -> None:
        """A head that came with a logged change is on disk in the change log already;
        audit-head.json, where an operator reads it, follows off the answer's path."""
        if self._head_mirror is not None and not self._head_mirror.done():
            return  # the write under way reads the newest head; a later change starts another

        async def mirror() -> None:
            try:
                await asyncio.to_thread(self._write_audit_head)
            except OSError as e:
                log.warning(
                    "could not write %s (the change log holds it): %s", self._audit_head_path, e
                )

        self._head_mirror = asyncio.ensure_future(mirror())

    def _take_audit_head(self, head: dict[str, Any] | None, via: str) -> dict[str, Any] | None:
        if head is None:
            return None
        self.audit_head = {**head, "received_at": time.time(), "via": via}
        return self.audit_head

    @property
    def full_path(self) -> Path:
        """Where the msgpack fallback format is written (one file, replaced in place)."""
        return self.state_dir / f"blocklist-compiled-{os.getpid()}.msgpack"

    @property
    def mapped(self) -> bool:
        return self.cfg.compiled_format == "mapped"

    def _mapped_path(self, version: int) -> Path:
        # One file per version: a worker maps a file and keeps it, so it is never rewritten.
        return self.state_dir / f"blocklist-compiled-{os.getpid()}-v{version}.map"

    def _file_path(self, version: int) -> Path:
        return self.state_dir / f"blocklist-file-{os.getpid()}-v{version}.map"

    def _scratch_path(self, what: str, version: int) -> Path:
        return self.state_dir / f"blocklist-{what}-{os.getpid()}-v{version}.msgpack"

    def compiled_files(self) -> list[Path]:
        """Every compiled file this supervisor wrote that is still on disk, but the file
        layer's table the state's record names (the next start maps it: `_map_kept`; the
        mapped format only)."""
        pid = os.getpid()
        kept = self._recorded_table if self.mapped else ""
        return [
            *self.state_dir.glob(f"blocklist-compiled-{pid}-v*.map"),
            *(p for p in self.state_dir.glob(f"blocklist-file-{pid}-v*.map") if p.name != kept),
            *([self.full_path] if self.full_path.exists() else []),
        ]

    def _persist(self) -> None:
        self._write_state(self._state_bytes())

    def _state_bytes(self) -> dict[Path, bytes]:
        """What the state files must hold now, file by file, leaving out those that hold it
        already: a file or feed version leaves the pushed entries as they were, and a file
        written is a file fsync more (`write_atomic_all`)."""
        out = {}
        pushed = msgspec.json.encode(list(self.pushed.values()))
        if pushed != self._pushed_written:
            out[self._pushed_path] = pushed
        out[self._version_path] = str(self.version).encode()
        record = self._file_record()
        if record is not None and record != self._record_written:
            out[self._file_record_path] = record
        return out

    def _keep(self, change: Change | None) -> None:
        """Make the state a restart reads hold the current version: a push's or removal's
        `change` appended to the log (one in-place write and fdatasync), else, or when the
        log is full, the state files written whole (which empties the log)."""
        logs = self._changes
        if change is not None and logs is not None:
            if self._file_record() in (None, self._record_written) and logs.append(change):
                return
        self._write_state(self._state_bytes())

    def _file_record(self) -> bytes | None:
        """`FileRecord` of the file layer's table; None when what it holds is not known
        exactly (a record written before still names a table that held its version, or one
        that is gone: never another one, the names carry the version)."""
        table, holds = self.file_table, self._table_holds
        if table is None or holds is None:
            return None
        return msgspec.json.encode(FileRecord(table.path.name, table.version, *holds))

    def _write_state(self, files: dict[Path, bytes]) -> None:
        if self._changes is not None:
            # A head logged with a change is skipped by a restart once the state files hold
            # that change's version: audit-head.json must hold it first.
            self._write_audit_head()
        write_atomic_all(files)  # one journal commit for the files, one for the renames
        if self._changes is not None:
            self._changes.reset()  # the files hold every change logged
        self._pushed_written = files.get(self._pushed_path, self._pushed_written)
        if self._file_record_path in files:
            self._record_written = files[self._file_record_path]
            record = msgspec.json.decode(self._record_written, type=FileRecord)
            self._recorded_table = record.table

    def load_initial(self) -> None:
        """Read the state directory and the blocklist directory before any worker starts.
        Raises StartupRefused when a directory is configured but holds no valid version, or
        when it cannot be compiled."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._pushed_path.exists():
            entries = msgspec.json.decode(self._pushed_path.read_bytes(), type=list[Entry])
            self.pushed = {e.id: e for e in entries}
        if self._version_path.exists():
            self.version = int(self._version_path.read_text().strip() or 0)
        if self._audit_head_path.exists():
            self._audit_head_written = self._audit_head_path.read_bytes()
            self.audit_head = msgspec.json.decode(self._audit_head_written)
        if self.cfg.change_log_bytes:
            self._changes = ChangeLog(self._change_log_path, self.cfg.change_log_bytes)
            for change in self._changes.replay(self.version):  # written whole below
                self.pushed.update((e.id, e) for e in change.pushed)
                for entry_id in change.unpushed:
                    self.pushed.pop(entry_id, None)
                if _newer_head(change.audit_head, self.audit_head):  # than the file's
                    self.audit_head = change.audit_head
                self.version = change.version
        # A head kept before the restart may be newer than the file's (a later push).
        keep_head = self.audit_head is None
        chain: Chain | None = None
        try:
            if self.cfg.dir:
                try:
                    self._public_key = Path(self.cfg.public_key).read_bytes()
                except OSError as e:
                    raise StartupRefused(
                        f"cannot read blocklist public key {self.cfg.public_key}: {e}"
                    ) from e
                chain = self._start_chain()
            if chain is not None and chain.on_enforced:
                self._start_on_kept()
            else:
                self._start_compiled(chain, keep_head)
        except CompileFailed as e:
            raise StartupRefused(f"the blocklist could not be compiled: {e}") from e
        if chain is not None and self._holds_base(chain):
            links, errors = read_links(chain, self._public_key, self.cfg.max_file_bytes)
            for v in links:
                try:
                    self._fits(v)
                except BlocklistError as e:
                    errors.append(e)
                    break
                # No worker runs yet: each delta is noted for them to replay.
                adds, removes, changes, _small = self._changes_of(v)
                self._file_changes.update(changes)
                self._file_generation += 1
                self._start_delta(adds, removes)
                self._took(v, "file", keep_head=keep_head)
            self._refused(errors)
            if links:
                log.info(
                    "blocklist versions %s applied over the table of version %d: no compile",
                    ", ".join(str(v.sequence) for v in links),
                    chain.header.sequence,
                )
        self._persist()

    def _start_compiled(self, chain: Chain | None, keep_head: bool) -> None:
        """At start: the directory's newest version (or a chain's base, `chain`) read in a
        compile job, its table taken from its signer or compiled; else only the pushes."""
        version = self.version + 1
        summary: Summary | None = None
        if self.cfg.dir:
            base = str(chain.base) if chain is not None else ""
            summary = self._run_sync(self._job(version, "dir", nice=0, base_path=base), "file")
            if base and summary.found is None:  # the base refused: the newest, as always
                summary = self._run_sync(self._job(version, "dir", nice=0), "file")
            self._take_refusals(summary)
            if summary.found is None and not self.cfg.allow_empty:
                detail = "; ".join(self.last_errors) or "no version files"
                raise StartupRefused(
                    f"blocklist directory {self.cfg.dir} holds no valid version ({detail}); "
                    "refusing to start without a list (pass --allow-empty-blocklist to "
                    "override)"
                )
        if summary is None or summary.found is None:
            summary = self._run_sync(self._job(version, "base", nice=0), "file")
        self._adopt_file(summary, version, keep_head=keep_head)
        self.version = version
        self._compiled(version, summary.entries, self._overlay_of(summary))
        self._workers_rebased()

    def _start_chain(self) -> Chain | None:
        """At start: the chain to apply over a table (`chain_in`). The table the last run
        enforced is mapped from the state directory when the directory still holds its
        version (by its header): then nothing is compiled, whatever the list's size."""
        if self.mapped and self._map_kept():
            chain = self._chain()
            if chain is not None and chain.on_enforced:
                return chain
            self._drop_kept()  # the directory holds something else: read it as always
        return self._chain()

    def _map_kept(self) -> bool:
        """Map the file layer's table the last run noted (`FileRecord`) as the enforced file
        layer; False (nothing mapped) when there is none or it is not whole."""
        try:
            record = msgspec.json.decode(self._file_record_path.read_bytes(), type=FileRecord)
        except (OSError, msgspec.DecodeError):
            return False
        kept = self.state_dir / Path(record.table).name
        try:
            table = MappedTable(kept)
            table.verify()
            if table.version != record.stamp:
                raise TableError(f"{kept}: holds version {table.version}, not {record.stamp}")
        except (OSError, TableError) as e:
            log.warning("blocklist table kept by the last run not used: %s", e)
            with contextlib.suppress(OSError):
                kept.unlink(missing_ok=True)
            return False
        self.file_table = table
        self.file_sequence, self.file_sha256 = record.sequence, record.sha256
        self.valid_until = record.valid_until
        self._table_holds = (record.sequence, record.sha256, record.valid_until)
        return True

    def _drop_kept(self) -> None:
        assert self.file_table is not None
        self.file_table.path.unlink(missing_ok=True)
        self.file_table, self.file_sequence, self.file_sha256 = None, None, ""
        self.valid_until = self._table_holds = None

    def _start_on_kept(self) -> None:
        """Workers load the kept table (linked: one file) as the node's next version, told
        the stamp it carries (`load_args`), with the pushes as their overlay."""
        table = self.file_table
        assert table is not None
        self.version = max(self.version, table.version) + 1
        node = self._mapped_path(self.version)
        node.unlink(missing_ok=True)
        os.link(table.path, node)
        self._compiled(self.version, self._size(), list(self.pushed.values()))
        self._workers_rebased()
        log.info(
            "blocklist version %d mapped from its table kept by the last run (%d entries): "
            "no compile",
            self.file_sequence,
            table.entries,
        )

    def _start_delta(self, adds: list[Entry], removes: list[str]) -> None:
        """A change before any worker runs: noted for every starting worker to replay."""
        self.version += 1
        args = {"version": self.version, "add": msgspec.to_builtins(adds), "remove": removes}
        self.deltas.append(args)
        self.overlay_changes += len(adds) + len(removes)

    def _job(self, version: int, source: str, base_path: str = "", **kw: Any) -> Job:
        """A compile job over the enforced file layer and the pushed entries as they are now
        (pushes made while it runs land in later deltas). `base_path`: the one full version a
        "dir" job reads (a chain's base), else the directory's newest."""
        node_out = self._mapped_path(version) if self.mapped else self.full_path
        fields: dict[str, Any] = {
            "version": version,
            "now": time.time(),
            "base_table": str(self.file_table.path) if self.file_table is not None else "",
            "base_changes": dict(self._file_changes),
            "source": source,
            "pushed": list(self.pushed.values()),
            "file_out": str(self._file_path(version)),
            "node_out": str(node_out),
            "node_format": self.cfg.compiled_format,
            "delta_out": str(self._scratch_path("delta", version)),
            "processes": self.cfg.compile_processes,
        }
        if source == "dir":
            fields["dir"] = DirSource(
                dir=self.cfg.dir,
                public_key=self.cfg.public_key,
                current_sequence=self.file_sequence,
                current_sha256=self.file_sha256,
                max_bytes=self.cfg.max_file_bytes,
                max_sequence_step=self.cfg.max_sequence_step,
                require_valid_until=self.cfg.require_valid_until,
                spot_check_entries=self.cfg.table_spot_check_entries,
                path=base_path,
                table_install=self.cfg.table_install,
            )
        fields.update(kw)
        return Job(**fields)

    # -- compile jobs ---------------------------------------------------------------------------

    def _started(self, what: str) -> Callable[[int], None]:
        def started(pid: int) -> None:
            self.loading = Loading(pid=pid, what=what, started_at=time.time())
            log.info("blocklist compile (%s) started in process %d", what, pid)

        return started

    def _progress(self, p: Progress) -> None:
        loading = self.loading
        if loading is None:
            return
        loading.phase, loading.done, loading.total = p.phase, p.done, p.total
        now = time.time()
        if now - loading.logged_at >= PROGRESS_LOG_EVERY_S and p.total > 0:
            loading.logged_at = now
            eta = loading.eta_s(now)
            log.info(
                "blocklist compile (%s): %s %d of %d entries, %.0f entries/s, eta %s",
                loading.what,
                p.phase,
                p.done,
                p.total,
                loading.rate(now),
                "-" if eta is None else f"{eta:.0f} s",
            )
        if self.on_progress is not None:
            self.on_progress(loading)

    @contextlib.contextmanager
    def _running(self, job: Job) -> Iterator[None]:
        """Around a compile job: on any failure nothing it wrote is left or used; done, it is
        counted; either way it no longer shows as loading."""
        try:
            yield
        except BaseException:
            self._discard(job)
            raise
        finally:
            self.loading = None
        self.compiles += 1

    def _run_sync(self, job: Job, what: str) -> Summary:
        with self._running(job):
            timeout = self.cfg.compile_timeout_s
            summary = run_job_sync(job, self._progress, timeout, self._started(what))
            self._check_outputs(job, summary)
        return summary

    async def _run(self, job: Job, what: str) -> Summary:
        with self._running(job):
            timeout = self.cfg.compile_timeout_s
            summary = await run_job(
                job, self._progress, timeout, self._started(what), self.cfg.compile_idle_s
            )
            self._check_outputs(job, summary)
        return summary

    def _check_outputs(self, job: Job, summary: Summary) -> None:
        """The child checked every file whole before answering; what it names must still be
        there, whole (header and size), before a worker is told of it."""
        try:
            if summary.made and job.file_out:
                MappedTable(Path(job.file_out))
            if summary.node_written and self.mapped:
                MappedTable(Path(job.node_out))
        except TableError as e:
            raise CompileFailed(str(e)) from e

    def _discard(self, job: Job) -> None:
        for out in (job.file_out, job.delta_out, job.node_out if self.mapped else ""):
            if out:
                Path(out).unlink(missing_ok=True)

    def _failed(self, what: str, e: BaseException) -> None:
        """A job that did not finish: the enforced list stays; counted, logged, shown."""
        self.reload_failures += 1
        reason = f"{self.cfg.dir}:0: {what} could not be compiled: {e}"
        self.last_errors.append(reason)
        log.error("blocklist %s; keeping version %d", reason, self.version)

    def _take_refusals(self, summary: Summary) -> None:
        self.last_errors = [r.text for r in summary.refusals]
        for r in summary.refusals:
            if not r.stale:
                self.reload_failures += 1
                log.error("blocklist version rejected: %s", r.text)
        for t in summary.table_refusals:
            self.table_rejections[t.reason] = self.table_rejections.get(t.reason, 0) + 1
            log.error("blocklist shipped table rejected (%s), compiled here: %s", t.reason, t.text)
        if summary.shipped:
            self.tables_shipped += 1
            log.info(
                "blocklist: the signer's table passed every check and is taken in "
                "(table_install = %s); nothing compiled",
                self.cfg.table_install,
            )

    def _adopt_file(self, summary: Summary, version: int, *, keep_head: bool = True) -> None:
        """The job's file-layer table is now the enforced file layer."""
        before, self.file_table = self.file_table, MappedTable(self._file_path(version))
        self._file_changes = {}
        self._file_generation += 1
        if before is not None and before.path != self.file_table.path:
            before.path.unlink(missing_ok=True)  # a job still reading it keeps its mapping
        found = summary.found
        self._table_holds = None
        if found is None:
            return
        self._table_holds = (found.sequence, found.sha256, found.valid_until)
        self.file_sequence, self.file_sha256 = found.sequence, found.sha256
        self.valid_until = found.valid_until
        if keep_head:
            self.keep_audit_head(found.audit_head, f"file:{found.sequence}")
        log.info(
            "blocklist version %d loaded from %s (%d entries)",
            found.sequence,
            self.cfg.dir,
            summary.file_entries,
        )

    def loading_status(self, now: float | None = None) -> dict[str, Any] | None:
        """The compile job running now (`Loading.as_dict`), or None."""
        loading = self.loading
        return None if loading is None else loading.as_dict(now)

    def stale_since(self, now: float | None = None) -> float | None:
        """The enforced file version's valid_until once it has passed, else None. A stale list
        keeps being enforced (dropping it would un-block everything); readiness says so."""
        if self.valid_until is None:
            return None
        return (
            self.valid_until if (time.time() if now is None else now) > self.valid_until else None
        )

    # -- what the node holds --------------------------------------------------------------------

    @property
    def _file_layer(self) -> FileLayer:
        return FileLayer(self.file_table, self._file_changes)

    def _file_entry(self, entry_id: str) -> Entry | None:
        """The file layer's entry with this id (a probe of its mapped table)."""
        return self._file_layer.get(entry_id)

    def entries(self) -> list[Entry]:
        """Every entry the node enforces. Reads the whole mapped file layer: for inspection
        and tests, never on a request's or a scrape's path."""
        merged = {e.id: e for e in self._file_layer}
        merged.update(self.pushed)
        return list(merged.values())

    def counts(self) -> dict[str, int]:
        """Entries by type, from the file layer's table header, corrected by the changes and
        pushes over it (a probe each), once per version: a scrape never walks the list."""
        if self._counts_version != self.version:
            counts = dict.fromkeys((t.value for t in EntryType), 0)
            table = self.file_table
            if table is not None:
                for t, n in table.counts.items():
                    counts[str(t)] += n
                for entry_id, changed in self._file_changes.items():
                    index = table.index_of(entry_id)
                    if index >= 0:
                        counts[str(table.entry(index).type)] -= 1
                    if changed is not None:
                        counts[str(changed.type)] += 1
            for e in self.pushed.values():
                under = self._file_entry(e.id)
                if under is not None:
                    counts[str(under.type)] -= 1
                counts[str(e.type)] += 1
            self._counts, self._counts_version = counts, self.version
        return dict(self._counts)

    def _size(self) -> int:
        return sum(self.counts().values())

    def _overlay_of(self, summary: Summary) -> list[Entry]:
        """The pushed entries a job's node table lacks (`Summary.node_overlay`)."""
        return list(self.pushed.values()) if summary.node_overlay else []

    def _compiled(self, version: int, entries: int, overlay: list[Entry] | None = None) -> None:
        if version < self.compiled_version:
            # A refresh that finished after a newer full version was compiled: unused.
            if self.mapped:
                self._mapped_path(version).unlink(missing_ok=True)
            return
        self.compiled_version = version
        self._compiled_entries = entries
        self._compiled_overlay = overlay or []
        self.deltas = [d for d in self.deltas if d["version"] > version]
        if not self.mapped:
            return
        path = self._mapped_path(version)
        if path == self.compiled_path:
            return
        stale, self._previous_path, self.compiled_path = (
            self._previous_path,
            self.compiled_path,
            path,
        )
        # Every file that becomes the compiled one was checked whole first: by the job that
        # wrote or adopted it (`_check_outputs`), or at start (`_map_kept`, the same inode).
        try:
            table = MappedTable(path)
        except TableError:  # workers then check it whole, and refuse it
            self._compiled_stamp, self._compiled_seal = stamp_of(path), None
        else:
            self._compiled_stamp, self._compiled_seal = table.version, table.seal
        self.pinner.pin(path)
        if stale is not None:
            stale.unlink(missing_ok=True)  # workers that mapped it keep their mapping

    def load_args(self) -> dict[str, Any]:
        if self.mapped:
            assert self.compiled_path is not None
            args: dict[str, Any] = {
                "path": str(self.compiled_path),
                "version": self.compiled_version,
                "format": "mapped",
            }
            if self._compiled_stamp != self.compiled_version:  # a signer's table linked in
                args["stamp"] = self._compiled_stamp
            if self._compiled_overlay:
                args["add"] = msgspec.to_builtins(self._compiled_overlay)
            if self._compiled_seal is not None and not self.cfg.worker_check_whole:
                args["seal"] = msgspec.to_builtins(self._compiled_seal)
            if self.pinner.holds(self.compiled_path):
                args["pinned"] = True
            return args
        return {
            "path": str(self.full_path),
            "version": self.compiled_version,
            "pause_s": self.cfg.load_step_pause_s,
        }

    def deltas_since_compiled(self) -> list[dict[str, Any]]:
        """What a worker that just loaded the compiled file must apply to be current."""
        return [d for d in self.deltas if d["version"] > self.compiled_version]

    # -- changes ------------------------------------------------------------------------------

    async def reload_dir(self) -> dict[str, Any] | None:
        """Called by the directory watcher, SIGHUP and the poll: apply a newer file version.
        A chain of deltas (`chain_in`) is applied over the enforced table, or over its base's
        table once that is loaded (from its signer's table, or compiled once); anything else
        goes to the compile job, which reads the directory's newest as always."""
        if not self.cfg.dir:
            return None
        async with self.lock:
            chain = await asyncio.to_thread(self._chain)
            if chain is None:
                return await self._load_newest(None)
            result = None if chain.on_enforced else await self._load_newest(chain)
            if not self._holds_base(chain):
                return result  # the base was refused: the job loaded what it could
            links, errors = await asyncio.to_thread(
                read_links, chain, self._public_key, self.cfg.max_file_bytes
            )
            self.last_errors = []  # what this reload met, as a job's refusals replace them
            for v in links:
                try:
                    applied = await self._apply_verified(v, "file")
                except BlocklistError as e:
                    errors.append(e)
                    break
                if applied is None:
                    break  # its compile failed (counted): the later ones wait
                result = applied
            self._refused(errors)
            return result

    async def _load_newest(self, chain: Chain | None) -> dict[str, Any] | None:
        """A compile job reads the directory's newest version, or the base of `chain` (when
        that is refused, the newest as always), and workers get what it made."""
        version = self.version + 1
        job = self._job(
            version,
            "dir",
            base_path=str(chain.base) if chain is not None else "",
            delta_max_fraction=self.cfg.delta_max_fraction,
        )
        try:
            summary = await self._run(job, "file")
        except CompileFailed as e:
            self._failed("the newest version", e)
            return None
        if chain is not None and summary.found is None:
            return await self._load_newest(None)
        self._take_refusals(summary)
        if summary.found is None:
            return None
        self._adopt_file(summary, version)
        return await self._file_changed(job, summary, f"file:{summary.found.sequence}")

    def _chain(self) -> Chain | None:
        """The directory's chain of deltas to apply over a table (`chain_in`); None when
        there is none (a full version alone goes to the compile job, as anything else)."""
        current, entries = None, 0
        if self.file_table is not None and self.file_sequence is not None:
            current, entries = (self.file_sequence, self.file_sha256), self.file_table.entries
        chain = chain_in(
            self.cfg.dir,
            current,
            entries=entries,
            max_fraction=self.cfg.delta_max_fraction,
            max_step=self.cfg.max_sequence_step,
            require_valid_until=self.cfg.require_valid_until,
        )
        if chain is None or not (chain.links or chain.on_enforced):
            return None
        return chain

    def _holds_base(self, chain: Chain) -> bool:
        """The enforced file layer is the chain's base."""
        base = chain.header
        return (self.file_sequence, self.file_sha256) == (base.sequence, base.sha256)

    def _refused(self, errors: list[BlocklistError]) -> None:
        for e in errors:
            self.reload_failures += 1
            self.last_errors.append(str(e))
            log.error("blocklist version rejected: %s", e)

    async def _file_changed(self, job: Job, summary: Summary, source: str) -> dict[str, Any]:
        """Distribute a new file layer (under the lock) the way the job wrote it: a delta
        when it is a small change, else a full compiled version."""
        if summary.delta:
            delta_path = Path(job.delta_out)
            delta = msgspec.msgpack.decode(delta_path.read_bytes(), type=Delta)
            delta_path.unlink(missing_ok=True)
            return await self._delta(delta.adds, delta.removes, source)
        self.version = job.version
        self._compiled(job.version, summary.entries, self._overlay_of(summary))
        self._persist()
        self._workers_rebased()
        await self.pinner.settled()  # workers then find the probe sections held (`pinned`)
        return await self._distribute("blocklist.load", self.load_args(), source)

    async def apply_version(self, v: Version) -> dict[str, Any] | None:
        """A version already verified (a fleet feed's entry, proxy/fleet/follower.py): a full
        one, or a delta on the enforced file sequence. The same checks and distribution as a
        directory reload, without re-reading and re-verifying the directory's chain; the
        change workers get is computed from the delta alone. Raises BlocklistError when the
        version does not fit (the enforced list stays)."""
        async with self.lock:
            return await self._apply_verified(v, "feed")

    async def _apply_verified(self, v: Version, via: str) -> dict[str, Any] | None:
        """`apply_version` under the lock; `via` names where it came from ("feed", "file")."""
        self._fits(v)
        result = await (self._apply_full(v) if v.base is None else self._apply_delta(v))
        if result is not None:
            self._took(v, via)
            if self._file_record() != self._record_written:
                await asyncio.to_thread(self._write_state, self._state_bytes())
        return result

    def _fits(self, v: Version) -> None:
        """Raises BlocklistError when the verified `v` cannot follow the enforced version."""
        current = self.file_sequence
        if current is not None and v.sequence <= current:
            raise BlocklistError(v.path, 1, f"sequence {v.sequence} is not newer than {current}")
        step = self.cfg.max_sequence_step
        if current is not None and step > 0 and v.sequence - current > step:
            raise BlocklistError(
                v.path, 1, f"sequence {v.sequence} jumps beyond blocklist.max_sequence_step"
            )
        if self.cfg.require_valid_until and v.valid_until is None:
            raise BlocklistError(
                v.path, 1, "no valid_until and blocklist.require_valid_until is set"
            )
        if v.base is not None and v.base != current:
            raise BlocklistError(v.path, 1, f"rests on {v.base}, the enforced is {current}")

    def _took(self, v: Version, via: str, *, keep_head: bool = True) -> None:
        """`v` is the enforced file version now."""
        self.file_sequence, self.file_sha256 = v.sequence, v.sha256
        self.valid_until = v.valid_until
        if not self._file_changes:  # the table holds it exactly
            self._table_holds = (v.sequence, v.sha256, v.valid_until)
        self.last_errors = []
        if keep_head:
            self.keep_audit_head(v.audit_head, f"{via}:{v.sequence}")

    async def _apply_full(self, v: Version) -> dict[str, Any] | None:
        """A feed's full version: its entries go to a child (as a file) to be compiled and
        compared with the enforced layer there."""
        version = self.version + 1
        entries_path = self._scratch_path("entries", version)
        await asyncio.to_thread(_write_entries, entries_path, v.adds)
        job = self._job(
            version,
            "entries",
            entries_path=str(entries_path),
            delta_max_fraction=self.cfg.delta_max_fraction,
        )
        try:
            summary = await self._run(job, "feed")
        except CompileFailed as e:
            self._failed(f"version {v.sequence}", e)
            return None
        finally:
            entries_path.unlink(missing_ok=True)
        self._adopt_file(summary, version)
        return await self._file_changed(job, summary, f"file:{v.sequence}")

    async def _apply_delta(self, v: Version) -> dict[str, Any] | None:
        """A feed's (or the directory's) delta version: a small change stays a change over
        the file layer's table, a large one is compiled."""
        adds, removes, changes, small = self._changes_of(v)
        source = f"file:{v.sequence}"
        if small:
            self._file_changes.update(changes)
            self._file_generation += 1
            return await self._delta(adds, removes, source)
        version = self.version + 1
        job = self._job(version, "base", changes=changes)
        try:
            summary = await self._run(job, "feed")
        except CompileFailed as e:
            self._failed(f"version {v.sequence}", e)
            return None
        self._adopt_file(summary, version)
        return await self._file_changed(job, summary, source)

    def _changes_of(
        self, v: Version
    ) -> tuple[list[Entry], list[str], dict[str, Entry | None], bool]:
        """What delta `v` changes, worked out here with a probe per id it names: the adds and
        removes workers must apply (pushed entries cover the file's), the changes over the
        file layer, and whether that is small (`delta_max_fraction`)."""
        adds = [e for e in v.adds if e.id not in self.pushed and self._file_entry(e.id) != e]
        added = {e.id for e in v.adds}
        removes = [
            i
            for i in v.removes
            if i not in self.pushed and i not in added and self._file_entry(i) is not None
        ]
        changes: dict[str, Entry | None] = dict.fromkeys(v.removes)
        changes.update((e.id, e) for e in v.adds)
        size = self._size() + sum(
            (changed is not None) - (self._file_entry(i) is not None)
            for i, changed in changes.items()
            if i not in self.pushed
        )
        small = len(adds) + len(removes) <= max(1000, self.cfg.delta_max_fraction * size)
        return adds, removes, changes, small

    async def push(
        self, raw_entries: list[dict[str, Any]], audit_head: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Push entries to every worker; `audit_head`, the publisher's signed audit-log head
        sent with them, is kept with the change (one write for both)."""
        entries = [validate_entry(msgspec.convert(e, type=Entry)) for e in raw_entries]
        async with self.lock:
            for e in entries:
                self.pushed[e.id] = e
            head = self._take_audit_head(audit_head, "push")
            change = Change(self.version + 1, entries, audit_head=head)
            try:
                return await self._delta(entries, [], "push", change)
            finally:
                if head is not None:
                    self._mirror_audit_head()

    async def remove(
        self, entry_id: str, audit_head: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Remove a pushed entry (None when it is not one); `audit_head` as for `push`, kept
        also when there is nothing to remove."""
        async with self.lock:
            if entry_id not in self.pushed:
                self.keep_audit_head(audit_head, "remove")
                return None
            del self.pushed[entry_id]
            restored = self._file_entry(entry_id)
            head = self._take_audit_head(audit_head, "remove")
            change = Change(self.version + 1, unpushed=[entry_id], audit_head=head)
            try:
                return await self._delta(
                    [restored] if restored else [], [entry_id], "remove", change
                )
            finally:
                if head is not None:
                    self._mirror_audit_head()

    def started(self, applied_at: float) -> None:
        """Every first worker enforces the start-up version: that is its apply time."""
        self.applied_at = applied_at
        self.history.appendleft(
            {"version": self.version, "applied_at": applied_at, "source": "start"}
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # called without a loop (tests): no refresh to schedule
        if self.deltas_since_compiled():  # deltas taken at start: folded as any would be
            self._schedule_refresh()

    def known(self, entry_id: str) -> bool:
        return entry_id in self.pushed or self._file_entry(entry_id) is not None

    async def _delta(
        self, adds: list[Entry], removes: list[str], source: str, change: Change | None = None
    ) -> dict[str, Any]:
        """Apply a change to every worker as a delta (cheap at any list size); the compiled
        full version is refreshed afterwards, off the answer's path. `change`: what a push or
        removal did to the pushed entries, logged instead of writing the state files whole."""
        self.version += 1
        # The state's fsync (in a thread) overlaps the workers' apply instead of preceding
        # it; the answer waits for both, so it never names a version that a restart could
        # forget. A failed write still fails the change, as before.
        persisted = asyncio.ensure_future(asyncio.to_thread(self._keep, change))
        args = {"version": self.version, "add": msgspec.to_builtins(adds), "remove": removes}
        self.deltas.append(args)
        self.overlay_changes += len(adds) + len(removes)
        try:
            result = await self._distribute("blocklist.delta", args, source)
        finally:
            await asyncio.gather(persisted, return_exceptions=True)
        persisted.result()
        self._schedule_refresh()
        return result

    def _schedule_refresh(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._refresh_compiled())

    async def _refresh_compiled(self) -> None:
        """Recompile once changes have been quiet for `compile_quiet_s`: with a large file
        layer a compile costs seconds of CPU, and a burst of pushes needs only the last one
        (workers that start meanwhile replay the deltas)."""
        while self.compiled_version < self.version:
            seen = self.version
            await asyncio.sleep(self.cfg.compile_quiet_s)
            if self.version != seen:
                continue
            if self.mapped and not self._overlay_past_threshold():
                # Issue 19: a compile costs the whole list's CPU, and pushes every few
                # seconds made it run after each. Below the fold threshold workers hold the
                # changes in their overlay and a starting worker replays them (as many as
                # the threshold at most), so the base is recompiled only to fold.
                return
            try:
                await self._write_full_async()
            except CompileFailed as e:  # workers replay deltas meanwhile
                log.error("could not refresh the compiled blocklist: %s", e)
                return
            await self._fold()

    async def _write_full_async(self) -> None:
        """Compile the current version (the file layer with the pushes over it) in a child;
        the entry set is taken now, so pushes made meanwhile land in later deltas. A fleet's
        changes over the file layer are folded into a new file-layer table too, kept unless
        the file layer changed meanwhile."""
        version = self.version
        generation, base = self._file_generation, self.file_table
        job = self._job(version, "base")
        if not self._file_changes:
            job = msgspec.structs.replace(job, file_out="")  # the file layer stays as it is
        summary = await self._run(job, "refresh")
        if job.file_out:
            if generation == self._file_generation and base is self.file_table:
                self._adopt_file(msgspec.structs.replace(summary, found=None), version)
                if self.file_sequence is not None:  # the changes are folded: it holds it
                    self._table_holds = (self.file_sequence, self.file_sha256, self.valid_until)
                    await asyncio.to_thread(self._write_state, self._state_bytes())
            else:
                Path(job.file_out).unlink(missing_ok=True)
        self._compiled(version, summary.entries)

    def _workers_rebased(self) -> None:
        """Every worker now maps the current compiled file, with the overlay it is loaded
        with (the pushed entries a shipped table lacks; else none)."""
        self.overlay_changes = len(self._compiled_overlay)
        self._base_entries = self._compiled_entries

    def _overlay_past_threshold(self) -> bool:
        threshold = max(1000.0, self.cfg.overlay_max_fraction * self._base_entries)
        return self.overlay_changes > threshold

    async def _fold(self) -> None:
        """Swap the refreshed base into workers whose overlay has grown past
        `overlay_max_fraction` of it: their overlay memory and per-delta copies stay small.
        Only while the compiled file is the current version (under the lock, so no delta can
        slip between): the swap then changes what workers hold, never what they enforce, so
        neither the version nor its `applied_at` proof moves."""
        if not self.mapped or not self._overlay_past_threshold():
            return
        async with self.lock:
            if self.compiled_version != self.version:
                return  # changed meanwhile: the next refresh folds
            await self.pinner.settled()
            await self.broadcast("blocklist.load", self.load_args())
            self._workers_rebased()
            self.folds += 1
            log.info("blocklist overlay folded into a new base at version %d", self.version)

    async def _distribute(self, op: str, args: dict[str, Any], source: str) -> dict[str, Any]:
        acks = await self.broadcast(op, args)
        self.applied_at = max((a["applied_at"] for a in acks), default=time.time())
        self.history.appendleft(
            {"version": self.version, "applied_at": self.applied_at, "source": source}
        )
        return {"version": self.version, "applied_at": self.applied_at, "workers": acks}


def _write_entries(path: Path, entries: tuple[Entry, ...]) -> None:
    """A feed's full version for the compile child (encoded off the event loop: a million
    entries take a moment)."""
    write_atomic(path, msgspec.msgpack.encode(entries))


def _newer_head(head: dict[str, Any] | None, than: dict[str, Any] | None) -> bool:
    """Whether a logged change's audit head is newer than the one held (read from
    audit-head.json, which a head taken without a change may have replaced since)."""
    if head is None:
        return False
    return than is None or head.get("received_at", 0.0) >= than.get("received_at", 0.0)
