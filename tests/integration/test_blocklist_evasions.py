"""Evasion requests against a listed resource, on an origin that resolves every variant to the
protected content (it decodes, collapses, strips and honours override headers as lax
application servers do). None may deliver it."""

from __future__ import annotations

import re
import urllib.parse

import aiohttp
import yarl
from aiohttp import web

from proxy.blocklist.model import Entry, EntryType
from tests.integration.conftest import raw_request
from tests.laxest_decoder import laxest_resolve

PROTECTED = b"PROTECTED MANGA CHAPTER"


def lax_origin(seen: list[str]) -> web.Application:
    """Resolves /manga/ch1 from any spelling, and from override headers."""

    def resolve(path: str) -> str:
        for _ in range(4):
            path = urllib.parse.unquote(path)
        path = path.replace("\\", "/")
        path = re.sub(r";[^/]*", "", path)
        parts: list[str] = []
        for seg in path.split("/"):
            if seg in ("", "."):
                continue
            if seg == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(seg)
        return "/" + "/".join(parts).lower()

    async def handler(request: web.Request) -> web.Response:
        raw = request.headers.get("X-Original-URL") or request.headers.get("X-Rewrite-URL")
        path = resolve(raw or request.raw_path.split("?")[0])
        seen.append(path)
        if path.startswith("/manga/ch1"):
            return web.Response(body=PROTECTED, headers={"Cache-Control": "max-age=600"})
        return web.Response(
            body=b"other " + path.encode(), headers={"Cache-Control": "max-age=600"}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


VARIANTS = [
    "/manga/ch1",
    "/manga/ch1/",
    "/Manga/../manga/ch1",
    "/%6d%61%6e%67%61/ch1",
    "/%256d%2561nga/ch1",
    "/%25256danga/ch1",
    "//manga//ch1",
    "/./manga/./ch1",
    "/x/../manga/ch1",
    "/x/%2e%2e/manga/ch1",
    "/x/%252e%252e/manga/ch1",
    "/manga;jsessionid=1/ch1",
    "/manga/ch1;v=2",
    "/manga%2fch1",
    "/manga/ch1?utm=1",
    "/manga/ch1#frag",
    "/manga/ch1%00",
    "/manga/%63h1",
    "/MANGA/CH1",
    "/Manga/Ch1",
    "/%4D%41NGA/ch1",
]


async def test_no_variant_delivers_listed_content(origin_server, make_edge) -> None:
    seen: list[str] = []
    edge = await make_edge(await origin_server(lax_origin(seen)))
    port = edge.server.port
    async with aiohttp.ClientSession() as s:
        # Cached before it is listed: purged and refused afterwards.
        async with s.get(edge.url + "/manga/ch1") as r:
            assert await r.read() == PROTECTED
        edge.block(
            Entry(id="t1", type=EntryType.PREFIX, value="http://127.0.0.1/manga/", notice="N-1"),
        )
        await edge.pipeline.enforcer.purge_listed(edge.pipeline.blocklist)
    before = len(seen)
    requests = []
    for path in VARIANTS:
        for host in ("127.0.0.1", "127.0.0.1.", "127.0.0.1:80", "127.000.000.001", "2130706433"):
            requests.append(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        requests.append(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        requests.append(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=0-3\r\n"
            'If-None-Match: "x"\r\n\r\n'.encode()
        )
        requests.append(
            f"GET http://127.0.0.1{path} HTTP/1.1\r\nHost: other.example\r\n\r\n".encode()
        )
    # Override headers on an innocent target, and a method override.
    for header in ("X-Original-URL", "X-Rewrite-URL"):
        requests.append(
            f"GET /innocent HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}: /manga/ch1\r\n\r\n".encode()
        )
    requests.append(
        b"POST /manga/ch1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-HTTP-Method-Override: GET\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    for raw in requests:
        raw = raw.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        answer = await raw_request(port, raw, read_timeout_s=2.0)
        head = answer.split(b"\r\n", 1)[0]
        assert PROTECTED not in answer, (raw, answer[:300])
        assert head.startswith((b"HTTP/1.1 451", b"HTTP/1.1 400", b"HTTP/1.1 200")), (raw, head)
    # The override-header requests reached the origin, but as /innocent.
    assert all(not p.startswith("/manga") for p in seen[before:])


# -- issue 10: encoded delimiters and invalid encodings, against the laxest decoder ----------

LISTED = b"LISTED OBJECT"


def serves_listed(raw_target: str) -> bool:
    path, pairs = laxest_resolve(raw_target)
    return path == "/manga/ch1" or (path == "/watch" and ("v", "42") in pairs)


def laxest_origin(received: list[str]) -> web.Application:
    """Serves the listed object for every target `serves_listed` accepts; records each raw
    target it is sent."""

    async def handler(request: web.Request) -> web.Response:
        received.append(request.raw_path)
        if serves_listed(request.raw_path):
            return web.Response(body=LISTED, headers={"Cache-Control": "max-age=600"})
        return web.Response(body=b"fine", headers={"Cache-Control": "max-age=600"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


LISTED_VARIANTS = [
    # encoded delimiters, once: matched
    "/manga/ch1%3F",
    "/manga/ch1%3Fx=1",
    "/manga/ch1%3fpage=2",
    "/manga/ch1%23",
    "/manga/ch1%23frag",
    "/manga%2Fch1",
    "/manga%2fch1",
    "/manga%5Cch1",
    "/manga%5cch1",
    "/manga/ch1%3Bjsessionid=1",
    "/manga%3Bx/ch1",
    "/manga\\ch1",
    # ... twice or deeper: refused
    "/manga/ch1%253F",
    "/manga/ch1%253Fx=1",
    "/manga/ch1%2523",
    "/manga/ch1%2523frag",
    "/manga%252Fch1",
    "/manga%25252Fch1",
    "/manga%255Cch1",
    "/manga/ch1%253B",
    "/manga/ch1%2500",
    "/manga/ch1%00",
    "/manga/ch1%00.jpg",
    "/%25256danga/ch1",
    "/%256danga/ch1",
    "/x/%2e%2e/manga/ch1",
    "/x/%252e%252e/manga/ch1",
    "/x/%25252e%25252e/manga/ch1",
    "/x%2F..%2Fmanga/ch1",
    "/x/..%2Fmanga/ch1",
    "/x/..%5Cmanga/ch1",
    "/x/..\\manga/ch1",
    # invalid UTF-8: refused
    "/manga%C0%AFch1",
    "/manga%c0%afch1",
    "/manga%E0%80%AFch1",
    "/manga%F0%80%80%AFch1",
    "/manga%C1%9Cch1",
    "/x/%C0%AE%C0%AE/manga/ch1",
    "/manga%25C0%25AFch1",
    "/manga/ch1%80",
    "/manga/ch1%BF%BF",
    "/manga/ch1%ED%A0%80",
    "/manga/ch1%ED%B0%80",
    "/manga/ch1%ED%A0%BD%ED%B8%80",
    "/manga/ch1%E2%82",
    "/manga/ch1%F4%90%80%80",
    # IIS %u: refused
    "/manga%u002Fch1",
    "/manga%U002Fch1",
    "/%u006Danga/ch1",
    "/manga/ch%u0031",
    "/manga%25u002Fch1",
    "/manga%25%75002Fch1",
    # Tomcat path parameters: matched; dot segments behind them: refused
    "/manga;jsessionid=ABC/ch1",
    "/manga/ch1;jsessionid=1",
    "/manga;a=1/ch1;b=2",
    "/x/..;/manga/ch1",
    "/manga/x/..;/ch1",
    "/x/..;jsessionid=1/manga/ch1",
    # IIS on NTFS: trailing dots and spaces, streams, best-fit forms: matched
    "/manga/ch1.",
    "/manga/ch1%2e",
    "/manga/ch1%20",
    "/manga/ch1.%20.",
    "/manga./ch1",
    "/manga/ch1::$DATA",
    "/manga/ch1%3A%3A%24data",
    "/%EF%BD%8D%EF%BD%81%EF%BD%8E%EF%BD%87%EF%BD%81/ch1",
    "/manga%EF%BC%8Fch1",
    "/manga%EF%BC%BCch1",
    "/manga/ch1%EF%BC%9Fx=1",
    # case (IIS): matched, folded
    "/MANGA/CH1",
    "/Manga/Ch1",
    "/%4Danga/CH1",
    "/MANGA%2FCH1",
    # the listed query, however spelt
    "/watch?v=42",
    "/watch%3Fv=42",
    "/watch%3fv%3d42",
    "/watch%3Fx=1&v=42",
    "/watch?x=1%26v=42",
    "/watch?x=1%3Bv=42",
    "/watch?v=4%32",
    "/watch?v=%25342",
    "/watch?v=42%23x",
    "/watch?v=42%2523x",
    "/watch?t=1;v=42",
    "/watch%253Fv=42",
    "/WATCH?v=42",
    "/watch;x=1?v=42",
    "/watch%u003Fv=42",
]

UNLISTED = [
    "/manga/ch2",
    "/manga/ch10",
    "/manga/ch1x",
    "/manga/ch1.jpg",
    "/manga/ch1:x",
    "/wiki/U.S.",
    "/manga",
    "/caf%C3%A9",
    "/%E6%BC%AB%E7%94%BB/ch1",
    "/a%20b",
    "/wiki/What%3F",
    "/api/group%2Fproject",
    "/c/%23hashtag",
    "/files/100%25",
    "/a;jsessionid=1/x",
    "/search?q=a+b",
    "/search?q=caf%C3%A9&x=%0D%0A",
    "/login?next=http%3A%2F%2Fx%2Fa%253Fb",
    "/watch?v=43",
    "/watch?v=420",
    "/watch",
]


def test_laxest_origin_serves_every_variant() -> None:
    """The oracle: without the edge, each variant reaches the listed object; no unlisted
    URL does."""
    assert all(serves_listed(v) for v in LISTED_VARIANTS), [
        v for v in LISTED_VARIANTS if not serves_listed(v)
    ]
    assert not any(serves_listed(v) for v in UNLISTED)


async def _edge_with_list(origin_server, make_edge, received: list[str]):  # type: ignore[no-untyped-def]
    edge = await make_edge(await origin_server(laxest_origin(received)))
    edge.block(
        Entry(id="u-ch1", type=EntryType.URL, value="http://127.0.0.1/manga/ch1", notice="N-10"),
        Entry(id="u-watch", type=EntryType.URL, value="http://127.0.0.1/watch?v=42", notice="N-11"),
    )
    return edge


async def test_no_encoding_of_a_listed_url_reaches_the_origin_issue_10(
    origin_server, make_edge
) -> None:
    received: list[str] = []
    edge = await _edge_with_list(origin_server, make_edge, received)
    statuses: dict[str, bytes] = {}
    for target in LISTED_VARIANTS:
        for raw in (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            f"GET http://127.0.0.1{target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ):
            answer = await raw_request(edge.server.port, raw.encode("latin-1"), read_timeout_s=2.0)
            head = answer.split(b"\r\n", 1)[0]
            assert head[9:12] in (b"451", b"400"), (target, answer[:300])
            assert LISTED not in answer
            statuses[target] = head[9:12]
    assert received == []  # not one of them was forwarded
    # Refused ones close the connection; matched ones carry the entry id.
    assert statuses["/manga%C0%AFch1"] == statuses["/manga/ch1%253F"] == b"400"
    assert statuses["/manga/ch1%3F"] == statuses["/watch%3Fv=42"] == b"451"
    assert statuses["/manga;jsessionid=ABC/ch1"] == statuses["/MANGA/CH1"] == b"451"


async def test_refusals_say_why_and_close_issue_10(origin_server, make_edge) -> None:
    received: list[str] = []
    edge = await _edge_with_list(origin_server, make_edge, received)
    for target, reason in [
        ("/manga/ch1%253F", b"double-encoded-delimiter"),
        ("/manga%C0%AFch1", b"bad-utf8"),
        ("/manga%u002Fch1", b"u-escape"),
        ("/x/..;/manga/ch1", b"hidden-dot-segment"),
        ("/manga/ch1%0A", b"control-escape"),
    ]:
        # A second request on the same connection is never answered: the edge closed it.
        raw = (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            "GET /manga/ch2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        ).encode()
        answer = await raw_request(edge.server.port, raw, read_timeout_s=2.0)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert reason in answer
        assert answer.count(b"HTTP/1.1 ") == 1
    assert received == []


async def test_unlisted_urls_still_pass_unchanged_issue_10(origin_server, make_edge) -> None:
    received: list[str] = []
    edge = await _edge_with_list(origin_server, make_edge, received)
    async with aiohttp.ClientSession() as s:
        for target in UNLISTED:
            url = yarl.URL(edge.url + target, encoded=True)  # sent as spelt
            async with s.get(url, headers={"Cache-Control": "no-cache"}) as r:
                assert r.status == 200, target
                assert await r.read() == b"fine"
            assert received[-1] == target  # forwarded as the client spelt it
    assert len(received) == len(UNLISTED)


async def test_site_declares_case_sensitive_paths_issue_10(origin_server, make_edge) -> None:
    """The flag reaches the site table the block phase reads, and the snapshot answers it."""
    from proxy.config import Site

    origin = await origin_server(laxest_origin([]))
    edge = await make_edge(
        origin,
        sites=[
            Site(name="strict", hosts=["strict.test"], origin=origin, case_sensitive_paths=True),
            Site(name="folded", hosts=["*"], origin=origin),
        ],
    )
    edge.block(Entry(id="s", type=EntryType.URL, value="http://strict.test/Video/AbC"))
    strict, folded = edge.pipeline.sites.route("strict.test"), edge.pipeline.sites.route("x")
    assert strict is not None and strict.case_sensitive_paths is True
    assert folded is not None and folded.case_sensitive_paths is False
    snap = edge.pipeline.blocklist
    for path, hit in [("/Video/AbC", True), ("/video/abc", False), ("/VIDEO/ABC", False)]:
        assert (snap.check("strict.test", path, None, case_sensitive=True) is not None) is hit
        assert snap.check("strict.test", path, None) is not None  # folded by default
