"""The strict head (proxy/front/strict.py) against llhttp: thousands of heads, valid, odd and
hostile, each fed to one connection with the strict head on and to one with it off. What the
handler and the fast answer are given, what is written back, what the front counts and the
state the connection is left in must be the same, and every head the strict head takes must be
one llhttp parses into the same request (issue 18). No request can be smuggled or a header
injected through it: it takes less than llhttp, and gives the pipeline the same values."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import pytest

from proxy.front.exchange import EMPTY_BODY, Request
from proxy.front.limits import FrontLimits
from proxy.front.request_id import RequestIds
from proxy.front.server import Connection, FrontServer
from proxy.front.strict import StrictHead, fields

FLAGGED = [b"range", b"if-none-match", b"cache-control", b"authorization"]
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
FAST = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast"
_DATE = re.compile(rb"\r\nDate: [^\r]*")


class _Transport:
    """Records what the front writes; no EOF half-close, so a closing answer closes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(_DATE.sub(b"", data))  # the front's own answers carry the second

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, **_: int) -> None: ...
    def get_write_buffer_size(self) -> int:
        return 0


def _server(
    limits: FrontLimits, seen: list[tuple[Any, ...]], ids: RequestIds | None
) -> FrontServer:
    def handler(req: Any, responder: Any) -> None:
        seen.append(
            (
                "handler",
                req.method,
                req.raw_target,
                req.http_version,
                req.headers,
                req.keep_alive,
                req.has_body,
                req.content_length,
                req.host,
                req.flagged,
                req.tls,
                req.id_field,
                req.client_ip,
            )
        )
        if req.has_body:
            responder.send_bytes(ANSWER, close=True)  # its body is not this test's business
        else:
            responder.send_bytes(ANSWER)

    def fast(*args: Any) -> bytes | None:
        seen.append(("fast", *args))
        return FAST if args[1].startswith(b"/fast") else None

    server = FrontServer(handler, limits, flag_headers=FLAGGED, fast_answer=fast, request_ids=ids)
    server.loop = asyncio.get_running_loop()
    return server


def _run(
    reads: list[bytes], strict: bool, limits: FrontLimits, ids: RequestIds | None
) -> tuple[Any, ...]:
    seen: list[tuple[Any, ...]] = []
    server = _server(limits, seen, ids)
    conn = Connection(server)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    if not strict:
        conn._strict_max = -1
    for data in reads:
        conn.data_received(data)
    return (
        seen,
        transport.writes,
        transport.closed,
        dict(server.rejected),
        conn._phase,
        conn._stopped,
        conn._close_after,
        conn._lingering,
        conn.deadline,
        conn._active is None,
        len(conn._queue),
    )


def _ids() -> RequestIds:
    ids = RequestIds("X-Request-Id")
    ids.prefix = b"X-Request-Id: test-"  # the same ids on both connections
    return ids


# ---------------------------------------------------------------- generated heads

