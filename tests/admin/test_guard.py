"""Issue 10, "Admin API (reachable from a browser on the operator's machine)": the admin answers
only its own host names (DNS rebinding), refuses other origins, takes mutations only as JSON,
challenges with `WWW-Authenticate: Bearer`, refuses a declared oversize body before reading it,
bounds a trickled body by a total deadline, and names unknown fields instead of dropping them.
The real admin app on a real socket, in front of a fake node (tests/admin/fake_node.py)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.admin.fake_node import TOKEN, Admin
from tests.integration.conftest import raw_request


async def call(
    admin: Admin, method: str, path: str, *, data: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, admin.url + path, data=data, headers=headers) as r:
            return r.status, dict(r.headers), await r.read()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- Host --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "evil.test",
        "evil.test:{port}",
        "127.0.0.1.evil.test",
        "localhost.evil.test:{port}",
        "127.0.0.2:{port}",
        "[::2]:{port}",
        "::1",  # an unbracketed literal parses as nothing
        "",
    ],
)
async def test_a_host_the_admin_does_not_answer_to_gets_421(make_admin, host: str) -> None:
    admin = await make_admin()
    for path in ("/status", "/metrics", "/healthz", "/blocklist"):
        code, _, body = await call(admin, "GET", path, Host=host.format(port=admin.port))
        assert code == 421 and b"Host" in body, (path, host, body)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "localhost.", "[::1]:{port}"]
)
async def test_the_default_host_names_are_answered(make_admin, host: str) -> None:
    admin = await make_admin()
    code, _, _ = await call(admin, "GET", "/status", Host=host.format(port=admin.port))
    assert code == 200


async def test_configured_host_names_replace_the_default(make_admin) -> None:
    admin = await make_admin(host_names=["edge-admin.internal"])
    assert (await call(admin, "GET", "/status", Host="edge-admin.internal:8081"))[0] == 200
    assert (await call(admin, "GET", "/status", Host="EDGE-ADMIN.internal"))[0] == 200
    assert (await call(admin, "GET", "/status", Host=f"127.0.0.1:{admin.port}"))[0] == 421


async def test_two_host_fields_are_refused(make_admin) -> None:
    admin = await make_admin()
    answer = await raw_request(
        admin.port,
        b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    )
    assert 400 <= status_of(answer) < 500 and b'"blocklist_version"' not in answer


# -- Origin ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.test",
        "http://evil.test:{port}",
        "https://127.0.0.1:{port}",
        "http://127.0.0.1:{other}",
        "http://127.0.0.1",  # port 80
        "null",
        "http://127.0.0.1:{port}/path",
        "file://",
    ],
)
async def test_a_cross_origin_request_is_refused(make_admin, origin: str) -> None:
    admin = await make_admin()
    o = origin.format(port=admin.port, other=admin.port + 1)
    code, _, body = await call(admin, "GET", "/status", Origin=o)
    assert code == 403 and b"cross-origin" in body, (o, body)
    code, _, _ = await call(
        admin,
        "POST",
        "/purge",
        data=b'{"host": "a.test"}',
        Origin=o,
        Authorization=f"Bearer {TOKEN}",
        **{"Content-Type": "application/json"},
    )
    assert code == 403
    assert admin.node.purges == []


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}"])
async def test_the_admins_own_origin_is_accepted(make_admin, origin: str) -> None:
    admin = await make_admin()
    code, _, _ = await call(admin, "GET", "/status", Origin=origin.format(port=admin.port))
    assert code == 200


# -- JSON on mutations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
)
async def test_a_mutation_that_is_not_json_gets_415_and_changes_nothing(
    make_admin, content_type: str | None
) -> None:
    admin = await make_admin()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type:
        headers["Content-Type"] = content_type
    entry = b'{"entries": [{"id": "e", "type": "url", "value": "http://a.test/x"}]}'
    code, _, body = await call(admin, "POST", "/blocklist/entries", data=entry, **headers)
    assert code == 415 and b"application/json" in body
    code, _, _ = await call(admin, "POST", "/purge", data=b'{"host": "a.test"}', **headers)
    assert code == 415
    assert admin.node.blocklist.pushed == {} and admin.node.purges == []


async def test_json_with_a_charset_is_json(make_admin) -> None:
    admin = await make_admin()
    code, _, body = await call(
        admin,
        "POST",
        "/purge",
        data=b'{"host": "a.test"}',
        Authorization=f"Bearer {TOKEN}",
        **{"Content-Type": "application/json; charset=utf-8"},
    )
    assert code == 200, body
    assert admin.node.purges == [{"url": "", "prefix": "", "host": "a.test"}]


async def test_a_delete_with_a_non_json_body_gets_415(make_admin) -> None:
    admin = await make_admin()
    admin.node.blocklist.pushed["e"] = {"id": "e"}
    code, _, _ = await call(
        admin,
        "DELETE",
        "/blocklist/entries/e",
        data=b"x=1",
        Authorization=f"Bearer {TOKEN}",
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert code == 415 and "e" in admin.node.blocklist.pushed
    code, _, _ = await call(
        admin, "DELETE", "/blocklist/entries/e", Authorization=f"Bearer {TOKEN}"
    )
    assert code == 200 and "e" not in admin.node.blocklist.pushed


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization, error",
    [
        (None, False),
        ("Bearer wrong", True),
        (f"bearer {TOKEN}x", True),
        (f"Basic {TOKEN}", True),
    ],
)
async def test_401_carries_a_bearer_challenge(
    make_admin, authorization: str | None, error: bool
) -> None:
    admin = await make_admin()
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    code, h, _ = await call(admin, "POST", "/purge", data=b'{"host": "a.test"}', **headers)
    assert code == 401
    assert h["WWW-Authenticate"].startswith("Bearer ")
    assert ('error="invalid_token"' in h["WWW-Authenticate"]) is error


# -- body size and deadline ----------------------------------------------------------------------


def post_head(admin: Admin, path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{admin.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize("declared", [600_000_000, 1025, 10**18])
async def test_a_declared_oversize_body_gets_413_before_any_byte_is_read(
    make_admin, declared: int
) -> None:
    admin = await make_admin(max_body_bytes=1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
    try:
        writer.write(post_head(admin, "/blocklist/entries", f"Content-Length: {declared}\r\n"))
        await writer.drain()
        async with asyncio.timeout(5):  # no body byte sent: the answer comes anyway
            line = await reader.readline()
    finally:
        writer.close()
    assert line.startswith(b"HTTP/1.1 413"), line


async def test_an_oversize_chunked_body_gets_413(make_admin) -> None:
    admin = await make_admin(max_body_bytes=1024)
    chunk = b"x" * 600
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    answer = await raw_request(
        admin.port, post_head(admin, "/purge", "Transfer-Encoding: chunked\r\n") + body
    )
    assert status_of(answer) == 413 and admin.node.purges == []


@pytest.mark.parametrize("framing", ["Content-Length: 40\r\n", "Transfer-Encoding: chunked\r\n"])
async def test_a_trickled_body_is_cut_at_the_deadline(make_admin, framing: str) -> None:
    admin = await make_admin(body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
    chunked = "chunked" in framing
    started = time.monotonic()

    async def trickle() -> None:
        writer.write(post_head(admin, "/purge", framing))
        for _ in range(40):  # one byte every 0.1 s: 4 s in all, far past the deadline
            writer.write(b"1\r\n{\r\n" if chunked else b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

    sender = asyncio.ensure_future(trickle())
    try:
        async with asyncio.timeout(5):
            line = await reader.readline()
    finally:
        sender.cancel()
        writer.close()
    assert line.startswith(b"HTTP/1.1 408"), line
    assert time.monotonic() - started < 3.0
    assert admin.node.purges == []


# -- unknown fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        (
            {"entries": [{"id": "t", "type": "url", "value": "http://a.test/x", "expire_at": 1}]},
            "expire_at",
        ),
        (
            {
                "entries": [
                    {"id": "ok", "type": "url", "value": "http://a.test/y"},
                    {"id": "t", "type": "url", "value": "http://a.test/x", "resaon": "typo"},
                ]
            },
            "resaon",
        ),
        ({"entries": [], "entires": []}, "entires"),
        ({"entrys": [{"id": "t", "type": "url", "value": "http://a.test/x"}]}, "entrys"),
    ],
)
async def test_push_names_an_unknown_field_and_applies_nothing(
    make_admin, body: dict, field: str
) -> None:
    admin = await make_admin()
    async with aiohttp.ClientSession() as s:
        async with s.post(admin.url + "/blocklist/entries", json=body, headers=admin.auth) as r:
            assert r.status == 400
            assert field in (await r.json())["error"]
    assert admin.node.blocklist.pushed == {}


async def test_purge_names_an_unknown_field(make_admin) -> None:
    admin = await make_admin()
    async with aiohttp.ClientSession() as s:
        async with s.post(admin.url + "/purge", json={"urll": "x"}, headers=admin.auth) as r:
            assert r.status == 400 and "urll" in (await r.json())["error"]
        async with s.post(admin.url + "/purge", json=[1], headers=admin.auth) as r:
            assert r.status == 400
    assert admin.node.purges == []


async def test_a_valid_push_with_expires_at_is_applied(make_admin) -> None:
    admin = await make_admin()
    entry = {"id": "t", "type": "url", "value": "http://a.test/x", "expires_at": 2e9}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            admin.url + "/blocklist/entries", json={"entries": [entry]}, headers=admin.auth
        ) as r:
            assert r.status == 200
    assert admin.node.blocklist.pushed == {"t": entry}


async def test_on_a_wildcard_address_any_ip_literal_but_no_unlisted_name(make_admin) -> None:
    """Bound to 0.0.0.0 the admin is reached by whichever address a caller uses; IP literals
    cannot be rebound, names can: only listed names pass."""
    admin = await make_admin()
    from proxy.admin.app import AdminGuard
    from proxy.config import AdminConfig

    guard = AdminGuard(AdminConfig(listen=f"0.0.0.0:{admin.port}"))
    assert (
        guard.host_ok("10.1.2.3:8081") and guard.host_ok("[fe80::1]") and guard.host_ok("localhost")
    )
    assert not guard.host_ok("rebound.evil.test") and not guard.host_ok("10.1.2.3.nip.io")
    assert guard.origin_ok(f"http://10.1.2.3:{admin.port}")
    assert not guard.origin_ok("http://evil.test:8081")
    listed = AdminGuard(AdminConfig(listen="0.0.0.0:8081", host_names=["edge.internal"]))
    assert listed.host_ok("edge.internal") and not listed.host_ok("10.1.2.3")


@pytest.mark.parametrize(
    "line, field",
    [
        ("max_body_bytes = -1", "$.admin.max_body_bytes"),
        ("body_timeout_s = -0.5", "$.admin.body_timeout_s"),
        ('host_names = "localhost"', "$.admin.host_names"),
        ("max_body_byte = 10", "max_body_byte"),
    ],
)
def test_bad_admin_limits_are_refused_naming_the_field(tmp_path, line: str, field: str) -> None:
    from proxy.config import ConfigError, load

    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[[sites]]\nname = "a"\nhosts = ["a"]\norigin = "http://127.0.0.1:1"\n\n[admin]\n{line}\n'
    )
    with pytest.raises(ConfigError) as e:
        load(cfg)
    assert field in str(e.value) and "edge.toml:7" in str(e.value), str(e.value)
