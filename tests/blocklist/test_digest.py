"""The identity digest of content-coded bodies (issue 10: coded copies of listed objects)."""

from __future__ import annotations

import gzip
import hashlib
import random
import sys
import zlib
from collections.abc import Callable

import brotli
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.blocklist.digest import (
    STEP_BYTES,
    BadCoding,
    DecodeFailure,
    DecodeLimitExceeded,
    DecodeLimits,
    IdentityHasher,
    UnknownCoding,
    content_codings,
    identity_digest,
)
from proxy.config import BlocklistConfig, Config, ConfigError, load

if sys.version_info >= (3, 14):
    from compression.zstd import ZstdCompressor
else:
    from backports.zstd import ZstdCompressor

_rng = random.Random(10)
# Compressible but not trivial: words plus some noise, so every codec emits several blocks.
BODY = b"".join(
    _rng.choice([b"manga ", b"chapter ", b"one ", b"\x00\xff", bytes([_rng.randrange(256)])])
    for _ in range(20000)
)
SHA = hashlib.sha256(BODY).digest()
GIB = 1 << 30


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


def zstd(data: bytes) -> bytes:
    c = ZstdCompressor()
    return c.compress(data) + c.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # RFC 9110's deflate: the zlib format
    "deflate-raw": raw_deflate,  # what some servers send, and browsers accept
    "br": brotli.compress,
    "zstd": zstd,
}


def encode(name: str, data: bytes) -> tuple[str, bytes]:
    """(Content-Encoding value, coded body)."""
    return ("deflate" if name == "deflate-raw" else name), ENCODERS[name](data)


def feed(content_encoding: list[str], data: bytes, chunk: int = 8192, **limits: int | float):
    h = IdentityHasher(content_encoding, DecodeLimits(**limits))  # type: ignore[arg-type]
    for i in range(0, len(data), chunk):
        h.update(data[i : i + chunk])
    return h.result()


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_each_coding_hashes_the_identity_body(name: str) -> None:
    ce, coded = encode(name, BODY)
    res = identity_digest(coded, [ce])
    assert res.failure is None
    assert res.identity == SHA and res.decoded_bytes == len(BODY)
    assert res.raw == sha(coded) and res.encoded_bytes == len(coded)
    assert res.digests == (SHA, sha(coded))  # identity first, as-received second
    assert res.refusal() is None


@pytest.mark.parametrize(
    "field",
    [
        ["GZIP"],
        ["Gzip"],
        ["  gzip\t"],
        ["identity, gzip"],
        ["gzip, identity"],
        ["gzip,"],
        [", gzip"],
        ["", "gzip"],
        [b"gzip"],
        [b"X-GZIP"],
        ["identity", "gzip"],
    ],
)
def test_field_spellings_name_the_same_coding(field: list[str | bytes]) -> None:
    assert content_codings(field) == ("gzip",)
    assert identity_digest(gzip.compress(BODY), field).identity == SHA


@pytest.mark.parametrize(
    "applied",
    [
        ("gzip", "br"),
        ("br", "gzip"),
        ("deflate", "zstd"),
        ("zstd", "deflate-raw"),
        ("gzip", "gzip"),
        ("br", "zstd", "gzip"),
    ],
)
def test_stacked_codings_are_removed_in_reverse(applied: tuple[str, ...]) -> None:
    coded, names = BODY, []
    for name in applied:
        ce, coded = encode(name, coded)
        names.append(ce)
    one_line = feed([", ".join(names)], coded, chunk=1000)
    several_lines = feed(names, coded, chunk=1000)
    assert one_line.identity == several_lines.identity == SHA
    assert one_line.codings == tuple(names)


def test_identity_is_one_hash_and_one_digest() -> None:
    for field in ([], ["identity"], ["IDENTITY, identity"]):
        res = feed(field, BODY)
        assert res.identity == res.raw == SHA and res.digests == (SHA,)
        assert res.decoded_bytes == res.encoded_bytes == len(BODY)
        assert identity_digest(BODY, field) == res


@pytest.mark.parametrize("field", [["gzip"], ["br, zstd"], ["compress"], []])
def test_empty_body_is_empty_whatever_its_coding(field: list[str]) -> None:
    res = IdentityHasher(field).result()
    assert res.failure is None and res.identity == sha(b"")


