"""Issue 18: a memo hit is logged without a RequestCtx (`record_hit`: plain values, the entry's
fields worked out once per entry, User-Agent and Referer read from a strict head's field lines
without its header list), and its line must be the very line the slow path (`record`, a
RequestCtx turned into an AccessRecord) writes for the same request, in both forms, whatever
the client sent: HEAD, HTTP/1.0, TLS, IPv6 clients, quotes, backslashes, `%` and control bytes
in the user agent, referer and target, request ids made, kept, absent or unusual, entries
without a host."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from proxy.front.exchange import EMPTY_BODY, Request
from proxy.front.request_id import RequestIds
from proxy.metrics import Result
from proxy.node.accesslog import AccessLog
from proxy.rfc.target import canonical_target


class _Stored(SimpleNamespace):
    """A stored entry's stand-in: weakly referable and hashed by identity, as `Entry` is."""

    __hash__ = object.__hash__


def _entry(target: object, ctype: bytes | None, variant: tuple[str, ...]) -> _Stored:
    return _Stored(
        target=target,
        primary=(target.authority, target.raw_path_query),  # type: ignore[attr-defined]
        variant=variant,
        headers=((b"Content-Type", ctype),) if ctype is not None else (),
    )


def _ctx(request: Request, entry: _Stored, site: int, status: int, nbytes: int) -> object:
    """What the slow path reads for a hit (the fields `record` takes from a RequestCtx)."""
    return SimpleNamespace(
        request=request,
        key=(entry.primary, entry.variant),
        entry=entry,
        outcome=None,
        content_type=b"",
        site_index=site,
        target=entry.target,
        method=request.method,
        status=status,
        result=Result.HIT,
        bytes_sent=nbytes,
        origin_s=0.0,
        blocked_id="",
        blocked_type="",
        no_store=None,
    )


TARGETS = [
    (b"/bytes/1024", b"127.0.0.1:8080"),
    (b"/p%25s?q=%25d&r=%25%25", b"a.test"),  # `%` in the template's fixed part
    (b"/caf%C3%A9/?x=%22y%22", b"xn--caf-dma.test"),
    (b"/a'b(c)*!$&;=:@~", b"[::1]:8443"),
    (b"/", b"A.Test:80"),
]
AGENTS = [
    b"",
    b"wrk",
    b'curl/8 "quoted" \\ back',
    b"%s %d %% %r",
    b"\x01evil\x7f\n1.2.3.4",
    b"caf\xe9",
]
REFERERS = [b"", b"http://r/?a=%s", b'x"y']
CLIENTS = ["127.0.0.1", "::1", "2001:db8::1%eth0", ""]
CTYPES = [b"text/html", b'text/plain; charset="utf-8"', b"", None]
VARIANTS = [(), ("gzip",), ('a"b', "%d")]
DURATIONS = [0.0, 0.0000004, 0.0123456, 12.3456789, 1234.5]
TIMES = [1_700_000_000.25, 1_700_000_000.9999, 1_800_000_123.0004]


def _request(
    method: str,
    raw: bytes,
    host: bytes,
    version: str,
    tls: bool,
    client: str,
    at: float,
    id_field: bytes,
    ua: bytes,
    referer: bytes,
    strict: bool,
) -> Request:
    headers = [(b"Host", host)]
    if ua:
        headers.append((b"User-Agent", ua))
    headers.append((b"Accept", b"*/*"))
    if referer:
        headers.append((b"Referer", referer))
    if strict:  # as the strict head keeps it: field lines, the list cut out only when read
        lines = b"".join(b"\r\n" + n + b": " + v for n, v in headers)
        return Request(
            method, raw, version, None, True, False, None, EMPTY_BODY, client, at, host,
            False, tls, id_field, lines,
        )  # fmt: skip
    return Request(
        method, raw, version, headers, True, False, None, EMPTY_BODY, client, at, host, False,
        tls, id_field,
    )  # fmt: skip


def _lines(log: AccessLog) -> list[str]:
    log.close()
    return Path(log.dest).read_text(encoding="utf-8", errors="surrogateescape").splitlines()


