"""Evasion requests against a listed resource, on an origin that resolves every variant to the
protected content (it decodes, collapses, strips and honours override headers as lax
application servers do). None may deliver it."""

from __future__ import annotations

import re
import urllib.parse

import aiohttp
from aiohttp import web

from proxy.blocklist.model import Entry, EntryType
from tests.integration.conftest import raw_request

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
        return web.Response(body=b"other " + path.encode(), headers={"Cache-Control": "max-age=600"})

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
        await edge.pipeline.purge_listed(edge.pipeline.blocklist)
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
        requests.append(f"GET http://127.0.0.1{path} HTTP/1.1\r\nHost: other.example\r\n\r\n".encode())
    # Override headers on an innocent target, and a method override.
    for header in ("X-Original-URL", "X-Rewrite-URL"):
        requests.append(f"GET /innocent HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}: /manga/ch1\r\n\r\n".encode())
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