def test_multi_member_gzip_lists_the_whole_and_the_first_member() -> None:
    # RFC 1952 §2.2: members concatenate. Firefox and curl decode all of them; some clients stop
    # after the first, so a listed object sent as its first member is caught too.
    second = b"appendix " * 100
    coded = gzip.compress(BODY) + gzip.compress(second) + gzip.compress(b"")
    res = feed(["gzip"], coded, chunk=777)
    assert res.failure is None
    assert res.identity == sha(BODY + second) and res.alternates == (SHA,)
    assert set(res.digests) == {sha(BODY + second), SHA, sha(coded)}


def test_multi_frame_zstd_decodes_every_frame() -> None:
    coded = zstd(BODY[:5000]) + zstd(b"") + zstd(BODY[5000:])
    assert feed(["zstd"], coded, chunk=333).identity == SHA


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("cut", [1, 2, 0.5, -1])
def test_truncated_streams_are_bad_coding(name: str, cut: float) -> None:
    ce, coded = encode(name, BODY)
    end = int(len(coded) * cut) if isinstance(cut, float) else cut % len(coded)
    res = feed([ce], coded[:end], chunk=100)
    assert res.failure is DecodeFailure.BAD_CODING and res.identity is None
    assert res.digests == (sha(coded[:end]),)
    assert res.refusal() is res.refusal("raw-only") is DecodeFailure.BAD_CODING
    assert "truncated" in res.detail or ce in res.detail


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("trailer", [b"\x00", b"x", b"\x1f\x8bjunk", b"\x00" * 100])
def test_bytes_after_the_coded_stream_are_bad_coding(name: str, trailer: bytes) -> None:
    ce, coded = encode(name, BODY)
    res = feed([ce], coded + trailer, chunk=4096)
    assert res.failure is DecodeFailure.BAD_CODING, res
    h = IdentityHasher([ce])  # the trailer in a later chunk than the stream's end
    h.update(coded)
    h.update(trailer)
    assert h.result().failure is DecodeFailure.BAD_CODING


def test_many_members_in_one_chunk() -> None:
    coded = gzip.compress(b"") * 20000 + gzip.compress(BODY)
    res = identity_digest(coded, ["gzip"])
    assert res.identity == SHA and res.alternates == (sha(b""),)
    assert identity_digest(zstd(b"") * 20000 + zstd(BODY), ["zstd"]).identity == SHA


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("garbage", [b"\xff" * 64, b"not coded at all, plain text", b"\x00" * 9])
def test_corrupt_streams_are_bad_coding(name: str, garbage: bytes) -> None:
    ce, _ = encode(name, BODY)
    res = identity_digest(garbage, [ce])
    assert res.failure is DecodeFailure.BAD_CODING
    with pytest.raises(BadCoding):
        h = IdentityHasher([ce])
        h.update(garbage)
        h.digest()


