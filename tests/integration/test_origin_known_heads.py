"""The origin client's known heads (proxy/origin/h1.py, issue 18): a whole answer in one read
whose head llhttp parsed before, byte for byte, is answered from what the parser made of it
then. Checked against real scripted scripted on 127.0.0.1: every answer comes out as the
parser gives it (a pool with the memo off is the reference), only whole answers of a known
length on a kept connection are learnt, and any read that is not exactly a known head and its
body (split, longer, shorter, an interim head first, a response to HEAD) is parsed as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from proxy.config import OriginConfig, load
from proxy.origin import OriginError, OriginFailure
from proxy.origin.h1 import H1OriginPool
from tests.integration.node import Node, eventually, metric
from tests.integration.scripted import Step

Respond = Callable[[int, int, bytes, bytes], list[Step]]


def hdrs() -> CIMultiDict[str]:
    return CIMultiDict(Host="origin.test")


async def outcome(pool: H1OriginPool, url: URL, method: str = "GET") -> tuple[Any, ...]:
    """What a caller sees of one exchange: the head as parsed, the body, or the failure."""
    try:
        resp = await pool.request(url, method, b"/", hdrs(), None)
        body, complete = await resp.read_up_to(1 << 20)
        resp.release()
    except OriginError as e:
        return ("error", e.kind)
    return (resp.status, resp.reason, list(resp.headers), resp.content_length, body, complete)


async def run(pool: H1OriginPool, url: URL, times: int, method: str = "GET") -> list[Any]:
    seen = []
    for _ in range(times):
        seen.append(await outcome(pool, url, method))
        await asyncio.sleep(0)  # a dropped connection's callbacks run before the next request
    return seen


# Whole answers in one write. `learnt`: the parser's head is kept for the next one.
ANSWERS = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True, id="plain"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nDate: Mon, 07 Dec 2026 18:00:00 GMT\r\n"
        b"Content-Type: application/octet-stream\r\nCache-Control: no-store\r\n"
        b"Content-Length: 1024\r\n\r\n" + b"x" * 1024,
        True,
        id="pass-through-1k",
    ),
    pytest.param(
        b"HTTP/1.1 200 Fine Thanks\r\nX-A: 1\r\nX-A: 2\r\nx-a:   spaced  \r\n"
        b"Set-Cookie: a=b\r\nContent-Length: 3\r\n\r\nabc",
        True,
        id="repeated-fields-and-whitespace",
    ),
    pytest.param(
        b"HTTP/1.1 200 \r\nX-Obs: caf\xe9\r\nContent-Length: 2\r\n\r\nok", True, id="obs-text"
    ),
    pytest.param(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", True, id="404"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True, id="empty-body"),
    pytest.param(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        True,
        id="http10-keep-alive",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        False,
        id="connection-close",
    ),
    pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, id="http10"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        False,
        id="chunked",
    ),
    pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", False, id="204"),
    pytest.param(b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n', False, id="304"),
    pytest.param(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", False, id="304-length"
    ),
]


@pytest.mark.parametrize(("answer", "learnt"), ANSWERS)
async def test_each_answer_comes_out_as_the_parser_gives_it(
    scripted, make_pool, answer: bytes, learnt: bool
) -> None:
    origin = await scripted(lambda c, r, h, b: [answer])
    memo = await make_pool(response_head_memo_learn_one_in=1)
    reference = await make_pool(response_head_memo_entries=0)
    with_memo = await run(memo, origin.url, 4)
    without = await run(reference, origin.url, 4)
    assert with_memo == without
    assert with_memo[0] == with_memo[3] and with_memo[0][0] != "error"
    # Filed at the first, its parse kept at the second, taken from the memo at the others.
    assert memo.known_heads.replayed == (2 if learnt else 0)
    assert bool(memo.known_heads.known()) is learnt
    assert reference.known_heads.replayed == 0 and not reference.known_heads.known()
    if learnt:
        (head,) = memo.known_heads.known()
        assert answer.startswith(head) and head.endswith(b"\r\n\r\n")


def _then(first: bytes, later: list[Step]) -> Respond:
    """The first two requests get `first` (teaching the head); every later one `later`."""
    return lambda c, r, h, b: [first] if c == 0 and r < 2 else later


KNOWN = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"


@pytest.mark.parametrize(
    ("later", "expect"),
    [
        pytest.param([KNOWN + b"01234", 0.02, b"56789"], "whole", id="body-split-over-reads"),
        pytest.param([KNOWN, 0.02, b"0123456789"], "whole", id="head-alone-then-body"),
        pytest.param([KNOWN[:20], 0.02, KNOWN[20:] + b"0123456789"], "whole", id="head-split"),
        pytest.param([KNOWN + b"01234", None], "reset", id="body-cut-short"),
        pytest.param([KNOWN + b"0123456789EXTRA", 0.05], "extra", id="bytes-past-the-body"),
        pytest.param(
            [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + KNOWN + b"0123456789"],
            "whole",
            id="interim-first",
        ),
    ],
)
async def test_a_read_that_is_not_exactly_a_known_answer_is_parsed(
    scripted, make_pool, later: list[Step], expect: str
) -> None:
    origin = await scripted(_then(KNOWN + b"abcdefghij", later))
    memo = await make_pool(response_head_memo_learn_one_in=1)
    reference = await make_pool(response_head_memo_entries=0)
    first = await run(memo, origin.url, 2)
    assert first[1][4] == b"abcdefghij" and KNOWN in memo.known_heads.known()
    await run(reference, origin.url, 2)
    got = await outcome(memo, origin.url)
    want = await outcome(reference, origin.url)
    assert memo.known_heads.replayed == 0
    assert got == want
    if expect == "whole":
        assert got[:5] == (200, b"OK", [(b"Content-Length", b"10")], 10, b"0123456789")
    elif expect == "reset":
        assert got == ("error", OriginFailure.RESET)
    else:  # the answer is whole, and then the origin is out of step: its connection goes
        assert got[4] == b"0123456789"
        await asyncio.sleep(0.01)
        assert memo.open_connections == reference.open_connections == 0


async def test_answers_behind_an_interim_head_are_never_learnt(scripted, make_pool) -> None:
    """The whole read (103, then the final head and its body) ends like a known answer; it
    must not be kept as one, or the next such read would lose its interim head."""
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    origin = await scripted(lambda c, r, h, b: [early + KNOWN + b"0123456789"])
    pool = await make_pool(response_head_memo_learn_one_in=1)
    interims: list[int] = []
    for _ in range(3):
        resp = await pool.request(
            origin.url, "GET", b"/", hdrs(), None, interim=lambda s, r, f: interims.append(s)
        )
        body, _complete = await resp.read_up_to(100)
        assert (resp.status, body) == (200, b"0123456789")
    assert interims == [103, 103, 103]
    assert pool.known_heads.replayed == 0 and not pool.known_heads.known()


async def test_a_response_to_head_is_never_replayed(scripted, make_pool) -> None:
    """The head a GET taught says Content-Length: 10; the same head answering HEAD has no
    body after it, and the answer ends at the head, as before."""

    def respond(c: int, r: int, head: bytes, body: bytes) -> list[Step]:
        return [KNOWN] if head.startswith(b"HEAD ") else [KNOWN + b"0123456789"]

    origin = await scripted(respond)
    pool = await make_pool(response_head_memo_learn_one_in=1)
    assert [g[4] for g in await run(pool, origin.url, 2)] == [b"0123456789"] * 2
    got = await run(pool, origin.url, 2, "HEAD")
    assert [g[:5] for g in got] == [(200, b"OK", [(b"Content-Length", b"10")], 10, b"")] * 2
    assert (await outcome(pool, origin.url))[4] == b"0123456789"
    assert pool.known_heads.replayed == 1 and origin.connections == 1


async def test_the_memo_is_bounded_in_entries_and_head_bytes(scripted, make_pool) -> None:
    """Heads 0 and 1 (of one size) and 2 (of another, and too long) in turn, each answered
    three times in a row: with room for two entries, 0 is kept at its second answer and
    replayed at its third; 1 then files beside it, is kept and replayed; 2 is never filed.
    Filing a third head (3) empties the memo, and 0 answers parsed again after it."""
    pads = {0: b"a", 1: b"b", 2: b"c" * 200, 3: b"d"}

    def respond(c: int, r: int, head: bytes, body: bytes) -> list[Step]:
        n = int(head.split(b" ")[1][1:])
        return [b"HTTP/1.1 200 OK\r\nX-Pad: %s\r\nContent-Length: 1\r\n\r\n%d" % (pads[n], n)]

    origin = await scripted(respond)
    pool = await make_pool(
        response_head_memo_entries=2,
        response_head_memo_max_bytes=100,
        response_head_memo_learn_one_in=1,
    )

    async def ask(n: int, times: int) -> None:
        for _ in range(times):
            resp = await pool.request(origin.url, "GET", b"/%d" % n, hdrs(), None)
            assert (await resp.read_up_to(10))[0] == b"%d" % n

    await ask(0, 3)
    assert pool.known_heads.replayed == 1
    await ask(1, 3)
    await ask(2, 3)
    assert pool.known_heads.replayed == 2
    assert sorted(h.split(b"\r\n")[1] for h in pool.known_heads.known()) == [
        b"X-Pad: a",
        b"X-Pad: b",
    ]
    await ask(3, 1)
    assert not pool.known_heads.known()
    await ask(0, 1)
    assert pool.known_heads.replayed == 2


async def test_an_answer_the_size_of_a_known_one_is_not_taken_for_it(scripted, make_pool) -> None:
    """Heads are filed by the size of their read: another head and body of the same size
    (a field's value, a status, the split between head and body) is its own answer."""
    same_size = [
        b"HTTP/1.1 200 OK\r\nX-Pad: a\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Pad: b\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 404 OK\r\nX-Pad: a\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Pad: \r\nContent-Length: 3\r\n\r\nok!",
    ]
    assert len({len(a) for a in same_size}) == 1
    order = [0, 0, 0, 1, 2, 3, 0, 1, 1, 1, 2, 3, 0]
    origin = await scripted(lambda c, r, h, b: [same_size[order[r]]])
    memo = await make_pool(response_head_memo_learn_one_in=1)
    reference = await make_pool(response_head_memo_entries=0)
    got = await run(memo, origin.url, len(order))
    origin_again = await scripted(lambda c, r, h, b: [same_size[order[r]]])
    want = await run(reference, origin_again.url, len(order))
    assert got == want
    assert [g[4] for g in got] == [b"ok!" if n == 3 else b"ok" for n in order]
    assert memo.known_heads.replayed >= 3  # 0's third answer and later, 1's later ones


async def test_one_whole_answer_in_learn_one_in_is_filed(scripted, make_pool) -> None:
    """With one in three filed, the 3rd answer files the head, the 6th keeps its parse, and
    the 7th on are replayed."""
    origin = await scripted(lambda c, r, h, b: [KNOWN + b"0123456789"])
    pool = await make_pool(response_head_memo_learn_one_in=3)
    for n in range(1, 10):
        assert (await outcome(pool, origin.url))[4] == b"0123456789"
        assert bool(pool.known_heads.by_size) is (n >= 3), n
        assert bool(pool.known_heads.known()) is (n >= 6), n
    assert pool.known_heads.replayed == 3


async def test_only_whole_answers_count_towards_learn_one_in(scripted, make_pool) -> None:
    """A first read that holds part of an answer (part of its head here) is no answer offered:
    with one in two offered, the whole ones after it file the head at the 2nd and keep its
    parse at the 4th, and the 5th is the first replayed."""
    split: list[Step] = [KNOWN[:20], 0.02, KNOWN[20:] + b"0123456789"]
    origin = await scripted(lambda c, r, h, b: split if r == 0 else [KNOWN + b"0123456789"])
    pool = await make_pool(response_head_memo_learn_one_in=2)
    for n in range(5):
        assert (await outcome(pool, origin.url))[4] == b"0123456789"
        assert bool(pool.known_heads.known()) is (n == 4), n
    assert pool.known_heads.replayed == 0
    assert (await outcome(pool, origin.url))[4] == b"0123456789"
    assert pool.known_heads.replayed == 1


async def test_a_memo_of_zero_entries_keeps_nothing(scripted, make_pool) -> None:
    origin = await scripted(lambda c, r, h, b: [KNOWN + b"0123456789"])
    pool = await make_pool(response_head_memo_entries=0)
    await run(pool, origin.url, 3)
    assert not pool.known_heads.by_size and pool.known_heads.replayed == 0


def test_the_example_config_has_the_defaults() -> None:
    example = load("config/edgeproxy.example.toml").origin
    assert example.response_head_memo_entries == OriginConfig().response_head_memo_entries == 512
    assert example.response_head_memo_max_bytes == OriginConfig().response_head_memo_max_bytes
    assert example.response_head_memo_learn_one_in == OriginConfig().response_head_memo_learn_one_in


async def test_a_node_counts_the_answers_it_took_from_known_heads(scripted, tmp_path) -> None:
    """A running node (`edgeproxy serve`) relays the same pass-through answer six times: the
    first two are parsed (filed, then kept), the rest are taken from the known heads, and
    /metrics counts them."""
    answer = (
        b"HTTP/1.1 200 OK\r\nDate: Mon, 07 Dec 2026 18:00:00 GMT\r\n"
        b"Cache-Control: no-store\r\nContent-Length: 5\r\n\r\nhello"
    )
    origin = await scripted(lambda c, r, h, b: [answer])
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n\n'
        f'[[sites]]\nname = "a"\nhosts = ["a.test"]\norigin = "{origin.url}"\n\n'
        "[origin]\nresponse_head_memo_learn_one_in = 1\n"
    )
    node = Node(["--config", str(cfg), "--workers", "1"])
    await node.start()
    try:
        assert await metric(node, "edgeproxy_origin_heads_replayed") == 0
        async with aiohttp.ClientSession() as s:
            for _ in range(6):
                async with s.get(node.url + "/x", headers={"Host": "a.test"}) as r:
                    assert (r.status, await r.read()) == (200, b"hello")
                    assert r.headers["Cache-Control"] == "no-store"
        assert len(origin.heads) == 6  # every one went to the origin

        async def counted() -> bool:
            return await metric(node, "edgeproxy_origin_heads_replayed") >= 3

        await eventually(counted, what="answers taken from known heads")
        assert await metric(node, "edgeproxy_origin_heads_replayed") <= 4
    finally:
        await node.stop()
