"""A worker's check of a new compiled table, in a process of its own (issue 12).

A worker checks a table it is told to map (`MappedTable.verify`: the body's checksum, every
byte of the file) before it enforces it, unless the supervisor vouches for the very file
(`table.Seal`); it then only reads the probe sections once more ("keep") when the supervisor
does not hold them locked. Done in a thread beside the serving loop, the
check shared the worker's GIL: xxh3 gives it up while it hashes, but the Python between two
pieces and each piece's `madvise` hold it, and a thread whose nice value is raised (so that the
check takes what serving leaves of the CPU) can be preempted while holding it. The loop then
waits for a thread the scheduler does not run. `benchmarks/check_lag.py` (a loop ticking every
millisecond beside a 10M-entry table's check, two spinning processes on the two cores): the
thread's check held the loop up to 177 ms and took 50 s, a child at the same nice value 11 ms
and 6.3 s, on a machine where other processes competed too; with the two spinners alone the
two ways were alike (4-10 ms; benchmarks/README.md). A child has its own interpreter, so the
loop never waits for it; it costs a Python start (~0.1 s of CPU), which is
why tables under `blocklist.check_in_child_min_bytes` are still checked in a thread.

The child is handed the worker's own open file (as its descriptor 3), so it checks the very
file the worker mapped, whatever happens to the path meanwhile, and answers one JSON line: the body
checksum it found matching the header (the worker compares it with the header it mapped), or
the `TableError` that refused it. It runs the thread's check (`MappedTable.check_for_workers`:
the checksum, then the probe sections read once more; the page cache is shared), or the keep
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from proxy.blocklist.table import MappedTable, TableError

_PR_SET_PDEATHSIG = 1


class NoChild(Exception):
    """No child process could be started (no interpreter path, no process or memory left):
    the caller checks in a thread instead, so a new version is still taken."""


class Answer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    checksum: int | None = None
    error: str = ""


# What a worker reads of a table before it maps it, by name (the child's argument): every
# byte checked, or only the probe sections read once more (a file bearing the supervisor's
# seal), each with what a log line says was done.
READS: dict[str, tuple[Callable[[MappedTable], None], str]] = {
    "check": (MappedTable.check_for_workers, "checked"),
    "keep": (MappedTable.keep_probe_sections, "its probe sections read"),
}


def _check(fd: int, name: str, what: str) -> Answer:
    try:
        table = MappedTable(Path(f"/proc/self/fd/{fd}"))
        table.path = Path(name)  # errors name the file the operator knows
        READS[what][0](table)
    except TableError as e:
        return Answer(error=str(e).replace(f"/proc/self/fd/{fd}", name))
    return Answer(checksum=table.checksum)


def _die_with(parent: int) -> None:
    """Be killed when the worker dies (Linux's parent-death signal): a worker killed during a
    swap leaves no check running on."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the check ends by itself
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(1)


def main(argv: list[str]) -> int:
    """`python -m proxy.blocklist.tablecheck FD NAME NICE PARENT [check|keep]`: check the
    open file FD (or only read its probe sections once more: "keep")."""
    fd, name, nice, parent = int(argv[0]), argv[1], int(argv[2]), int(argv[3])
    what = argv[4] if len(argv) > 4 else "check"
    if what not in READS:
        print(f"tablecheck: no read named {what!r}; one of {sorted(READS)}", file=sys.stderr)
        return 2
    _die_with(parent)
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass  # not allowed: the check runs at the worker's priority
    answer = _check(fd, name, what)
    sys.stdout.buffer.write(msgspec.json.encode(answer) + b"\n")
    return 0 if answer.error == "" else 1


_CHILD_FD = 3  # where the child finds the table (its first descriptor after stdio)


async def check_in_child(table: MappedTable, nice: int, what: str = "check") -> None:
    """Check `table` (already open and mapped here) in a child process at `nice` above this
    one (`what` = "keep": only read its probe sections once more). Raises `TableError` when
    the child refuses the file, finds another file than the one mapped, or ends without an
    answer (the caller keeps enforcing what it has), `NoChild` when none could be started; a
    cancelled check kills its child."""
    try:
        fd = os.open(table.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise TableError(f"{table.path}: {e}") from e
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (table.seal.dev, table.seal.ino):
            raise TableError(f"{table.path}: replaced since it was mapped")
        env = dict(os.environ)  # the child imports this very package, wherever it lives
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "proxy.blocklist.tablecheck"]
        argv += [str(_CHILD_FD), str(table.path), str(nice), str(os.getpid()), what]
        returncode, out = await _run(argv, env, fd, table.path)
    finally:
        os.close(fd)
    try:
        answer = msgspec.json.decode(out.splitlines()[-1] if out else b"", type=Answer)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise TableError(
            f"{table.path}: the check ended without an answer (exit {returncode})"
        ) from e
    if answer.error:
        raise TableError(answer.error)
    if answer.checksum != table.checksum:
        raise TableError(f"{table.path}: the file checked is not the file mapped")


async def _run(argv: list[str], env: dict[str, str], fd: int, path: Path) -> tuple[int, bytes]:
    """Start `argv` with `fd` as its descriptor 3 and stdout to a pipe; (exit status, what it
    wrote). `posix_spawn` (glibc: a vfork-style clone), not the loop's subprocess, which
    forks: a fork copies the worker's page tables with its loop held, 2-5 ms for a small
    worker and 60-70 ms for one holding 1.5 GB of cache (measured here under uvloop)."""
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe()
    try:
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_end, 1),
                    (os.POSIX_SPAWN_DUP2, fd, _CHILD_FD),
                ],
            )
        except OSError as e:
            raise NoChild(f"{path}: the check's child could not start: {e}") from e
        finally:
            os.close(write_end)
        try:
            out = await _read_to_end(loop, read_end)
            return await _reaped(loop, pid), out
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            raise
    finally:
        os.close(read_end)


async def _read_to_end(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    """Everything written to the pipe `fd` until its writer closes it, read as it comes."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            return
        except OSError as e:
            if not done.done():
                done.set_exception(e)
            return
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


async def _reaped(loop: asyncio.AbstractEventLoop, pid: int) -> int:
    """The child's exit status, once it has exited (its stdout closed: a moment at most);
    polled with a growing interval rather than waited for, so the loop never blocks."""
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
