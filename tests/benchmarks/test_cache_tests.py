"""The pure parts of the cache-tests runner: counting the suite's categories, ordering what was
not passed, and finding what a peer passes that the edge does not."""

from __future__ import annotations

from benchmarks.cache_tests import SuiteTest, detail, not_passed, peer_wins, tally

TESTS = [
    SuiteTest("a-check", "a check", "s", "check"),
    SuiteTest("b-optimal", "an optimal", "s", "optimal"),
    SuiteTest("c-required", "a required", "s", "required", ("a-check",)),
    SuiteTest("d-required", "another required", "s", "required"),
    SuiteTest("e-browser", "browser only", "s", "required"),
]
OURS = {
    "a-check": "no",
    "b-optimal": "retry",
    "c-required": "dependency_fail",
    "d-required": "pass",
    "e-browser": "untested",
}


def test_tally_counts_every_category_even_empty_ones() -> None:
    counts = tally(OURS)
    assert counts["pass"] == 1 and counts["retry"] == 1 and counts["dependency_fail"] == 1
    assert counts["fail"] == 0 and counts["harness_fail"] == 0
    assert sum(counts.values()) == len(OURS)


def test_not_passed_puts_required_first_and_leaves_out_no_and_untested() -> None:
    assert [t.id for t in not_passed(TESTS, OURS)] == ["c-required", "b-optimal"]


def test_peer_wins_names_the_peers_that_pass_what_we_do_not() -> None:
    peers = {
        "nginx": {
            "a-check": "yes",
            "b-optimal": "pass",
            "c-required": "fail",
            "d-required": "pass",
        },
        "squid": {"b-optimal": "pass", "c-required": "pass", "e-browser": "pass"},
    }
    assert peer_wins(TESTS, OURS, peers) == {
        "a-check": ["nginx"],  # a check they answer yes, we no
        "b-optimal": ["nginx", "squid"],
        "c-required": ["squid"],
    }  # d-required we pass; e-browser is not run here


def test_detail_is_one_line_of_the_raw_result() -> None:
    assert detail(True) == "passed"
    assert detail(["Setup", "retry"]) == "Setup: retry"
    assert detail(None) == "null"
