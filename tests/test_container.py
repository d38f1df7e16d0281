"""Issue 17: the Dockerfile and compose.yaml (documented, not built in CI: no daemon there) say
what an operator relies on; these checks read them so they cannot drift from the node."""

from __future__ import annotations

import json
import re
from pathlib import Path

from proxy.config import load, parse_hostport

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_slim_non_root_with_a_readiness_healthcheck() -> None:
    ins = instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    users = [arg for word, arg in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    (health,) = [arg for word, arg in ins if word == "HEALTHCHECK"]
    (cmd,) = [json.loads(arg) for word, arg in ins if word == "CMD"]
    admin = cmd[cmd.index("--admin") + 1]
    _, port = parse_hostport(admin, what="admin")
    assert f"http://127.0.0.1:{port}/readyz" in health
    assert cmd[0] == "serve" and "--listen" in cmd
    (entry,) = [json.loads(arg) for word, arg in ins if word == "ENTRYPOINT"]
    assert entry == ["edgeproxy"]
    env = " ".join(arg for word, arg in ins if word == "ENV")
    assert "STATE_DIRECTORY=/var/lib/edgeproxy" in env  # the node's default state dir


def test_compose_config_is_valid_and_uses_the_redis_service() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    assert re.search(r"^  redis:\n    image: redis:", compose, re.M)
    assert "./config/edgeproxy.compose.toml:/etc/edgeproxy/edgeproxy.toml:ro" in compose
    cfg = load(str(ROOT / "config" / "edgeproxy.compose.toml"))
    assert cfg.cache.shared_tier_url.startswith("redis://redis:")
    assert cfg.listen.startswith("0.0.0.0:") and cfg.admin.listen.startswith("0.0.0.0:")
    assert "--admin-token-file=/run/secrets/admin_token" in compose  # 0.0.0.0 needs a token
