"""benchmarks.blocklist_huge: a streamed table blocks what the list holds, and `measure` reads
it as a worker would."""

from __future__ import annotations

from pathlib import Path

from benchmarks.blocklist_huge import build, measure
from benchmarks.blocklists import entries, stream


def test_the_stream_is_the_benchmark_list_one_entry_at_a_time() -> None:
    """`entries` is now made from `stream`: what is left to check is that the stream holds
    nothing (a generator) and gives the issue's mix in the benchmark's numbering."""
    made = stream(20)
    assert iter(made) is made
    kinds = [str(e.type) for e in made]
    assert [kinds.count(t) for t in ("url", "prefix", "host", "sha256")] == [8, 8, 2, 2]
    assert entries(20, [("url", "http://p.example/")])[-1].id == "probe-0"


def test_a_streamed_table_blocks_every_listed_request_it_probes(tmp_path: Path) -> None:
    table = tmp_path / "t.map"
    built = build(3000, table)
    assert built["entries"] == 3000 and built["file_bytes"] == table.stat().st_size
    measured = measure(3000, table, rounds=1)
    blocked, probed = measured["hits_blocked"].split("/")
    assert int(probed) > 0 and blocked == probed
    assert set(measured["best_us"]) == {"other host", "listed host, unlisted path", "hits", "mix"}
