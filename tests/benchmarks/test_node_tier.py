"""The node tier's benchmark scenarios (issue 11; benchmarks/node_tier.py): the object set and
the origin route behind it, and one tiny real run of node-hit, big-set, restart and hit-zipf
through `benchmarks.run`, whose counts must meet the issue's goals (timings are not checked:
they belong to a quiet machine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.load import ObjectSet, Workload, _lua, set_draws
from benchmarks.origin import Router
from benchmarks.targets import EdgeTarget


def test_an_object_set_is_fixed_and_within_its_sizes() -> None:
    objects = ObjectSet(1000, 4096, 102_400)
    sizes = objects.sizes()
    assert sizes == ObjectSet(1000, 4096, 102_400).sizes()  # the same set in every run
    assert min(sizes) >= 4096 and max(sizes) <= 102_400
    assert sum(sizes) / len(sizes) < (4096 + 102_400) / 2  # log-uniform: mostly small
    assert objects.paths()[3] == f"/obj/{sizes[3]}/3" and objects.total_bytes() == sum(sizes)
    draws = set_draws(objects, "zipf", 5000)
    assert draws.count(objects.paths()[0]) > draws.count(objects.paths()[500])
    lua = _lua(Workload("set", objects=objects, pick="zipf"))
    assert "cdf[mid] < u" in lua and lua.count(",") >= 999


def test_the_origin_serves_object_set_paths_unmemoised() -> None:
    router = Router()
    a, b = router.resolve(b"/obj/5000/1"), router.resolve(b"/obj/5000/2")
    assert len(a.body) == len(b.body) == 5000 and a.body != b.body and a.etag != b.etag
    assert router.resolve(b"/obj/5000/1").body == a.body  # the same bytes, built again
    assert not router._memo


@pytest.mark.timeout(240)
def test_tiny_node_tier_scenarios_meet_their_counts(tmp_path: Path) -> None:
    # Required, not optional: .ci/run installs wrk, and `make` the edgeproxy executable.
    assert shutil.which("wrk") is not None, "the scenarios need wrk (apt-get install wrk)"
    assert EdgeTarget.available(), "the scenarios need the edgeproxy executable (make)"
    out = tmp_path / "out"
    code = run.main(
        [
            "--quick", "--rounds", "1", "--connections", "4", "--targets", "edgeproxy",
            "--scenarios", "node-hit,big-set,restart,hit-zipf",
            "--node-hit-objects", "500", "--big-set-objects", "100", "--big-set-kib", "4,16",
            "--restart-objects", "100", "--restart-load-s", "3", "--prime-s", "60",
            "--edge-node-tier-bytes", str(64 << 20), "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    # node-hit: the set's hits come from the node tier (an L1 holds ~13 of the 500 objects).
    (round1,) = data["node_hit"]["rounds"]
    assert round1["node_share"] > 0.9 and round1["l1_us"] > 0 and round1["node_us"] > 0
    # big-set and hit-zipf: one origin request per URL, priming included, with 2 workers.
    totals = data["origin_totals"]
    assert totals["big-set"]["targets"] == {"edgeproxy-big": 100}
    zipf = totals["hit-zipf"]
    assert zipf["targets"] == {"edgeproxy": zipf["urls"]} and zipf["urls"] > 8000
    # restart: the first pass after SIGTERM and start is served from the node tier.
    restart = data["restart"]
    assert restart["primed"] == restart["first_pass_ok"] == 100
    assert restart["first_pass_origin_requests"] == 0 and restart["load_bad_status"] == 0
    assert "## node-hit" in (out / "results.md").read_text()
