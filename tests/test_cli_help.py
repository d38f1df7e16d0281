"""Issue 17: every option and argument of every `edgeproxy` command says what it is in --help."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from proxy.cli import build_parser


def parsers(
    p: argparse.ArgumentParser, path: str = "edgeproxy"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def test_every_argument_has_help() -> None:
    missing = [
        f"{path} {a.option_strings or a.dest}"
        for path, p in parsers(build_parser())
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert not missing
    assert len(list(parsers(build_parser()))) > 15  # the walk reached the nested commands


def test_takedown_key_environment_variable_is_documented() -> None:
    """`decide --key` falls back to EDGEPROXY_TAKEDOWN_KEY: its help and the README say so."""
    from pathlib import Path

    decide = dict(parsers(build_parser()))["edgeproxy takedown decide"]
    (key,) = [a for a in decide._actions if "--key" in a.option_strings]
    assert "EDGEPROXY_TAKEDOWN_KEY" in key.help
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "EDGEPROXY_TAKEDOWN_KEY" in readme


def test_serve_flags_set_the_node_tier_they_name() -> None:
    from proxy.cli import _config_from_args, build_parser

    args = build_parser().parse_args(
        ["serve", "--origin", "http://127.0.0.1:9", "--node-tier-bytes", "4096"]
    )
    cfg = _config_from_args(args)
    assert cfg.cache.node_tier_bytes == 4096 and cfg.cache.node_tier_preallocate is True
    args = build_parser().parse_args(
        ["serve", "--origin", "http://127.0.0.1:9", "--no-node-tier-preallocate"]
    )
    assert _config_from_args(args).cache.node_tier_preallocate is False
    args = build_parser().parse_args(
        ["serve", "--origin", "http://127.0.0.1:9", "--node-tier-preallocate"]
    )
    assert _config_from_args(args).cache.node_tier_preallocate is True