METHODS = [b"GET"] * 6 + [b"HEAD"] * 2 + [b"POST", b"get", b"GEt", b"PUT", b"OPTIONS", b"PURGE"]
METHODS += [b"CONNECT", b"GET\t", b"GET ", b" GET", b"QUERY", b"BREW"]
TARGETS = [b"/", b"/fast", b"/fast/x?y=1", b"/a/b?x=1&y=%20", b"/%2e%2e/etc", b"//evil/x"]
TARGETS += [b"/~u/;p=1", b"/a:b@c!$&'()*+,=", b"http://a/fast", b"*", b"/fast#frag", b"/a b"]
TARGETS += [b"/\x00", b"/caf\xc3\xa9", b"/a\\b", b'/a"b', b"/a<b>", b"/{x}|^`", b"/fast\t"]
TARGETS += [b"/a[1]", b"fast", b"/" + b"a" * 3000, b"/fast%0d%0aSet-Cookie:x", b"/fast\r"]
VERSIONS = [b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]
VERSIONS += [b"HTTP/1.10", b"HTTP/01.1", b"HTTP/1.1\t", b"HTTP /1.1", b""]
HOSTS = [b"Host: a", b"Host: fast.example:8080", b"host: b", b"HOST: c", b"Host:", b"Host:  x  "]
HOSTS += [b"Host: a\tb", b"Host:\ta", b"Host : a", b"Host: a b c", b"Host: [::1]:80", b" Host: a"]
HOSTS += [b"Host: a\x00", b"Host: caf\xc3\xa9", b"Hos_t: a", b"Host: a\x7f", b"Host: \x0ba"]
FIELDS = [b"User-Agent: wrk", b"Accept: */*", b"Accept-Language: en-US,en;q=0.5", b"DNT: 1"]
FIELDS += [b"Content-Length: 0", b"Content-Length: 5", b"Transfer-Encoding: chunked"]
FIELDS += [b"Transfer-Encoding: gzip, chunked", b"Content-Length: 1, 1", b"content-length:0"]
FIELDS += [b"Connection: close", b"Connection: keep-alive", b"Connection: Keep-Alive"]
FIELDS += [b"connection: keep-alive, upgrade", b"Connection: keep-alive ", b"Connection:keep-alive"]
FIELDS += [b"Connection: upgrade", b"Upgrade: websocket", b"Expect: 100-continue"]
FIELDS += [b"Connection: keep-alive, close", b"Connection: keep-alive,close", b"Connection: close "]
FIELDS += [b"Connection: keep-alivex", b"Connection: keep-alive\tclose", b"Connection: KEEP-ALIVE"]
FIELDS += [b"Proxy-Connection: close", b"Proxy-Connection: keep-alive", b"Keep-Alive: 300"]
FIELDS += [b"X_Forwarded_For: 1.2.3.4", b"Content_Length: 5", b"Transfer_Encoding: chunked"]
FIELDS += [b"Range: bytes=0-1", b'If-None-Match: "x"', b"Cache-Control: no-cache"]
FIELDS += [b"RANGE: bytes=0-1", b"authorization: Basic eA==", b"X-Range: 1", b"Ranges: 1"]
FIELDS += [b"X-Empty:", b"X-Tab:\tv\t", b"X-Spaces:   v  w   ", b" folded", b"\tfolded"]
FIELDS += [b"Bad Name: x", b"X-Ctl: a\x01b", b"X-Del: a\x7fb", b"X-Hi: caf\xc3\xa9", b":x"]
FIELDS += [b"X-Nul: a\x00b", b"Name : x", b"X-Req: a\rb", b"X-Lf: a\nb", b"X-Colon: a: b"]
FIELDS += [b"Upgrade-Insecure-Requests: 1", b"Sec-Fetch-Mode: navigate", b"X-Request-Id: abc"]
FIELDS += [b"Cookie: a=1; b=2", b"X-Long: " + b"v" * 900, b"Host: second", b"host: a"]
EOLS = [b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n", b"\n\r"]
TAILS = [b""] * 12 + [b"\r\n", b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n", b"abc", b"0\r\n\r\n"]
TAILS += [b"GET /fast HTTP/1.1\r\n", b"\x00", b"hello"]
MUTATIONS = [b"\x00", b"\r", b"\n", b" ", b"\t", b":", b"_", b"\x7f", b"\x80", b"A", b"/", b"\xff"]


CLEAN = [b"User-Agent: curl/8.5.0", b"Accept: */*", b"Accept-Encoding: gzip, br", b"DNT: 1"]
CLEAN += [b"Connection: keep-alive", b"Cookie: a=1; b=2", b"X-Spaces:   v  w   ", b"X-Empty:"]
CLEAN += [b"Sec-Fetch-Mode: navigate", b"Upgrade-Insecure-Requests: 1", b"X-Tab:\tv\t", b"If: 1"]
CLEAN += [b'If-None-Match: "v1"', b"Range: bytes=0-9"]  # flagged: taken, not for the fast answer


def _head(rng: random.Random) -> bytes:
    if rng.random() < 0.5:  # a common head, perhaps with one odd field or byte
        method = rng.choice([b"GET", b"GET", b"HEAD"])
        target = rng.choice([b"/fast", b"/fast/a?b=1", b"/x/y", b"/", b"/%41;p"])
        lines = [method + b" " + target + b" HTTP/1.1", rng.choice([b"Host: a", b"host: b:80"])]
        lines += rng.sample(CLEAN, rng.randrange(0, 6))
        if rng.random() < 0.3:
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(FIELDS + HOSTS))
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        if rng.random() < 0.2:
            head += rng.choice(TAILS)
        if rng.random() < 0.2:
            i = rng.randrange(len(head))
            head = head[:i] + rng.choice(MUTATIONS) + head[i + rng.randrange(2) :]
        return head
    eol = rng.choice(EOLS) if rng.random() < 0.1 else b"\r\n"
    lines = [b" ".join([rng.choice(METHODS), rng.choice(TARGETS), rng.choice(VERSIONS)])]
    others = rng.sample(FIELDS, rng.randrange(0, 7))
    hosts = [rng.choice(HOSTS) for _ in range(rng.choice([1, 1, 1, 1, 0, 2]))]
    if rng.random() < 0.8 and hosts:
        lines += hosts[:1] + others + hosts[1:]
    else:
        lines += others
        for host in hosts:
            lines.insert(rng.randrange(1, len(lines) + 1), host)
    head = b"".join(line + (rng.choice(EOLS) if rng.random() < 0.03 else eol) for line in lines)
    head += eol + (rng.choice(TAILS) if rng.random() < 0.2 else b"")
    if rng.random() < 0.25:  # mutate a few bytes anywhere
        buf = bytearray(head)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(buf) + 1)
            op = rng.random()
            if op < 0.4 and i < len(buf):
                buf[i : i + 1] = rng.choice(MUTATIONS)
            elif op < 0.7:
                buf[i:i] = rng.choice(MUTATIONS)
            elif i < len(buf):
                del buf[i]
        head = bytes(buf)
    return head


