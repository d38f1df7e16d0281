"""push-enforce against an edge holding a signed list (issue 12's push goal at 10M and 100M
entries): the edge loads the list in every worker before the first push, and the report says
how many entries were listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import blocklists, edge_ops
from benchmarks.run import Origin, list_config_args, main
from benchmarks.targets import EdgeTarget


@pytest.mark.timeout(120)
def test_the_wait_ends_when_every_worker_holds_the_whole_list(tmp_path: Path) -> None:
    assert EdgeTarget.available(), "needs the edgeproxy executable (make)"
    origin = Origin(tmp_path)
    directory, public = blocklists.blocklist_dir(tmp_path, 300)
    edge = EdgeTarget("edgeproxy-list", blocklist_dir=directory, blocklist_key=public)
    try:
        edge.start(tmp_path / "edge", origin.port, 2)
        assert edge_ops.wait_list_loaded(edge, 300, 2, timeout_s=60.0) is not None
        assert edge_ops.wait_list_loaded(edge, 301, 2, timeout_s=0.5) is None
        assert edge_ops.wait_list_loaded(edge, 300, 3, timeout_s=0.5) is None
    finally:
        edge.stop()
        origin.stop()


@pytest.mark.timeout(180)
def test_pushes_run_against_an_edge_that_loaded_the_list(tmp_path: Path) -> None:
    assert EdgeTarget.available(), "needs the edgeproxy executable (make)"
    out = tmp_path / "out"
    argv = ["--quick", "--no-wrk", "--scenarios", "push-enforce", "--targets", "edgeproxy",
            "--pushes", "3", "--push-list-entries", "300", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    push = results["push_enforce"]
    assert push["list_entries"] == 300
    assert push["failures"] == 0 and push["served_after_ack"] == 0
    assert results["push_list_loaded_s"] >= 0
    assert "300 entries listed" in (out / "results.md").read_text()


def test_a_version_over_the_default_file_bound_gets_a_config_raising_it(tmp_path: Path) -> None:
    directory = tmp_path / "blocklist-big"
    directory.mkdir()
    version = directory / "blocklist-0000000001.jsonl"
    version.write_bytes(b"x")
    assert list_config_args(directory, 8080) == []
    with version.open("r+b") as f:
        f.truncate((1 << 30) + 1)  # sparse: no disk used
    flag, path = list_config_args(directory, 8080)
    text = Path(path).read_text()
    assert flag == "--config"
    assert f"max_file_bytes = {(1 << 30) + 1}" in text and "127.0.0.1:8080" in text
