"""Issue 17: the state directory defaults to a per-user or system location, never to `./var`
under wherever `serve` was started, and the node says which one it uses."""

from __future__ import annotations

from pathlib import Path

from proxy.config import Config, default_state_dir
from tests.integration.node import Node
from tests.node.conftest import origin_app


def test_default_state_dir_by_environment_and_user() -> None:
    assert Config().state_dir == ""
    assert default_state_dir().is_absolute()  # whatever runs the tests: never ./var
    home = "/home/op"
    assert default_state_dir({}, 1000, home) == Path("/home/op/.local/state/edgeproxy")
    assert default_state_dir({"XDG_STATE_HOME": "/srv/st"}, 1000, home) == Path("/srv/st/edgeproxy")
    # A relative XDG_STATE_HOME is invalid (XDG Base Directory spec): ignored.
    assert default_state_dir({"XDG_STATE_HOME": "rel"}, 1000, home) == Path(
        "/home/op/.local/state/edgeproxy"
    )
    assert default_state_dir({"XDG_STATE_HOME": "/srv/st"}, 0, home) == Path("/var/lib/edgeproxy")
    # systemd's StateDirectory= wins for anyone (the first, when it lists several).
    sd = {"STATE_DIRECTORY": "/var/lib/private/edgeproxy:/var/lib/other"}
    assert default_state_dir(sd, 0, home) == Path("/var/lib/private/edgeproxy")
    assert default_state_dir(sd, 1000, home) == Path("/var/lib/private/edgeproxy")


async def test_serve_without_state_dir_uses_the_default_and_says_so(
    origin_server, nodes, tmp_path: Path
) -> None:
    """$STATE_DIRECTORY, as systemd's StateDirectory= sets it (it wins for root and others
    alike, so this runs the same under any user; the uid and XDG rules are tested above)."""
    want = tmp_path / "state" / "edgeproxy"
    node = Node(
        ["--origin", await origin_server(origin_app([])), "--workers", "1"],
        env={"STATE_DIRECTORY": str(want)},
    )
    node.state_dir = ""  # no --state-dir flag
    nodes.append(node)
    await node.start()
    assert f"state dir {want}\n" in node.output
    status, _ = await node.admin_json(
        "POST",
        "/blocklist/entries",
        {"entries": [{"id": "kept", "type": "url", "value": f"{node.url}/gone"}]},
    )
    assert status == 200
    assert b"kept" in (want / "blocklist-changes.log").read_bytes()  # logged, not rewritten