HAND_WRITTEN = [
    b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /fast HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /miss HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
    # smuggling: two framings, a second request hidden in a field, CL on GET
    b"GET /fast HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nGET /fast HTTP/1.1\r\nHost: b\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nX: y\nGET /x HTTP/1.1\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    b"GET /fast HTTP/1.1\nHost: a\n\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\n X: folded\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nX:\r\n folded\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nX: 1\r\nHost: a\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\nhello",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nX-Forwarded_For: 1.1.1.1\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"GET /fast HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET /fast HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET http://a/fast HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\rb\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nIf-None-Match: *\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a \t\r\nX-A:  b  c \t\r\n\r\n",
    b"GET /fast?a=%0d%0a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\n\r",
    b"GET /fast HTTP/1.1\r\nHost: a\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n\r\n",
    b"\r\nGET /fast HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 120 + b"\r\n",
    b"GET /fast HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 3000 + b"\r\n\r\n",
]


async def test_strict_head_agrees_with_llhttp_on_thousands_of_heads() -> None:
    rng = random.Random(18)
    heads = HAND_WRITTEN + [_head(rng) for _ in range(6000)]
    limit_sets = [FrontLimits(), FrontLimits(max_header_count=3, max_header_field_bytes=600)]
    taken = 0
    for i, head in enumerate(heads):
        limits = limit_sets[i % 2]
        warm = b"GET /fast HTTP/1.1\r\nHost: w\r\n\r\n"
        # alone, behind an answered request, split in two reads, its first byte (or a stray
        # CRLF) arriving with the request before it
        half = len(head) // 2
        for reads in (
            [head],
            [warm, head],
            [head[:half], head[half:]],
            [warm + head[:1], head[1:]],
            [warm + b"\r\n", head],
        ):
            ids_on = i % 3 == 0
            with_strict = _run(reads, True, limits, _ids() if ids_on else None)
            without = _run(reads, False, limits, _ids() if ids_on else None)
            assert with_strict == without, head
        taken += StrictHead(FLAGGED, limits.max_header_count).parse(head) is not None
    # Both sides of the line are exercised: many heads taken, many left to llhttp.
    assert 1000 < taken < len(heads) - 1000