@pytest.mark.parametrize("text", [False, True], ids=["json", "text"])
async def test_a_hit_line_is_the_slow_paths_line(tmp_path: Path, text: bool) -> None:
    """Hundreds of combinations, each written by `record_hit` and by `record`, in turn, to
    two logs: line for line the same. Entries repeat, so most lines reuse the fields worked
    out for an earlier hit on their entry."""
    rng = random.Random(18)
    ids = RequestIds("X-Request-Id")
    fast = AccessLog(str(tmp_path / "fast.log"), 1.0, ["site-a"], 3, text=text, request_ids=ids)
    slow = AccessLog(str(tmp_path / "slow.log"), 1.0, ["site-a"], 3, text=text, request_ids=ids)
    entries = {
        (raw, host, ctype, variant): _entry(canonical_target(raw, host), ctype, variant)
        for (raw, host), ctype, variant in itertools.product(TARGETS, CTYPES, VARIANTS)
    }
    # No canonical target holds these bytes; an entry's fixed fields are escaped all the same.
    odd = SimpleNamespace(authority='h"x\\y%d', raw_path_query=b'/q"\\\x01\xff%s\n')
    for ctype, variant in itertools.product(CTYPES, VARIANTS):
        entries[b"odd", b"odd", ctype, variant] = _entry(odd, ctype, variant)
    sites: dict[int, int] = {}  # an entry's site is its own (5: none of the log's)
    id_fields = [ids.next_field(), ids.field_for(b"abc-1:2/3=@+_."), ids.next_field()]
    combos = list(
        itertools.product(["GET", "HEAD"], ["1.1", "1.0"], [False, True], CLIENTS, AGENTS, REFERERS)
    )
    for method, version, tls, client, ua, referer in rng.sample(combos, 300):
        (raw, host), ctype, variant = (
            rng.choice([*TARGETS, (b"odd", b"odd")]),
            rng.choice(CTYPES),
            rng.choice(VARIANTS),
        )
        entry = entries[raw, host, ctype, variant]
        strict = rng.random() < 0.5 and all(32 <= b < 127 for b in ua + referer)
        request = _request(
            method, raw, host, version, tls, client, rng.choice(TIMES), rng.choice(id_fields),
            ua, referer, strict,
        )  # fmt: skip
        status, site = (
            rng.choice([200, 203, 404, 304]),
            sites.setdefault(id(entry), rng.choice([0, 0, 5])),
        )
        nbytes = 0 if method == "HEAD" else 1024
        elapsed = rng.choice(DURATIONS)
        fast.record_hit(request, entry, site, status, nbytes, elapsed)  # type: ignore[arg-type]
        slow.record(_ctx(request, entry, site, status, nbytes), elapsed)  # type: ignore[arg-type]
    got, want = _lines(fast), _lines(slow)
    assert len(got) == 300 and got == want
    if not text:
        assert all(json.loads(line)["result"] == "hit" for line in got)


@pytest.mark.parametrize("text", [False, True], ids=["json", "text"])
async def test_unusual_ids_and_entries_still_give_the_slow_paths_line(
    tmp_path: Path, text: bool
) -> None:
    """The ways around the template: no request ids at all, an id field the log's ids did not
    make (another name), an empty id field, an entry whose target has no host (the Host sent
    stands in), and clients sending many user agents."""
    cases: list[tuple[RequestIds | None, bytes]] = [
        (None, b""),
        (None, b"X-Request-Id: abc-1\r\n"),
        (RequestIds("X-Id"), b"X-Request-Id: abc-1\r\n"),
        (RequestIds("X-Id"), b""),
        (RequestIds("X-Id"), b"X-Id: has space\r\n"),
    ]
    hostless = _entry(SimpleNamespace(authority="", raw_path_query=b"/h"), b"text/html", ())
    plain = _entry(canonical_target(b"/p", b"a.test"), b"text/html", ())
    for n, (ids, id_field) in enumerate(cases):
        fast = AccessLog(str(tmp_path / f"f{n}.log"), 1.0, ["s"], 0, text=text, request_ids=ids)
        slow = AccessLog(str(tmp_path / f"s{n}.log"), 1.0, ["s"], 0, text=text, request_ids=ids)
        for i in range(1100):
            entry = hostless if i % 7 == 0 else plain
            ua = b"agent/%d" % i
            request = _request(
                "GET", b"/p", b"sent.host", "1.1", False, f"10.0.0.{i % 3}",
                1_700_000_000.5, id_field, ua, b"", i % 2 == 0,
            )  # fmt: skip
            fast.record_hit(request, entry, 0, 200, 10, 0.001)  # type: ignore[arg-type]
            slow.record(_ctx(request, entry, 0, 200, 10), 0.001)  # type: ignore[arg-type]
        assert _lines(fast) == _lines(slow)


