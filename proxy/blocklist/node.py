"""The node's blocklist, as the supervisor holds it: two layers and one version number.

- the *file layer*: the newest valid signed version in `blocklist.dir` (verified here, once,
  then distributed to workers as a pre-validated entry list);
- the *push layer*: entries operators (or the takedown service) pushed over the admin API,
  persisted in the state directory so a restart keeps enforcing them.

Every change to either layer makes the next node version. A version counts as applied only when
every worker answers that it enforces it; the time of the last answer is the proof
(`applied_at`) the takedown service collects.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from proxy.blocklist.compiled import write_compiled
from proxy.blocklist.format import BlocklistError, LoadInfo, Version, load_newest, write_atomic
from proxy.blocklist.model import Entry, EntryType, validate_entry
from proxy.blocklist.table import MappedTable, write_table
from proxy.config import Config

log = logging.getLogger("edgeproxy.blocklist")
T = TypeVar("T")

Broadcast = Callable[[str, dict[str, Any]], Awaitable[list[dict[str, Any]]]]


class StartupRefused(Exception):
    pass


class NodeBlocklist:
    def __init__(self, cfg: Config, state_dir: Path, broadcast: Broadcast) -> None:
        self.cfg = cfg.blocklist
        self.state_dir = state_dir
        self.broadcast = broadcast
        self.file_entries: list[Entry] = []
        self._file_index: dict[str, Entry] = {}
        self._file_index_of: list[Entry] | None = None  # the list `_file_index` was built from
        self.file_sequence: int | None = None
        self.file_sha256 = ""
        # The enforced file version's signed validity; None when its signer set none.
        self.valid_until: float | None = None
        self.pushed: dict[str, Entry] = {}
        self._pushed_written: bytes | None = None  # what pushed-entries.json holds
        self._audit_head_unwritten = False  # kept with the next state write
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
        self._previous_path: Path | None = None
        # Changes workers hold in their overlay (since the base they mapped), and that base's
        # size: past `overlay_max_fraction` of it, a refreshed base is swapped in (a fold).
        self.overlay_changes = 0
        self._base_entries = 0
        self.folds = 0

    # -- persistence --------------------------------------------------------------------------

    @property
    def _pushed_path(self) -> Path:
        return self.state_dir / "pushed-entries.json"

    @property
    def _version_path(self) -> Path:
        return self.state_dir / "blocklist-version"

    @property
    def _audit_head_path(self) -> Path:
        return self.state_dir / "audit-head.json"

    def keep_audit_head(self, head: dict[str, Any] | None, via: str, *, now: bool = True) -> None:
        """`now=False`: written with the state files of the version being made (off the event
        loop, overlapping the workers' apply)."""
        if head is None:
            return
        self.audit_head = {**head, "received_at": time.time(), "via": via}
        self._audit_head_unwritten = not now
        if now:
            write_atomic(self._audit_head_path, msgspec.json.encode(self.audit_head))

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

    def compiled_files(self) -> list[Path]:
        """Every compiled file this supervisor wrote that is still on disk."""
        pid = os.getpid()
        return [
            *self.state_dir.glob(f"blocklist-compiled-{pid}-v*.map"),
            *([self.full_path] if self.full_path.exists() else []),
        ]

    def _persist(self) -> None:
        self._write_state(self._state_bytes())

    def _state_bytes(self) -> dict[Path, bytes]:
        """What the state files must hold now, file by file, leaving out those that hold it
        already: a file or feed version leaves the pushed entries as they were, and each
        write_atomic costs two fsyncs (file and directory)."""
        out = {}
        pushed = msgspec.json.encode(list(self.pushed.values()))
        if pushed != self._pushed_written:
            out[self._pushed_path] = pushed
        out[self._version_path] = str(self.version).encode()
        if self._audit_head_unwritten and self.audit_head is not None:
            out[self._audit_head_path] = msgspec.json.encode(self.audit_head)
        return out

    def _write_state(self, files: dict[Path, bytes]) -> None:
        for path, data in files.items():
            write_atomic(path, data)
        self._pushed_written = files.get(self._pushed_path, self._pushed_written)
        self._audit_head_unwritten &= self._audit_head_path not in files

    def load_initial(self) -> None:
        """Read the state directory and the blocklist directory before any worker starts.
        Raises StartupRefused when a directory is configured but holds no valid version."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._pushed_path.exists():
            entries = msgspec.json.decode(self._pushed_path.read_bytes(), type=list[Entry])
            self.pushed = {e.id: e for e in entries}
        if self._version_path.exists():
            self.version = int(self._version_path.read_text().strip() or 0)
        if self._audit_head_path.exists():
            self.audit_head = msgspec.json.decode(self._audit_head_path.read_bytes())
        if self.cfg.dir:
            try:
                self._public_key = Path(self.cfg.public_key).read_bytes()
            except OSError as e:
                raise StartupRefused(
                    f"cannot read blocklist public key {self.cfg.public_key}: {e}"
                ) from e
            # A head kept before the restart may be newer than the file's (a later push).
            found = self._load_dir(keep_head=self.audit_head is None)
            if found is None and not self.cfg.allow_empty:
                detail = "; ".join(self.last_errors) or "no version files"
                raise StartupRefused(
                    f"blocklist directory {self.cfg.dir} holds no valid version ({detail}); "
                    "refusing to start without a list (pass --allow-empty-blocklist to override)"
                )
        self.version += 1
        self._write_full()
        self._persist()
        self._workers_rebased()

    def _load_dir(self, keep_head: bool = True) -> int | None:
        info = LoadInfo()
        found, errors = load_newest(
            self.cfg.dir,
            self._public_key,
            current_sequence=self.file_sequence,
            max_bytes=self.cfg.max_file_bytes,
            current_sha256=self.file_sha256,
            max_sequence_step=self.cfg.max_sequence_step,
            info=info,
        )
        if found is not None and self.cfg.require_valid_until and info.valid_until is None:
            errors.append(
                BlocklistError(
                    self.cfg.dir,
                    0,
                    f"version {found[1]} has no valid_until and blocklist.require_valid_until "
                    "is set; keeping the enforced list",
                )
            )
            found = None
        self.last_errors = [str(e) for e in errors]
        for e in errors:
            if not _is_stale_notice(e):
                self.reload_failures += 1
                log.error("blocklist version rejected: %s", e)
        if found is None:
            return None
        entries, sequence = found
        self.file_entries = entries
        self.file_sequence = sequence
        self.file_sha256 = info.sha256
        self.valid_until = info.valid_until
        if keep_head:
            self.keep_audit_head(info.audit_head, f"file:{sequence}")
        log.info(
            "blocklist version %d loaded from %s (%d entries)", sequence, self.cfg.dir, len(entries)
        )
        return sequence

    def stale_since(self, now: float | None = None) -> float | None:
        """The enforced file version's valid_until once it has passed, else None. A stale list
        keeps being enforced (dropping it would un-block everything); readiness says so."""
        if self.valid_until is None:
            return None
        return (
            self.valid_until if (time.time() if now is None else now) > self.valid_until else None
        )

    def entries(self) -> list[Entry]:
        return _merge(self.file_entries, self.pushed)

    def counts(self) -> dict[str, int]:
        """Entries by type, counted once per version (a scrape must not walk a million
        entries every time)."""
        if self._counts_version != self.version:
            counts = dict.fromkeys((t.value for t in EntryType), 0)
            for e in self.entries():
                counts[str(e.type)] += 1
            self._counts, self._counts_version = counts, self.version
        return dict(self._counts)

    def _compile_merged(self, files: list[Entry], pushed: dict[str, Entry], version: int) -> None:
        """Compile every entry's match key once, here, for all workers: the mapped table (read
        back and checked whole before any worker is told of it: a full disk or a bad write
        is caught here, and the file workers load stays the last good one), or the msgpack
        chunks workers build their own dicts from."""
        entries = _merge(files, pushed)
        if not self.mapped:
            write_compiled(self.full_path, entries)
            return
        path = self._mapped_path(version)
        try:
            write_table(path, entries, version, time.time())
            MappedTable(path).verify()
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _write_full(self) -> None:
        version = self.version
        self._compile_merged(self.file_entries, self.pushed, version)
        self._compiled(version)

    async def _write_full_async(self, version: int | None = None) -> None:
        """The same, compiling in a thread; the entry set is taken on the loop, so pushes
        made meanwhile land in later deltas. `version`: the one the file will be (default:
        the current one)."""
        version = self.version if version is None else version
        files, pushed = list(self.file_entries), dict(self.pushed)
        await asyncio.to_thread(_background, self._compile_merged, files, pushed, version)
        self._compiled(version)

    def _compiled(self, version: int) -> None:
        if version < self.compiled_version:
            return  # a refresh that finished after a newer full version was compiled
        self.compiled_version = version
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
        if stale is not None:
            stale.unlink(missing_ok=True)  # workers that mapped it keep their mapping

    def load_args(self) -> dict[str, Any]:
        if self.mapped:
            assert self.compiled_path is not None
            return {
                "path": str(self.compiled_path),
                "version": self.compiled_version,
                "format": "mapped",
            }
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
        """Called by the directory watcher, SIGHUP and the poll: apply a newer file version."""
        if not self.cfg.dir:
            return None
        async with self.lock:
            before = {e.id: e for e in self.entries()}
            enforced = (self.file_entries, self.file_sequence, self.file_sha256, self.valid_until)
            found = await asyncio.to_thread(_background, self._load_dir)
            if found is None:
                return None
            after = {e.id: e for e in self.entries()}
            adds = [e for i, e in after.items() if before.get(i) != e]
            removes = [i for i in before if i not in after]
            return await self._file_changed(adds, removes, len(after), found, enforced)

    async def _file_changed(
        self,
        adds: list[Entry],
        removes: list[str],
        size: int,
        sequence: int,
        enforced: tuple[list[Entry], int | None, str, float | None],
    ) -> dict[str, Any] | None:
        """Distribute a new file layer (under the lock): a delta when it is a small change,
        else a full compiled version; a failed compile restores `enforced`."""
        source = f"file:{sequence}"
        if len(adds) + len(removes) <= max(1000, self.cfg.delta_max_fraction * size):
            return await self._delta(adds, removes, source)
        try:
            await self._write_full_async(self.version + 1)
        except Exception as e:  # noqa: BLE001 - a full disk, a bad write: keep the last good
            self.file_entries, self.file_sequence, self.file_sha256, self.valid_until = enforced
            self.reload_failures += 1
            reason = f"{self.cfg.dir}:0: version {sequence} could not be compiled: {e}"
            self.last_errors.append(reason)
            log.error("blocklist %s; keeping version %d", reason, self.version)
            return None
        self.version += 1
        self._persist()
        self._workers_rebased()
        return await self._distribute("blocklist.load", self.load_args(), source)

    async def apply_version(self, v: Version) -> dict[str, Any] | None:
        """A version already verified (a fleet feed's entry, proxy/fleet/follower.py): a full
        one, or a delta on the enforced file sequence. The same checks and distribution as a
        directory reload, without re-reading and re-verifying the directory's chain; the
        change workers get is computed from the delta alone. Raises BlocklistError when the
        version does not fit (the enforced list stays)."""
        async with self.lock:
            current = self.file_sequence
            if current is not None and v.sequence <= current:
                raise BlocklistError(
                    v.path, 1, f"sequence {v.sequence} is not newer than {current}"
                )
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
            enforced = (self.file_entries, self.file_sequence, self.file_sha256, self.valid_until)
            if v.base is None:
                before = {e.id: e for e in self.entries()}
                self.file_entries = list(v.adds)
                after = {e.id: e for e in self.entries()}
                adds = [e for i, e in after.items() if before.get(i) != e]
                removes = [i for i in before if i not in after]
            else:
                files = {e.id: e for e in self.file_entries}
                adds = [e for e in v.adds if e.id not in self.pushed and files.get(e.id) != e]
                added = {e.id for e in v.adds}
                removes = [
                    i for i in v.removes if i in files and i not in self.pushed and i not in added
                ]
                for i in v.removes:
                    files.pop(i, None)
                files.update((e.id, e) for e in v.adds)
                self.file_entries = list(files.values())
            self.file_sequence, self.file_sha256 = v.sequence, v.sha256
            self.valid_until = v.valid_until
            self.last_errors = []
            self.keep_audit_head(v.audit_head, f"feed:{v.sequence}", now=False)
            size = len(self.file_entries) + len(self.pushed)
            return await self._file_changed(adds, removes, size, v.sequence, enforced)

    async def push(self, raw_entries: list[dict[str, Any]]) -> dict[str, Any]:
        entries = [validate_entry(msgspec.convert(e, type=Entry)) for e in raw_entries]
        async with self.lock:
            for e in entries:
                self.pushed[e.id] = e
            return await self._delta(entries, [], "push")

    async def remove(self, entry_id: str) -> dict[str, Any] | None:
        async with self.lock:
            if entry_id not in self.pushed:
                return None
            del self.pushed[entry_id]
            restored = self._file_entry(entry_id)
            return await self._delta([restored] if restored else [], [entry_id], "remove")

    def _file_entry(self, entry_id: str) -> Entry | None:
        """The file layer's entry with this id: an index built once per file version (a
        removal used to scan the whole file layer, issue 19)."""
        if self._file_index_of is not self.file_entries:
            self._file_index = {e.id: e for e in self.file_entries}
            self._file_index_of = self.file_entries
        return self._file_index.get(entry_id)

    def started(self, applied_at: float) -> None:
        """Every first worker enforces the start-up version: that is its apply time."""
        self.applied_at = applied_at
        self.history.appendleft(
            {"version": self.version, "applied_at": applied_at, "source": "start"}
        )

    def known(self, entry_id: str) -> bool:
        return entry_id in self.pushed or self._file_entry(entry_id) is not None

    async def _delta(self, adds: list[Entry], removes: list[str], source: str) -> dict[str, Any]:
        """Apply a change to every worker as a delta (cheap at any list size); the compiled
        full version is refreshed afterwards, off the answer's path."""
        self.version += 1
        # The state files' fsyncs (in a thread) overlap the workers' apply instead of
        # preceding it; the answer waits for both, so it never names a version that a restart
        # could forget. A failed write still fails the change, as before.
        persisted = asyncio.ensure_future(asyncio.to_thread(self._write_state, self._state_bytes()))
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
            except Exception as e:  # noqa: BLE001 - workers replay deltas meanwhile
                log.error("could not refresh the compiled blocklist: %s", e)
                return
            await self._fold()

    def _workers_rebased(self) -> None:
        """Every worker now maps the current compiled file, with an empty overlay."""
        self.overlay_changes = 0
        self._base_entries = len(self.file_entries) + len(self.pushed)

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


def _merge(files: list[Entry], pushed: dict[str, Entry]) -> list[Entry]:
    merged = {e.id: e for e in files}
    merged.update(pushed)
    return list(merged.values())


def _background(fn: Callable[..., T], *args: Any) -> T:
    """Run in a worker thread at a lower CPU priority: verifying and compiling a large version
    takes seconds of CPU, and serving workers on the same cores must keep theirs."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError):
        pass
    try:
        return fn(*args)
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 0)
        except (OSError, AttributeError):
            pass


def _is_stale_notice(e: BlocklistError) -> bool:
    return "older" in e.reason or "not newer" in e.reason