async def test_every_taken_head_is_what_llhttp_parses() -> None:
    """For each head the strict head takes: llhttp (the strict head off) hands the handler the
    same method, target, Host and header list, keep-alive on, no body, nothing flagged, and
    nothing is left over after it."""
    rng = random.Random(1812)
    strict = StrictHead(FLAGGED, 100)
    checked = flagged_seen = 0
    for head in HAND_WRITTEN + [_head(rng) for _ in range(4000)]:
        parsed = strict.parse(head)
        if parsed is None:
            continue
        method, target, host, lines, flagged = parsed
        seen, writes, closed, rejected, phase, stopped, *_ = _run(
            [head.replace(b"/fast", b"/slow", 1)], False, FrontLimits(), None
        )
        target = target.replace(b"/fast", b"/slow", 1)
        assert rejected == {} and not stopped and not closed and phase == 0, head
        if not flagged:  # a flagged request is never offered to the fast answer
            assert seen.pop(0)[:4] == ("fast", method, target, host), head
        assert seen[0] == (
            "handler",
            method,
            target,
            "1.1",
            fields(lines),
            True,
            False,
            None,
            host,
            flagged,
            False,
            b"",
            "127.0.0.1",
        ), head
        assert len(seen) == 1 and writes == [ANSWER]
        checked += 1
        flagged_seen += flagged
    assert checked > 500 and flagged_seen > 50


@pytest.mark.parametrize(
    "head",
    [
        b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHOST: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nUser-Agent: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\n X: fold\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n\r\n",
        b"GET /x#f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\n",
    ],
)
def test_declines(head: bytes) -> None:
    """Each kind of head the strict head leaves to llhttp (issue 18's list)."""
    assert StrictHead(FLAGGED, 100).parse(head) is None


def test_takes_the_common_heads() -> None:
    strict = StrictHead(FLAGGED, 100)
    assert strict.parse(b"GET /bytes/1024 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n") == (
        "GET",
        b"/bytes/1024",
        b"127.0.0.1:8080",
        b"\r\nHost: 127.0.0.1:8080",
        False,
    )
    browser = (
        b"HEAD /a?b=1 HTTP/1.1\r\nHost: x.example\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
        b"Accept: */*\r\nConnection: keep-alive\r\nX-Pad:  v \t\r\n\r\n"
    )
    parsed = strict.parse(browser)
    assert parsed is not None and parsed[:3] == ("HEAD", b"/a?b=1", b"x.example")
    assert not parsed[4]
    assert fields(parsed[3]) == [
        (b"Host", b"x.example"),
        (b"User-Agent", b"Mozilla/5.0 (X11)"),
        (b"Accept", b"*/*"),
        (b"Connection", b"keep-alive"),
        (b"X-Pad", b"v"),
    ]
    flagged = strict.parse(b"GET /a HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n")
    assert flagged is not None and flagged[4]  # taken, and never offered to the fast answer


VALUE_FIELDS = [b"User-Agent: wrk", b"user-agent: x y", b"USER-AGENT:  \tz\t ", b"User-Agent:"]
VALUE_FIELDS += [b"Referer: http://r/?a=1", b"referer:", b"REFERER:\tq", b"X-User-Agent: no"]
VALUE_FIELDS += [b"User-Agents: no", b"Referer-X: no", b"X-Referer: no", b"Accept: */*"]
VALUE_NAMES = (b"user-agent", b"referer", b"accept", b"host", b"x-missing")


def test_a_strict_requests_values_are_its_header_lists() -> None:
    """The access log reads User-Agent and Referer from a strict head's field lines without
    its header list (`Request.values`); the first non-empty value of each name, as it reads
    them from the list llhttp's callbacks build (`fields`, checked against llhttp above)."""
    rng = random.Random(1807)
    strict = StrictHead(FLAGGED, 100)
    checked = 0
    for _ in range(2000):
        chosen = rng.choices(VALUE_FIELDS, k=rng.randrange(0, 6))
        head = b"\r\n".join([b"GET /x HTTP/1.1", b"Host: a", *chosen]) + b"\r\n\r\n"
        parsed = strict.parse(head)
        assert parsed is not None, head
        lines = parsed[3]
        lazy = Request(
            "GET", b"/x", "1.1", None, True, False, None, EMPTY_BODY, "", 0.0, lines=lines
        )
        built = Request("GET", b"/x", "1.1", fields(lines), True, False, None, EMPTY_BODY, "", 0.0)
        assert lazy.values(*VALUE_NAMES) == built.values(*VALUE_NAMES), head
        assert lazy.headers == fields(lines)  # cut out when first read
        checked += any(v for v in built.values(*VALUE_NAMES)[:2])
    assert checked > 1000