async def test_durations_and_times_are_written_as_before(tmp_path: Path) -> None:
    """A hit row's duration is `round(elapsed_ms, 3)` (half-µs ties included: a cheaper
    `round(µs) / 1000` was tried and wrote 0.0 for 0.0005 ms) and its time's milliseconds
    are `int(fraction * 1000)`, now looked up in a table instead of an f-string's `:03d`:
    the same numbers as ever."""
    rng = random.Random(7)
    durations = [*DURATIONS, 0.0000005, 0.0000015, 0.0010005, 1.0, 86_400.0]
    durations += [rng.random() * rng.choice([1e-5, 1e-3, 1.0, 100.0]) for _ in range(3000)]
    times = [*TIMES, 1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0005]
    times += [1_700_000_000 + rng.random() * 86_400 for _ in range(3000)]
    log = AccessLog(str(tmp_path / "a.log"), 1.0, ["s"], 0)
    target = canonical_target(b"/d", b"a.test")
    entry = _entry(target, b"text/plain", ())
    for at, elapsed in zip(times, durations, strict=False):
        request = _request(
            "GET", b"/d", b"a.test", "1.1", False, "10.0.0.1", at, b"", b"", b"", True
        )
        log.record_hit(request, entry, 0, 200, 1, elapsed)  # type: ignore[arg-type]
    got = [json.loads(line) for line in _lines(log)]
    pairs = list(zip(times, durations, strict=False))
    assert [r["duration_ms"] for r in got] == [round(e * 1000.0, 3) for _, e in pairs]
    second = [int(at) for at, _ in pairs]
    assert [r["time"][-5:] for r in got] == [
        f".{int((at - s) * 1000):03d}Z" for (at, _), s in zip(pairs, second, strict=True)
    ]


async def test_an_entrys_fields_go_with_it(tmp_path: Path) -> None:
    """The fields worked out once per entry are held by the entry's id only while it lives:
    an evicted entry takes them along, and a new entry at the same address gets its own."""
    import gc

    log = AccessLog(str(tmp_path / "a.log"), 1.0, ["s"], 0)
    request = _request(
        "GET", b"/a", b"a.test", "1.1", False, "10.0.0.1", TIMES[0], b"", b"", b"", True
    )
    for n in range(50):
        entry = _entry(canonical_target(b"/e%d" % n, b"a.test"), b"text/plain", ())
        log.record_hit(request, entry, 0, 200, 1, 0.001)  # type: ignore[arg-type]
    del entry
    gc.collect()
    assert not log._per_entry
    got = [json.loads(line)["target"] for line in _lines(log)]
    assert got == [f"/e{n}" for n in range(50)]


async def test_client_fields_are_kept_by_the_field_lines_within_their_bound(tmp_path: Path) -> None:
    """User-Agent and Referer are looked up by a strict head's field lines: lines sent again
    give their own values (never a neighbour's), lines beyond the bound empty the table
    rather than grow it, and a head llhttp parsed (no field lines) is read as it is."""
    log = AccessLog(str(tmp_path / "a.log"), 1.0, ["s"], 0, client_fields_max_entries=3)
    entry = _entry(canonical_target(b"/c", b"a.test"), b"text/plain", ())
    sent = []
    for i in range(40):
        ua, referer = b"agent/%d" % (i % 5), b"http://r/%d" % (i % 7)
        request = _request(
            "GET", b"/c", b"a.test", "1.1", False, "10.0.0.1", TIMES[0], b"", ua, referer,
            i % 4 != 3,
        )  # fmt: skip
        log.record_hit(request, entry, 0, 200, 1, 0.001)  # type: ignore[arg-type]
        sent.append((ua.decode(), referer.decode()))
        assert len(log._clients) <= 3
    got = [json.loads(line) for line in _lines(log)]
    assert [(r["user_agent"], r["referer"]) for r in got] == sent
