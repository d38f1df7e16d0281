"""benchmarks.blocklist_huge: a streamed table blocks what the list holds, and `measure` reads
it as a worker would."""

from __future__ import annotations

from pathlib import Path

from benchmarks.blocklist_huge import build, measure, stream
from benchmarks.blocklists import entries


def test_the_stream_is_the_benchmark_list_one_entry_at_a_time() -> None:
    assert list(stream(25)) == entries(25)


def test_a_streamed_table_blocks_every_listed_request_it_probes(tmp_path: Path) -> None:
    table = tmp_path / "t.map"
    built = build(3000, table)
    assert built["entries"] == 3000 and built["file_bytes"] == table.stat().st_size
    measured = measure(3000, table, rounds=1)
    blocked, probed = measured["hits_blocked"].split("/")
    assert int(probed) > 0 and blocked == probed
    assert set(measured["best_us"]) == {"other host", "listed host, unlisted path", "hits", "mix"}