@pytest.mark.parametrize("name", ["gzip", "deflate", "zstd"])  # the formats with a checksum
def test_a_flipped_byte_is_bad_coding(name: str) -> None:
    ce, coded = encode(name, BODY)
    if name == "zstd":
        c = ZstdCompressor(options={_checksum_flag(): 1})
        coded = c.compress(BODY) + c.flush()
    broken = bytearray(coded)
    broken[len(broken) // 2] ^= 0x55
    assert feed([ce], bytes(broken)).failure is DecodeFailure.BAD_CODING


def _checksum_flag() -> object:
    if sys.version_info >= (3, 14):
        from compression.zstd import CompressionParameter
    else:
        from backports.zstd import CompressionParameter
    return CompressionParameter.checksum_flag


# Bombs: 1 GiB of zeros. Segments end with a full flush, which resets the compressor's state,
# so one segment repeated is a valid stream: the bombs cost milliseconds to build.
def _zlib_bomb(wbits: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    head = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    segment = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    return head + segment * (GIB // len(zeros) - 1) + c.flush()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    zeros = bytes(1 << 20)
    c = brotli.Compressor(quality=1)
    br = b"".join(c.process(zeros) for _ in range(GIB // len(zeros))) + c.finish()
    z = zstd(zeros) * (GIB // len(zeros))  # concatenated frames
    return {
        "gzip": _zlib_bomb(31),
        "deflate": _zlib_bomb(15),
        "deflate-raw": _zlib_bomb(-15),
        "br": br,
        "zstd": z,
    }


@pytest.mark.parametrize("name", ["gzip", "deflate", "deflate-raw", "br", "zstd"])
def test_bombs_stop_at_the_decoded_size_limit(name: str, bombs: dict[str, bytes]) -> None:
    ce = "deflate" if name == "deflate-raw" else name
    coded = bombs[name]
    limit = 4 << 20
    h = IdentityHasher([ce], DecodeLimits(max_bytes=limit, max_ratio=1e9))
    fed = 0
    for i in range(0, len(coded), 64):
        h.update(coded[i : i + 64])
        fed += 64
        if h.failure is not None:
            break
    res = h.result()
    assert res.failure is DecodeFailure.TOO_LARGE and res.identity is None
    assert limit < res.decoded_bytes <= limit + 2 * STEP_BYTES
    assert fed < len(coded) // 10  # the caller could stop reading the body early, too
    assert res.refusal("raw-only") is DecodeFailure.TOO_LARGE
    with pytest.raises(DecodeLimitExceeded):
        h.digest()


@pytest.mark.parametrize("name", ["gzip", "deflate-raw", "br", "zstd"])
def test_bombs_stop_at_the_ratio_limit(name: str, bombs: dict[str, bytes]) -> None:
    ce = "deflate" if name == "deflate-raw" else name
    res = identity_digest(bombs[name], [ce])  # defaults: ratio 100 past 1 MiB of output
    assert res.failure is DecodeFailure.RATIO
    assert res.decoded_bytes <= max(1 << 20, 100 * res.encoded_bytes) + 2 * STEP_BYTES
    assert res.decoded_bytes < 256 << 20


def test_one_step_never_inflates_past_the_step_bound(bombs: dict[str, bytes]) -> None:
    # With a 1-byte limit the first step already passes it: the step's size is what one
    # decompressor call produced from a 1 MiB slice of a bomb.
    for name, coded in bombs.items():
        ce = "deflate" if name == "deflate-raw" else name
        res = identity_digest(coded[: 1 << 20], [ce], DecodeLimits(max_bytes=1))
        assert res.failure is DecodeFailure.TOO_LARGE
        assert res.decoded_bytes <= 2 * STEP_BYTES, name


def test_a_bomb_inside_a_stack_stops_at_its_own_layer(bombs: dict[str, bytes]) -> None:
    coded = brotli.compress(bombs["gzip"], quality=1)  # Content-Encoding: gzip, br
    res = feed(["gzip, br"], coded, chunk=4096, max_bytes=2 << 20, max_ratio=1e9)
    assert res.failure is DecodeFailure.TOO_LARGE and "gzip" in res.detail
    double = gzip.compress(bombs["gzip"][: 4 << 20])  # gzip, gzip: ratios multiply
    res = feed(["gzip", "gzip"], double, chunk=4096)
    assert res.failure is DecodeFailure.RATIO


def test_small_bodies_within_the_grace_are_not_ratio_limited() -> None:
    # 512 KiB of spaces compress ~1000:1; below the grace no ratio applies.
    body = b" " * (512 << 10)
    assert feed(["gzip"], gzip.compress(body)).identity == sha(body)
    res = feed(["gzip"], gzip.compress(body), ratio_grace_bytes=0)
    assert res.failure is DecodeFailure.RATIO


@pytest.mark.parametrize(
    "field", [["compress"], ["x-compress"], ["aes128gcm"], ["gzip, exi"], ["gz ip"], ["br;q=1"]]
)
def test_unknown_codings_are_refused_unless_raw_only(field: list[str]) -> None:
    res = feed(field, BODY)
    assert res.failure is DecodeFailure.UNKNOWN_CODING and res.identity is None
    assert res.digests == (SHA,)  # the as-received bytes are still checked
    assert res.refusal() is res.refusal("refuse") is DecodeFailure.UNKNOWN_CODING
    assert res.refusal("raw-only") is None
    h = IdentityHasher(field)
    h.update(BODY)
    assert h.failure is DecodeFailure.UNKNOWN_CODING  # known before the first byte
    with pytest.raises(UnknownCoding):
        h.digest()
    assert h.raw_digest() == SHA


def test_too_many_stacked_codings_are_refused_even_raw_only() -> None:
    coded = BODY
    for _ in range(5):
        coded = gzip.compress(coded)
    res = feed(["gzip"] * 5, coded)
    assert res.failure is DecodeFailure.TOO_MANY_CODINGS
    assert res.refusal("raw-only") is DecodeFailure.TOO_MANY_CODINGS
    assert feed(["gzip"] * 5, coded, max_codings_count=5).identity == SHA


def _small_streams() -> list[tuple[list[str], bytes, bytes]]:
    body = BODY[:3000]
    out = [([encode(n, body)[0]], encode(n, body)[1], body) for n in sorted(ENCODERS)]
    out.append((["gzip"], gzip.compress(body[:1000]) + gzip.compress(body[1000:]), body))
    out.append((["gzip", "br"], brotli.compress(gzip.compress(body)), body))
    out.append((["zstd, deflate"], raw_deflate(zstd(body)), body))
    return out


@pytest.mark.parametrize("case", range(len(_small_streams())))
def test_every_two_way_split_gives_the_same_digest(case: int) -> None:
    field, coded, body = _small_streams()[case]
    for i in range(len(coded) + 1):
        h = IdentityHasher(field)
        h.update(coded[:i])
        h.update(coded[i:])
        assert h.digest() == sha(body), i


@settings(max_examples=200, deadline=None)
@given(case=st.integers(0, len(_small_streams()) - 1), cuts=st.lists(st.integers(0, 10**6)))
def test_any_chunking_gives_the_same_digest(case: int, cuts: list[int]) -> None:
    field, coded, body = _small_streams()[case]
    points = sorted({c % (len(coded) + 1) for c in cuts})
    h = IdentityHasher(field)
    start = 0
    for p in [*points, len(coded)]:
        h.update(coded[start:p])
        start = p
    res = h.result()
    assert res.identity == sha(body) and res.raw == sha(coded)


@pytest.mark.parametrize("coding", ["br", "gzip", "deflate", "zstd"])
def test_large_bodies_fed_in_chunks_decode_whole(coding: str) -> None:
    """Bodies whose decoded size passes the decoder's output step, fed in chunks: brotli
    still held output past its last `output_buffer_limit` when its input ran out, and such
    a body was refused as "truncated" (found by the large-body spool tests)."""
    import random

    body = random.Random(3).randbytes(700 << 10)
    coded = {
        "br": brotli.compress,
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "zstd": zstd,
    }[coding](body)
    for chunk in (1 << 10, 64 << 10, 100_000, len(coded)):
        h = IdentityHasher([coding])
        for i in range(0, len(coded), chunk):
            h.update(coded[i : i + chunk])
        res = h.result()
        assert res.failure is None and res.identity == sha(body), chunk


def test_limits_come_from_the_blocklist_config(tmp_path) -> None:
    cfg = BlocklistConfig(decode_max_bytes=10, decode_max_ratio=2.5, decode_ratio_grace_bytes=3)
    limits = DecodeLimits.from_config(cfg)
    assert (limits.max_bytes, limits.max_ratio, limits.ratio_grace_bytes) == (10, 2.5, 3)
    assert DecodeLimits.from_config(BlocklistConfig()) == DecodeLimits()
    example = load("config/edgeproxy.example.toml").blocklist
    assert DecodeLimits.from_config(example) == DecodeLimits()
    assert example.unknown_coding_policy == "refuse"


@pytest.mark.parametrize(
    "line",
    [
        "decode_max_bytes = 0",
        "decode_max_ratio = 0.5",
        "decode_ratio_grace_bytes = -1",
        "decode_max_codings_count = 0",
        'unknown_coding_policy = "deliver"',
    ],
)
def test_bad_decode_settings_are_refused_with_their_field(tmp_path, line: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        '[[sites]]\nname = "s"\nhosts = ["a.example"]\norigin = "http://127.0.0.1:9"\n'
        f"[blocklist]\n{line}\n"
    )
    with pytest.raises(ConfigError) as e:
        load(path)
    assert line.split(" ")[0] in str(e.value) and ":6" in str(e.value)
    assert msgspec.convert({}, Config).blocklist.decode_max_bytes == 256 << 20
