"""Issue 17, "how it is checked": the README's "Running in production" covers systemd, Docker,
the state dir, log shipping, Prometheus and TLS, and names files and flags that exist."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def production_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Running in production")
    return text[start : text.index("\n## ", start + 1)]


def test_running_in_production_covers_what_operators_ask() -> None:
    section = production_section()
    for topic in ("**systemd.**", "**Docker.**", "**State dir.**", "**Logs.**", "**Prometheus.**"):
        assert topic in section, topic
    assert "**TLS.**" in section


def test_the_files_and_flags_it_names_exist() -> None:
    section = production_section()
    for path in re.findall(r"`((?:config/)[\w.-]+|Dockerfile|compose\.yaml)`", section):
        assert (ROOT / path).exists(), path
    for name in ("Dockerfile", "compose.yaml", "config/edgeproxy.service"):
        assert name.split("/")[-1] in section
    serve = build_parser().parse_args(["serve", "--log-format", "json", "--state-dir", "/x"])
    assert serve.log_format == "json" and serve.state_dir == "/x"
    assert build_parser().parse_args(["init", "/tmp/e.toml"]).path == "/tmp/e.toml"
