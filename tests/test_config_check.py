"""Issue 10, "Operating faults seen": every bad value is refused by `check-config` (and by
`serve`) with the file, the line and the field, as an operator reads it on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE = """listen = "127.0.0.1:0"
workers = 1
via_name = "edgeproxy"

[[sites]]
name = "a"
hosts = ["a.example"]
origin = "http://127.0.0.1:9000"

[limits]
keepalive_timeout_s = 75.0

[log]
access_log = ""
"""


def run(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return p


def line_of(text: str, needle: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(needle)


def test_base_config_passes(tmp_path: Path) -> None:
    r = run(["check-config", str(write(tmp_path, BASE))])
    assert r.returncode == 0, r.stderr


BAD = [
    ("keepalive_timeout_s = 75.0", "keepalive_timeout_s = nan", "limits.keepalive_timeout_s"),
    ("keepalive_timeout_s = 75.0", "keepalive_timeout_s = inf", "limits.keepalive_timeout_s"),
    ("keepalive_timeout_s = 75.0", "keepalive_timeout_s = -inf", "limits.keepalive_timeout_s"),
    ("keepalive_timeout_s = 75.0", "keepalive_timeout_s = -1.0", "limits.keepalive_timeout_s"),
    ("keepalive_timeout_s = 75.0", "max_header_count = -5", "limits.max_header_count"),
    (
        "keepalive_timeout_s = 75.0",
        "max_request_line_bytes = 70000",
        "limits.max_request_line_bytes",
    ),
    ("workers = 1", "workers = -3", "workers"),
    ("workers = 1", "workers = 1\ndrain_timeout_s = nan", "drain_timeout_s"),
    ("[log]", "[origin]\nconnect_timeout_s = -0.5\n[log]", "origin.connect_timeout_s"),
    (
        "[log]",
        "[origin]\nresponse_head_memo_entries = -1\n[log]",
        "origin.response_head_memo_entries",
    ),
    (
        "[log]",
        "[origin]\nresponse_head_memo_entries = 2000000\n[log]",
        "origin.response_head_memo_entries",
    ),
    (
        "[log]",
        "[origin]\nresponse_head_memo_max_bytes = -1\n[log]",
        "origin.response_head_memo_max_bytes",
    ),
    (
        "[log]",
        "[origin]\nresponse_head_memo_max_bytes = 70000\n[log]",
        "origin.response_head_memo_max_bytes",
    ),
    (
        "[log]",
        "[origin]\nresponse_head_memo_learn_one_in = 0\n[log]",
        "origin.response_head_memo_learn_one_in",
    ),
    ("[log]", "[blocklist]\npoll_interval_s = nan\n[log]", "blocklist.poll_interval_s"),
    ("[log]", "[blocklist]\ncompile_timeout_s = 0.0\n[log]", "blocklist.compile_timeout_s"),
    ("[log]", "[admin]\napply_timeout_s = inf\n[log]", "admin.apply_timeout_s"),
    (
        "[log]",
        "[cache]\nshared_tier_queue_max_items = -1\n[log]",
        "cache.shared_tier_queue_max_items",
    ),
    ("[log]", "[cache]\nnode_touch_delay_s = -0.1\n[log]", "cache.node_touch_delay_s"),
    ("[log]", "[cache]\nnode_touch_interval_s = -1\n[log]", "cache.node_touch_interval_s"),
    ("[log]", "[cache]\nnode_proof_cache_bytes = -1\n[log]", "cache.node_proof_cache_bytes"),
    ("[log]", "[cache]\npass_lane_max_entries = -1\n[log]", "cache.pass_lane_max_entries"),
    ("[log]", "[cache]\nhot_memo_max_bytes = 0\n[log]", "cache.hot_memo_max_bytes"),
    ("[log]", "[cache]\nhit_for_miss_max_bytes = 0\n[log]", "cache.hit_for_miss_max_bytes"),
    ("[log]", "[cache]\nhit_for_miss_max_entries = 0\n[log]", "cache.hit_for_miss_max_entries"),
    (
        "[log]",
        "[origin]\nrequest_fields_memo_max_bytes = 0\n[log]",
        "origin.request_fields_memo_max_bytes",
    ),
    (
        "[log]",
        "[cache]\npass_lane_max_entries = 2000000\n[log]",
        "cache.pass_lane_max_entries",
    ),
    ('via_name = "edgeproxy"', 'via_name = "edge proxy"', "via_name"),
    ('via_name = "edgeproxy"', 'via_name = "edge;proxy"', "via_name"),
    ('via_name = "edgeproxy"', 'via_name = ""', "via_name"),
    ('via_name = "edgeproxy"', 'via_name = "edge\\r\\nX: y"', "via_name"),
    ('hosts = ["a.example"]', 'hosts = [""]', "sites[0].hosts"),
    ('hosts = ["a.example"]', 'hosts = ["a example"]', "sites[0].hosts"),
    ('hosts = ["a.example"]', 'hosts = ["a..example"]', "sites[0].hosts"),
    ('hosts = ["a.example"]', 'hosts = ["-a.example"]', "sites[0].hosts"),
    ('hosts = ["a.example"]', 'hosts = ["a.example/x"]', "sites[0].hosts"),
    ('hosts = ["a.example"]', 'hosts = ["*."]', "sites[0].hosts"),
    (
        'origin = "http://127.0.0.1:9000"',
        'origin = "http://127.0.0.1:9000"\nblocked_by_url = "/relative"',
        "sites[0].blocked_by_url",
    ),
    (
        'origin = "http://127.0.0.1:9000"',
        'origin = "http://127.0.0.1:9000"\nblocked_by_url = "ftp://x.example/"',
        "sites[0].blocked_by_url",
    ),
    (
        'origin = "http://127.0.0.1:9000"',
        'origin = "http://127.0.0.1:9000"\nblocked_by_url = "https://x.example/a>; rel=x"',
        "sites[0].blocked_by_url",
    ),
    (
        'origin = "http://127.0.0.1:9000"',
        'origin = "http://127.0.0.1:9000"\nblocked_by_url = "https://x.example/a b"',
        "sites[0].blocked_by_url",
    ),
    (
        'origin = "http://127.0.0.1:9000"',
        'origin = "http://127.0.0.1:9000"\nblocked_by_url = "https://x.example/\\"q"',
        "sites[0].blocked_by_url",
    ),
    (
        'origin = "http://127.0.0.1:9000"',
        'origin = "http://127.0.0.1:9000"\nblocked_by_url = "https://x.example/\\u0007"',
        "sites[0].blocked_by_url",
    ),
    (
        "[limits]",
        '[[sites]]\nname = "a"\nhosts = ["b.example"]\n'
        'origin = "http://127.0.0.1:9001"\n\n[limits]',
        "sites[1].name",
    ),
    ('access_log = ""', 'access_log = "/nonexistent-dir-xyz/access.log"', "log.access_log"),
    ('access_log = ""', "access_log_flush_interval_s = 0.0", "log.access_log_flush_interval_s"),
    ('access_log = ""', "access_log_flush_interval_s = nan", "log.access_log_flush_interval_s"),
    (
        'access_log = ""',
        "access_log_max_buffered_records = 0",
        "log.access_log_max_buffered_records",
    ),
    ('access_log = ""', "access_log_format_chunk_rows = -1", "log.access_log_format_chunk_rows"),
    ('access_log = ""', "access_log_max_pending_bytes = 0", "log.access_log_max_pending_bytes"),
    (
        'access_log = ""',
        "access_log_client_fields_max_entries = -1",
        "log.access_log_client_fields_max_entries",
    ),
    ("[log]", '[admin]\ntoken_file = "/nonexistent/token"\n[log]', "admin.token_file"),
    ("[log]", '[blocklist]\npublic_key = "/nonexistent/key.pub"\n[log]', "blocklist.public_key"),
]


@pytest.mark.parametrize(("old", "new", "field"), BAD, ids=[b[1][:40] for b in BAD])
def test_check_config_refuses_with_line_and_field(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    text = BASE.replace(old, new, 1)
    assert text != BASE
    path = write(tmp_path, text)
    r = run(["check-config", str(path)])
    assert r.returncode != 0, r.stdout
    out = r.stdout + r.stderr
    assert f"(field $.{field})" in out, out
    key = field.rsplit(".", 1)[-1].split("[")[0]
    if key == "name":
        expected = [n for n, ln in enumerate(text.splitlines(), 1) if ln.startswith("name =")][1]
    else:
        expected = line_of(text, f"{key} =")
    assert f"{path}:{expected}:" in out, out


def test_good_host_forms_pass(tmp_path: Path) -> None:
    text = BASE.replace('hosts = ["a.example"]', 'hosts = ["*", "*.b.example", "bücher.example"]')
    r = run(["check-config", str(write(tmp_path, text))])
    assert r.returncode == 0, r.stderr


def test_serve_refuses_to_start(tmp_path: Path) -> None:
    text = BASE.replace("keepalive_timeout_s = 75.0", "keepalive_timeout_s = nan")
    path = write(tmp_path, text)
    r = run(["serve", "--config", str(path)], timeout=60.0)
    assert r.returncode != 0
    assert f"{path}:{line_of(text, 'keepalive_timeout_s')}:" in r.stderr + r.stdout
    assert "limits.keepalive_timeout_s" in r.stderr + r.stdout


def test_serve_refuses_duplicate_site(tmp_path: Path) -> None:
    text = BASE.replace(
        "[limits]",
        '[[sites]]\nname = "a"\nhosts = ["b.example"]\norigin = "http://127.0.0.1:1"\n[limits]',
    )
    r = run(["serve", "--config", str(write(tmp_path, text))], timeout=60.0)
    assert r.returncode != 0
    assert "sites[1].name" in r.stderr + r.stdout
