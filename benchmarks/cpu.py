"""CPU time and memory of a server and every process under it, read from /proc.

CPU per request is the benchmark's steadiest figure on a shared machine: req/s moves with
whatever else the cores are doing, but the CPU a server spends per answer barely does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class _Stat:
    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime (reaped children included)
    rss_bytes: int
    own_ticks: int = 0  # utime + stime: this process alone
    comm: str = ""  # its name (a thread's, as the kernel shows it)


def _stat_raw(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat's fields after comm (state first); None when the process is gone."""
    raw = _stat_raw(pid)
    if raw is None:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(b")") + 2 :].split()


def user_system_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` itself so far ((0, 0) once it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0, 0.0
    return int(fields[11]) / TICKS_PER_S, int(fields[12]) / TICKS_PER_S


def _read_stat(pid: int) -> _Stat | None:
    raw = _stat_raw(pid)
    if raw is None:
        return None
    cut = raw.rindex(b")")
    fields = raw[cut + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    comm = raw[raw.index(b"(") + 1 : cut].decode(errors="replace")
    return _Stat(pid, ppid, utime + stime + cutime + cstime, int(fields[21]) * _PAGE_BYTES,
                 utime + stime, comm)  # fmt: skip


def snapshot() -> dict[int, _Stat]:
    """Every process of the machine as it is now, by pid (kernel threads included): one read
    of /proc that `tree` can be given, so that several sums come from the same moment."""
    return _all_stats()


def _all_stats() -> dict[int, _Stat]:
    stats: dict[int, _Stat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _read_stat(int(name))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def tree(root_pids: list[int], stats: dict[int, _Stat] | None = None) -> list[_Stat]:
    """The processes `root_pids` and all their descendants, as they are now (or as
    `stats`, a `snapshot`, found them)."""
    if stats is None:
        stats = _all_stats()
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: list[_Stat] = []
    todo = [pid for pid in root_pids if pid in stats]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        found.append(stats[pid])
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(root_pids: list[int]) -> float:
    """User + system CPU of the whole tree so far, in seconds (resolution: one clock tick)."""
    return sum(s.cpu_ticks for s in tree(root_pids)) / TICKS_PER_S


def rss_bytes(root_pids: list[int]) -> int:
    """Resident memory of the whole tree (shared pages counted once per process)."""
    return sum(s.rss_bytes for s in tree(root_pids))


@dataclass(frozen=True)
class Memory:
    """A process tree's memory three ways (bytes): `rss` counts a shared page once per
    process that maps it (what `ps` and the soak goal say); `pss` shares each page among its
    mappers, so the tree's sum counts the mapped blocklist and node tier once; `anon` is
    heap and stacks only (no file pages), where a leak would show."""

    rss: int
    pss: int
    anon: int


def memory(root_pids: list[int]) -> Memory:
    rss = pss = anon = 0
    for s in tree(root_pids):
        rollup = _smaps_rollup(s.pid)
        rss += rollup.get("Rss", s.rss_bytes)
        pss += rollup.get("Pss", 0)
        anon += rollup.get("Anonymous", 0)
    return Memory(rss, pss, anon)


def _smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup's kB fields in bytes; empty when the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return {}
    fields: dict[str, int] = {}
    for line in lines:
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024
    return fields


def pin(root_pids: list[int], cpus: set[int]) -> None:
    """Every thread of the tree onto `cpus` (processes it starts later inherit the mask)."""
    for stat in tree(root_pids):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{stat.pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass  # the thread ended
