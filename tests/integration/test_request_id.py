"""Issue 17: a request id in every answer (hits, misses, passes, 304, 451, 421, admit's and the
front's own refusals), the same id sent to the origin, a client's own kept only from trusted
networks and only when well formed, the header name configurable and "" turning it off."""

from __future__ import annotations

import re

import aiohttp
import pytest
from aiohttp import web

from proxy.blocklist.model import Entry as BlockEntry
from proxy.front.request_id import RequestIds
from tests.integration.conftest import raw_request

ID = re.compile(r"^[a-z2-7]{8}-[0-9a-f]+$")


def origin_app(seen: list[str | None], header: str = "X-Request-Id") -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get(header))
        cc = "no-store" if request.path.startswith("/pass") else "max-age=60"
        return web.Response(body=b"ok", headers={"Cache-Control": cc, "ETag": '"e"'})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def id_of(head: bytes, name: bytes = b"x-request-id") -> str | None:
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip().decode()
    return None


async def test_every_answer_carries_an_id_and_the_origin_gets_the_same(
    origin_server, make_edge
) -> None:
    seen: list[str | None] = []
    edge = await make_edge(await origin_server(origin_app(seen)))
    edge.block(BlockEntry(id="t1", type="prefix", value="http://a.test/blocked/"))
    got: dict[str, str] = {}
    async with aiohttp.ClientSession() as s:
        for name, path, headers in [
            ("miss", "/c", {}),
            ("hit", "/c", {}),
            ("hot-hit", "/c", {}),  # the memo's answer (the front's fast path)
            ("304", "/c", {"If-None-Match": '"e"'}),
            ("pass", "/pass", {}),
            ("451", "/blocked/x", {}),
            ("451-again", "/blocked/x", {}),  # the remembered 451
            ("post", "/pass", {}),
        ]:
            method = "POST" if name == "post" else "GET"
            async with s.request(
                method, edge.url + path, headers={"Host": "a.test", **headers}
            ) as r:
                await r.read()
                rid = r.headers.get("X-Request-Id")
                assert rid is not None and ID.match(rid), (name, r.status, rid)
                got[name] = rid
    assert len(set(got.values())) == len(got)  # one id per request, never reused
    # The origin saw the id of the request that went there (miss, pass, post), no other.
    assert seen == [got["miss"], got["pass"], got["post"]]
    # admit's refusal (a bad escape) and the front's own (a malformed head): an id too.
    for raw in (
        b"GET /bad%zz HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ):
        answer = await raw_request(edge.server.port, raw)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
        rid = id_of(answer)
        assert rid is not None and ID.match(rid), answer[:300]


async def test_a_421_carries_an_id(origin_server, make_edge) -> None:
    seen: list[str | None] = []
    url = await origin_server(origin_app(seen))
    from proxy.config import Site

    edge = await make_edge(url, sites=[Site(name="a", hosts=["a.test"], origin=url)])
    answer = await raw_request(
        edge.server.port, b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n", read_timeout_s=1.0
    )
    assert answer.startswith(b"HTTP/1.1 421") and ID.match(id_of(answer) or ""), answer[:300]
    assert seen == []


@pytest.mark.parametrize(
    ("trusted", "sent", "kept"),
    [
        ([], "lb-assigned-1", False),  # nobody trusted: a client cannot choose its id
        (["127.0.0.0/8"], "lb-assigned-1", True),
        (["127.0.0.0/8"], "0f8e2c1a-6b7d-4c3e-9a1b-2c3d4e5f6a7b", True),  # a UUID
        (["127.0.0.0/8"], "bad id with spaces", False),  # malformed: replaced
        (["127.0.0.0/8"], "x" * 129, False),  # too long
        (["127.0.0.0/8"], 'q"<script>', False),
        (["10.0.0.0/8", "::1/128"], "lb-assigned-1", False),  # 127.0.0.1 is not in them
    ],
)
async def test_a_client_id_is_kept_only_from_trusted_networks_and_well_formed(
    origin_server, make_edge, trusted: list[str], sent: str, kept: bool
) -> None:
    seen: list[str | None] = []
    edge = await make_edge(
        await origin_server(origin_app(seen)), log__request_id_trusted_from=trusted
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.url + "/pass", headers={"X-Request-Id": sent}) as r:
            rid = r.headers["X-Request-Id"]
    assert seen == [rid]  # the origin gets exactly the id the answer names, once
    if kept:
        assert rid == sent
    else:
        assert rid != sent and ID.match(rid)


async def test_the_header_name_is_configurable_and_empty_turns_it_off(
    origin_server, make_edge
) -> None:
    seen: list[str | None] = []
    edge = await make_edge(
        await origin_server(origin_app(seen, "X-Trace")), log__request_id_header="X-Trace"
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.url + "/pass", headers={"X-Trace": "from-client"}) as r:
            assert "X-Request-Id" not in r.headers
            rid = r.headers["X-Trace"]
    assert ID.match(rid) and seen == [rid]

    off_seen: list[str | None] = []
    off = await make_edge(await origin_server(origin_app(off_seen)), log__request_id_header="")
    async with aiohttp.ClientSession() as s:
        async with s.get(off.url + "/pass", headers={"X-Request-Id": "client"}) as r:
            assert "X-Request-Id" not in r.headers
    assert off_seen == ["client"]  # off: the edge neither sets nor strips it


def test_trusted_networks_match_ipv4_ipv6_and_mapped_addresses() -> None:
    ids = RequestIds("X-Request-Id", ["10.0.0.0/8", "2001:db8::/32"])
    assert ids.trusts("10.1.2.3") and ids.trusts("::ffff:10.1.2.3") and ids.trusts("2001:db8::1")
    assert not ids.trusts("11.0.0.1") and not ids.trusts("") and not ids.trusts("not-an-ip")
    assert not RequestIds("X-Request-Id").trusts("10.1.2.3")  # nobody, unless configured


def test_ids_are_short_and_unique_per_process() -> None:
    a, b = RequestIds("X-Request-Id"), RequestIds("X-Request-Id")
    fields = [a.next_field() for _ in range(1000)] + [b.next_field() for _ in range(1000)]
    assert len(set(fields)) == 2000
    assert all(len(a.value(f)) <= 16 for f in fields[:1000])
    with pytest.raises(ValueError, match="not a field name"):
        RequestIds("X Request Id")


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("request_id_header", "X Request Id", "not a field name"),
        ("request_id_header", "X-Id:", "not a field name"),
        ("request_id_trusted_from", ["10.0.0.0/33"], "not an IP address or network"),
        ("request_id_trusted_from", ["lb.internal"], "not an IP address or network"),
    ],
)
def test_bad_request_id_settings_are_refused_naming_the_field(
    field: str, value: object, why: str
) -> None:
    from proxy.config import ConfigError
    from tests.integration.conftest import config

    with pytest.raises(ConfigError, match=why) as e:
        config("http://127.0.0.1:1", **{f"log__{field}": value})
    assert e.value.field == f"$.log.{field}"
