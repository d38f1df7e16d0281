"""DirectoryWatcher against a real temporary directory."""

import asyncio
import threading
from pathlib import Path

from proxy.blocklist.watch import DirectoryWatcher

WAIT_S = 10.0  # generous upper bound for slow CI; nothing here asserts speed


class Recorder:
    """An on_change that records calls, notices overlap, and lets a test await the next call."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.calls = 0
        self.active = 0
        self.overlapped = False
        self.seen: list[set[str]] = []
        self._event = asyncio.Event()

    async def __call__(self) -> None:
        self.active += 1
        self.overlapped |= self.active > 1
        await asyncio.sleep(0.01)
        self.seen.append({p.name for p in self.directory.iterdir()})
        self.calls += 1
        self.active -= 1
        self._event.set()

    async def next_call(self) -> None:
        await asyncio.wait_for(self._event.wait(), WAIT_S)
        self._event.clear()


async def test_native_events_see_an_atomic_replace(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    async with DirectoryWatcher(tmp_path, rec, poll_interval_s=0, debounce_s=0.05) as watcher:
        await asyncio.sleep(0.3)  # let the native watcher subscribe
        tmp = tmp_path / ".blocklist-0000000001.jsonl.tmp"
        tmp.write_text("x")
        tmp.replace(tmp_path / "blocklist-0000000001.jsonl")
        await rec.next_call()
        assert "blocklist-0000000001.jsonl" in rec.seen[-1]
    assert watcher.runs == rec.calls >= 1


async def test_other_suffixes_are_ignored(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    async with DirectoryWatcher(tmp_path, rec, poll_interval_s=0.05, debounce_s=0.02):
        await asyncio.sleep(0.3)
        (tmp_path / "notes.txt").write_text("x")
        (tmp_path / ".hidden.jsonl").write_text("x")
        await asyncio.sleep(0.5)
        assert rec.calls == 0
        (tmp_path / "b.jsonl").write_text("x")
        await rec.next_call()
        assert rec.calls == 1


async def test_poll_fallback_without_native_events(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    async with DirectoryWatcher(
        tmp_path, rec, native=False, poll_interval_s=0.05, debounce_s=0.01
    ) as watcher:
        (tmp_path / "a.jsonl").write_text("1")
        await rec.next_call()
        (tmp_path / "a.jsonl").unlink()
        await rec.next_call()
        assert rec.seen[-1] == set()
    assert watcher.runs == 2


async def test_trigger_from_the_loop_and_from_a_thread(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    async with DirectoryWatcher(
        tmp_path, rec, native=False, poll_interval_s=0, debounce_s=0.01
    ) as w:
        w.trigger()
        await rec.next_call()
        thread = threading.Thread(target=w.trigger)
        thread.start()
        thread.join()
        await rec.next_call()
    assert rec.calls == 2


async def test_bursts_are_debounced_and_calls_never_overlap(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    async with DirectoryWatcher(tmp_path, rec, poll_interval_s=0.05, debounce_s=0.1) as w:
        await asyncio.sleep(0.3)
        for i in range(20):
            (tmp_path / f"v{i}.jsonl").write_text(str(i))
            w.trigger()
        await rec.next_call()
        while len(rec.seen[-1]) < 20:
            await rec.next_call()
    assert not rec.overlapped
    assert rec.calls < 20


async def test_a_failing_callback_does_not_stop_the_watcher(tmp_path: Path) -> None:
    calls = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        done.set()

    async with DirectoryWatcher(
        tmp_path, flaky, native=False, poll_interval_s=0, debounce_s=0
    ) as w:
        w.trigger()
        while w.runs < 1:
            await asyncio.sleep(0.01)
        w.trigger()
        await asyncio.wait_for(done.wait(), WAIT_S)
    assert w.failures == 1 and w.runs == 2


async def test_stop_is_clean_and_final(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    watcher = DirectoryWatcher(tmp_path, rec, poll_interval_s=0.05, debounce_s=0.01)
    await watcher.start()
    await asyncio.sleep(0.2)
    await watcher.stop()
    pending = [t for t in asyncio.all_tasks() if t.get_name().startswith("blocklist-watch")]
    assert pending == []
    (tmp_path / "late.jsonl").write_text("x")
    watcher.trigger()
    await asyncio.sleep(0.3)
    assert rec.calls == 0


async def test_missing_directory_falls_back_to_polling(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    missing = tmp_path / "later"
    async with DirectoryWatcher(missing, rec, poll_interval_s=0.05, debounce_s=0.01):
        missing.mkdir()
        (missing / "a.jsonl").write_text("x")
        await rec.next_call()
