"""`[fleet]` config: each mistake is reported with its field and line, as the rest of config."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, load

SITE = '[[sites]]\nname = "d"\nhosts = ["*"]\norigin = "http://127.0.0.1:9"\n'


def write(tmp_path: Path, blocklist: str, fleet: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(SITE + "\n[blocklist]\n" + blocklist + "\n[fleet]\n" + fleet)
    return path


@pytest.fixture
def pub(tmp_path: Path) -> str:
    p = tmp_path / "pub.pem"
    p.write_text("key")
    return f'public_key = "{p}"\n'


def test_a_good_fleet_section_loads(tmp_path: Path, pub: str) -> None:
    cfg = load(write(tmp_path, pub, 'redis_url = "rediss://u@127.0.0.1:6380/2"\nblock_s = 1.5\n'))
    assert cfg.fleet.redis_url.startswith("rediss://") and cfg.fleet.block_s == 1.5


@pytest.mark.parametrize(
    ("blocklist", "fleet", "field", "words"),
    [
        ("", 'redis_url = "http://127.0.0.1:6379/0"\n', "$.fleet.redis_url", "redis://"),
        ("", 'redis_url = "redis://127.0.0.1:6379/x"\n', "$.fleet.redis_url", "database"),
        ("", 'redis_url = "redis:///0"\n', "$.fleet.redis_url", "host"),
        ("-", 'redis_url = "redis://127.0.0.1/0"\n', "$.blocklist.public_key", "public_key"),
        ('dir = "/tmp"\n', 'redis_url = "redis://127.0.0.1/0"\n', "$.blocklist.dir", "not both"),
        ("", 'redis_url = "redis://127.0.0.1/0"\nblock_s = -1.0\n', "$.fleet.block_s", "negative"),
        ("", 'redis_url = "redis://127.0.0.1/0"\nblock_s = 0.0\n', "$.fleet.block_s", "> 0"),
        (
            "",
            'redis_url = "redis://127.0.0.1/0"\ntls_ca_file = "/nonexistent/ca.pem"\n',
            "$.fleet.tls_ca_file",
            "cannot read",
        ),
        ("", 'redis_url = "redis://127.0.0.1/0"\nblok_s = 1.0\n', "", "blok_s"),
    ],
)
def test_fleet_mistakes_name_field_and_line(
    tmp_path: Path, pub: str, blocklist: str, fleet: str, field: str, words: str
) -> None:
    path = write(tmp_path, "" if blocklist == "-" else pub + blocklist, fleet)
    with pytest.raises(ConfigError) as info:
        load(path)
    err = info.value
    assert words in str(err)
    if field:
        assert err.field == field
    assert err.line is not None
    line = path.read_text().splitlines()[err.line - 1]
    key = (field or "$.fleet.blok_s").rsplit(".", 1)[1]
    assert key in line or line.startswith("[")
