"""The admin API of a running node: authentication and its token sources, the loopback rule."""

from __future__ import annotations

import aiohttp

from tests.integration.conftest import free_port
from tests.integration.node import Node
from tests.node.conftest import get, origin_app


async def test_admin_refuses_public_bind_without_token(tmp_path) -> None:
    port = free_port()
    node = Node(
        ["--origin", "http://127.0.0.1:1", "--workers", "1"], env={"EDGEPROXY_ADMIN_TOKEN": ""}
    )
    node.admin_port = port
    node.args += ["--admin", f"0.0.0.0:{port}"]
    await node.start(expect_ready=False)
    assert await node.wait_exit() == 2
    assert "non-loopback" in "".join(node.output)


async def test_purge_needs_the_token(origin_server, nodes) -> None:
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    node = Node(["--origin", origin, "--workers", "1"])
    nodes.append(node)
    await node.start()
    await get(node.url + "/doc")
    async with aiohttp.ClientSession() as s:
        async with s.post(node.admin + "/purge", json={"url": node.url + "/doc"}) as r:
            assert r.status == 401
        async with s.post(
            node.admin + "/purge",
            json={"url": node.url + "/doc"},
            headers={"Authorization": "Bearer wrong"},
        ) as r:
            assert r.status == 401
    status, body = await node.admin_json("POST", "/purge", {"url": node.url + "/doc"})
    assert status == 200 and body["purged"] == 1
    await get(node.url + "/doc")
    assert seen == ["/doc", "/doc"]


async def test_admin_token_file_from_the_config(origin_server, nodes, tmp_path) -> None:
    """[admin] token_file in the config is the admin token when no flag names one."""
    origin = await origin_server(origin_app([]))
    token_file = tmp_path / "token"
    token_file.write_text("from-the-config\n")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[[sites]]\nname = "s"\nhosts = ["*"]\norigin = "{origin}"\n\n'
        f'[admin]\ntoken_file = "{token_file}"\n'
    )
    node = Node(["--config", str(cfg), "--workers", "1"], env={"EDGEPROXY_ADMIN_TOKEN": ""})
    nodes.append(node)
    await node.start()
    async with aiohttp.ClientSession() as s:
        async with s.post(
            node.admin + "/purge",
            json={"host": "x"},
            headers={"Authorization": "Bearer from-the-config"},
        ) as r:
            assert r.status == 200
        async with s.post(node.admin + "/purge", json={"host": "x"}) as r:
            assert r.status == 401


async def test_purge_of_a_bad_url_is_400_with_the_reason(origin_server, nodes) -> None:
    """Issue 17: a URL the cache could not hold is the caller's mistake (400 naming why), not a
    worker failure (502); nothing is purged and the node keeps serving."""
    origin = await origin_server(origin_app([]))
    node = Node(["--origin", origin, "--workers", "2"])
    nodes.append(node)
    await node.start()
    await get(node.url + "/doc")
    for bad, why in [
        ("/doc", "needs a scheme and a host"),
        ("http://[::1/doc", "not a valid URL"),
        ("http://a.test/a%00b", "not a valid URL"),
    ]:
        status, body = await node.admin_json("POST", "/purge", {"url": bad})
        assert status == 400 and why in body["error"], (bad, body)
        status, body = await node.admin_json("POST", "/purge", {"prefix": bad})
        assert status == 400 and why in body["error"], (bad, body)
    status, body = await node.admin_json("POST", "/purge", {"url": node.url + "/doc"})
    assert status == 200 and body == {"purged": 1, "workers": 2}
