"""The digest a `sha256` entry lists: SHA-256 of a body's identity representation.

A `sha256` entry names an object, not its transfer dress: the same file sent `gzip`-, `br`- or
`zstd`-coded must match too, or an origin defeats the list by compressing (RFC 9110 §8.4). So
the content codings a response declares are removed, in the reverse of the order they were
applied, and what comes out is hashed. Transfer-Encoding is the front's business and never
reaches here: callers feed the message body after de-chunking.

Decoding is bounded because a coded body is attacker-controlled: every decompressor call is
asked for at most `STEP_BYTES` of output (zlib's `max_length`, brotli's `output_buffer_limit`,
zstd's `max_length`; brotli's buffer stops growing once it passes the limit, so a brotli step
may reach twice that), and the running output is checked against the decoded-size and ratio
limits after each step, so a 1 GiB bomb stops after `decode_max_bytes` (plus one step) of
work and never holds more than one step in memory. Nothing is proven about a body that could not
be decoded, so every failure is an outcome the edge must act on (see `DigestResult.refusal`):
it cannot show the body is not listed, and fails closed.

Why not `zstandard`: its `decompressobj().decompress()` returns all the output of one input
chunk at once (no output bound), so a few KiB of input can inflate to gigabytes in one call.
`compression.zstd` (Python 3.14) and its backport `backports.zstd` take `max_length`, like zlib.

Identity bodies (no coding, the hot path of every miss) cost one SHA-256 pass, as before: the
raw digest is the identity digest.
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import brotli
import msgspec

if sys.version_info >= (3, 14):
    from compression.zstd import ZstdDecompressor, ZstdError
else:
    from backports.zstd import ZstdDecompressor, ZstdError


class DecodeSettings(Protocol):
    """The `blocklist.decode_*` settings (config.BlocklistConfig), as a shape: the cache tier
    imports this module, and the config imports the cache's URL parsing."""

    decode_max_bytes: int
    decode_max_ratio: float
    decode_ratio_grace_bytes: int
    decode_max_codings_count: int


__all__ = [
    "STEP_BYTES",
    "BadCoding",
    "DecodeError",
    "DecodeFailure",
    "DecodeLimitExceeded",
    "DecodeLimits",
    "DigestResult",
    "IdentityHasher",
    "UNJUDGED_DIGEST",
    "UnknownCoding",
    "content_codings",
    "identity_digest",
    "stored_digests",
]

# The most output one decompressor call may produce; also the overshoot past a limit.
STEP_BYTES = 64 << 10

_ALIASES = {"x-gzip": "gzip"}  # RFC 9110 §8.4.1.3: a recipient SHOULD treat x-gzip as gzip
KNOWN_CODINGS = frozenset({"gzip", "deflate", "br", "zstd"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


UNJUDGED_DIGEST = bytes(32)
"""The digest a stored body carries when its content coding could not be removed (an unknown
coding) while no body digest was listed, so there was nothing it could match (issue 16). All
such bodies share it, so one digest purge finds them all once digests are listed; no body's
real sha256 is all zeros."""


class DecodeFailure(StrEnum):
    """Why a body's identity digest is unknown. Values are metric labels and log words."""

    UNKNOWN_CODING = "unknown-coding"  # a coding this edge cannot remove
    TOO_MANY_CODINGS = "too-many-codings"  # more stacked codings than decode_max_codings_count
    BAD_CODING = "bad-coding"  # corrupt, truncated, or trailing bytes after the coded stream
    TOO_LARGE = "decoded-too-large"  # decoded output passed decode_max_bytes
    RATIO = "ratio-exceeded"  # decoded/encoded passed decode_max_ratio


class DecodeError(Exception):
    """Raised by `IdentityHasher.digest()` when there is no identity digest."""

    def __init__(self, failure: DecodeFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


class UnknownCoding(DecodeError):
    """A Content-Encoding this edge cannot remove (or too many of them stacked)."""


class BadCoding(DecodeError):
    """The body is not a valid stream of its declared coding."""


class DecodeLimitExceeded(DecodeError):
    """Decoding stopped at the decoded-size or ratio limit (a decompression bomb, or a body the
    operator's limits do not allow)."""


_ERRORS: dict[DecodeFailure, type[DecodeError]] = {
    DecodeFailure.UNKNOWN_CODING: UnknownCoding,
    DecodeFailure.TOO_MANY_CODINGS: UnknownCoding,
    DecodeFailure.BAD_CODING: BadCoding,
    DecodeFailure.TOO_LARGE: DecodeLimitExceeded,
    DecodeFailure.RATIO: DecodeLimitExceeded,
}


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on decoding one body (`blocklist.decode_*` in the config).

    The ratio limit applies only once the output passes `ratio_grace_bytes`: small bodies of
    repetitive text legitimately compress far beyond any sane ratio, and are cheap anyway.
    """

    max_bytes: int = 256 << 20
    max_ratio: float = 100.0
    ratio_grace_bytes: int = 1 << 20
    max_codings_count: int = 4

    @classmethod
    def from_config(cls, cfg: DecodeSettings) -> DecodeLimits:
        return cls(
            max_bytes=cfg.decode_max_bytes,
            max_ratio=cfg.decode_max_ratio,
            ratio_grace_bytes=cfg.decode_ratio_grace_bytes,
            max_codings_count=cfg.decode_max_codings_count,
        )


class DigestResult(msgspec.Struct, frozen=True, gc=False):
    """What is known about one body: always its raw digest; its identity digest if decodable.
    (A Struct, not a dataclass: built once per miss, and a frozen dataclass costs a microsecond.)

    `alternates` holds identity digests other clients may compute: a gzip body of several
    members (RFC 1952 §2.2) is decoded whole by Firefox and curl but only up to the end of the
    first member by some clients, so the first member's digest is listed too.
    """

    failure: DecodeFailure | None
    raw: bytes
    identity: bytes | None
    alternates: tuple[bytes, ...] = ()
    codings: tuple[str, ...] = ()
    encoded_bytes: int = 0
    decoded_bytes: int = 0
    detail: str = ""

    @property
    def digests(self) -> tuple[bytes, ...]:
        """Every digest to look up in the snapshot: identity first, then alternates, then the
        raw (as-received) bytes, since an entry may have been computed over a coded file."""
        out = [] if self.identity is None else [self.identity]
        for d in (*self.alternates, self.raw):
            if d not in out:
                out.append(d)
        return tuple(out)

    def refusal(self, unknown_coding_policy: str = "refuse") -> DecodeFailure | None:
        """The failure for which delivery must be refused (502, never stored), or None.

        Everything fails closed; `unknown_coding_policy = "raw-only"` lets an operator whose
        origins use a coding this edge cannot remove deliver such bodies checked by their raw
        digest alone. Limits and corrupt data are never waived: a client could not decode a
        corrupt body anyway, and a limit exists because decoding further is the attack.
        """
        if self.failure is None:
            return None
        if self.failure is DecodeFailure.UNKNOWN_CODING and unknown_coding_policy == "raw-only":
            return None
        return self.failure


def content_codings(values: Iterable[str | bytes]) -> tuple[str, ...]:
    """The codings named by Content-Encoding field lines, in the order they were applied.

    RFC 9110 §8.4: a comma-separated list, case-insensitive, over any number of field lines;
    empty list elements are ignored (§5.6.1); `identity` is a no-op; `x-gzip` is `gzip`.
    Names are returned lower-cased and unchecked; `IdentityHasher` decides what is known.
    """
    out: list[str] = []
    for value in values:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        for part in text.split(","):
            name = part.strip(" \t").lower()
            if name and name != "identity":
                out.append(_ALIASES.get(name, name))
    return tuple(out)


class _Bad(Exception):
    """Internal: a stage found its input invalid."""


class _Stage(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes | None]: ...

    def finish(self) -> Iterator[bytes | None]: ...


class _Zlib:
    """One zlib-family stream; gzip members may follow one another (RFC 1952 §2.2).

    `deflate` is RFC 1950 zlib in the spec, but servers send raw RFC 1951 deflate and browsers
    accept it, so the first two bytes decide: a valid zlib header means zlib, else raw. A body
    that passes the header check and is not valid zlib is refused, which fails closed.
    Yields None at the end of each gzip member so the last stage can record the digest there.
    """

    __slots__ = ("_d", "_gzip", "_pending", "_state")

    def __init__(self, coding: str) -> None:
        self._gzip = coding == "gzip"
        self._d: zlib._Decompress | None = zlib.decompressobj(31) if self._gzip else None
        self._pending = b""
        self._state = "start"  # "start" (no byte yet), "in" (mid-stream), "end" (stream done)

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        # A loop, not recursion: one chunk may hold thousands of (empty) gzip members.
        while data:
            if self._state == "end":
                if not self._gzip or (self._pending + data)[:2] not in (b"\x1f\x8b", b"\x1f"):
                    raise _Bad("data after the end of the coded stream")
                if len(self._pending) + len(data) < 2:
                    self._pending += data
                    return
                data, self._pending = self._pending + data, b""
                self._d = zlib.decompressobj(31)
                self._state = "start"
            if self._d is None:  # deflate: wait for two bytes to tell zlib from raw
                data = self._pending + data
                if len(data) < 2:
                    self._pending = data
                    return
                self._pending = b""
                cmf, flg = data[0], data[1]
                zlib_header = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
                self._d = zlib.decompressobj(15 if zlib_header else -15)
            self._state = "in"
            data = yield from self._inflate(self._d, data)

    def _inflate(self, d: zlib._Decompress, data: bytes) -> Generator[bytes | None, None, bytes]:
        """Decode until the input is used up or the stream ends; returns what follows its end."""
        try:
            while True:
                out = d.decompress(data, STEP_BYTES)
                if out:
                    yield out
                if d.eof:
                    self._state = "end"
                    yield None
                    return d.unused_data
                data = d.unconsumed_tail
                if not data and len(out) < STEP_BYTES:
                    return b""
        except zlib.error as e:
            raise _Bad(str(e)) from None

    def finish(self) -> Iterator[bytes | None]:
        if self._state == "in" or self._pending:
            raise _Bad("truncated stream")
        yield from ()


class _Brotli:
    """RFC 7932. brotli >= 1.2 bounds each `process` call's output (`output_buffer_limit`);
    while `can_accept_more_data()` is false it must be drained with empty input."""

    __slots__ = ("_d", "_fed")

    def __init__(self) -> None:
        self._d = brotli.Decompressor()
        self._fed = False

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        if not data:
            return
        d = self._d
        if self._fed and d.is_finished():
            raise _Bad("data after the end of the coded stream")
        self._fed = True
        try:
            out: bytes = d.process(data, output_buffer_limit=STEP_BYTES)
            while True:
                if out:
                    yield out
                if d.can_accept_more_data():
                    return
                out = d.process(b"", output_buffer_limit=STEP_BYTES)
        except brotli.error as e:
            raise _Bad(str(e) or "invalid brotli stream") from None

    def finish(self) -> Iterator[bytes | None]:
        """Output the decoder still holds: `can_accept_more_data()` turns true once the input
        is consumed, though output past the last `output_buffer_limit` may still be pending
        (a body fed in several chunks ended "truncated" before this drain)."""
        d = self._d
        if not self._fed:
            return
        try:
            while not d.is_finished():
                out: bytes = d.process(b"", output_buffer_limit=STEP_BYTES)
                if not out:
                    break
                yield out
        except brotli.error as e:
            raise _Bad(str(e) or "invalid brotli stream") from None
        if not d.is_finished():
            raise _Bad("truncated stream")


class _Zstd:
    """RFC 8878; frames may follow one another (§3.1), skippable frames decode to nothing."""

    __slots__ = ("_d", "_mid")

    def __init__(self) -> None:
        self._d = ZstdDecompressor()
        self._mid = False  # a frame has begun and not ended

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        if not data:
            return
        try:
            while True:
                if self._d.eof:
                    self._d = ZstdDecompressor()
                self._mid = True
                out = self._d.decompress(data, STEP_BYTES)
                data = b""
                if out:
                    yield out
                if self._d.eof:
                    self._mid = False
                    data = self._d.unused_data
                    if not data:
                        return
                elif self._d.needs_input:
                    return
        except ZstdError as e:
            raise _Bad(str(e)) from None

    def finish(self) -> Iterator[bytes | None]:
        if self._mid:
            raise _Bad("truncated stream")
        yield from ()


def _stage(coding: str) -> _Stage:
    if coding in ("gzip", "deflate"):
        return _Zlib(coding)
    if coding == "br":
        return _Brotli()
    return _Zstd()


class _Stop(Exception):
    def __init__(self, failure: DecodeFailure, detail: str) -> None:
        self.failure = failure
        self.detail = detail


class IdentityHasher:
    """Streaming SHA-256 of a body's raw bytes and of its identity representation.

    `codings` are the Content-Encoding field values (see `content_codings`). Feed the body with
    `update(chunk)`; check `failure` after each chunk to stop early (once set, further chunks
    are only raw-hashed, never decoded); then `result()` (or `digest()`, which raises).
    """

    __slots__ = (
        "_decoded",
        "_detail",
        "_encoded",
        "_failure",
        "_first_member",
        "_identity",
        "_limits",
        "_out",
        "_raw",
        "_result",
        "_stages",
        "codings",
    )

    def __init__(
        self, content_encoding: Iterable[str | bytes] = (), limits: DecodeLimits | None = None
    ) -> None:
        self.codings = content_codings(content_encoding)
        self._limits = limits or DecodeLimits()
        self._raw = hashlib.sha256()
        self._encoded = 0
        self._decoded = 0
        self._failure: DecodeFailure | None = None
        self._detail = ""
        self._first_member: bytes | None = None
        self._stages: list[_Stage] = []
        self._out: list[int] = []
        self._identity = self._raw
        self._result: DigestResult | None = None
        if not self.codings:
            return
        unknown = [c for c in self.codings if c not in KNOWN_CODINGS]
        if unknown:
            shown = unknown[0] if all(ch in _TOKEN for ch in unknown[0]) else repr(unknown[0])
            self._fail(DecodeFailure.UNKNOWN_CODING, f"content coding {shown[:40]}")
        elif len(self.codings) > self._limits.max_codings_count:
            self._fail(
                DecodeFailure.TOO_MANY_CODINGS,
                f"{len(self.codings)} stacked codings (limit {self._limits.max_codings_count})",
            )
        else:
            self._stages = [_stage(c) for c in reversed(self.codings)]
            self._out = [0] * len(self._stages)
            self._identity = hashlib.sha256()

    def _fail(self, failure: DecodeFailure, detail: str) -> None:
        self._failure = failure
        self._detail = detail
        self._stages = []

    @property
    def failure(self) -> DecodeFailure | None:
        """Set as soon as the identity digest is known to be unobtainable."""
        return self._failure

    def update(self, chunk: bytes) -> None:
        self._raw.update(chunk)
        self._encoded += len(chunk)
        if self._stages:
            try:
                self._push(0, self._stages[0].feed(chunk))
            except _Stop as e:
                self._fail(e.failure, e.detail)

    def _push(self, i: int, pieces: Iterator[bytes | None]) -> None:
        last = i == len(self._stages) - 1
        limits = self._limits
        try:
            for piece in pieces:
                if piece is None:  # end of a gzip member
                    if last and self._first_member is None:
                        self._first_member = self._identity.copy().digest()
                    continue
                n = self._out[i] = self._out[i] + len(piece)
                if n > limits.max_bytes:
                    self._decoded = n  # where decoding stopped, for the result and the log
                    raise _Stop(
                        DecodeFailure.TOO_LARGE,
                        f"{self.codings[-1 - i]} output passed {limits.max_bytes} bytes",
                    )
                if n > limits.ratio_grace_bytes and n > limits.max_ratio * self._encoded:
                    self._decoded = n
                    raise _Stop(
                        DecodeFailure.RATIO,
                        f"{self.codings[-1 - i]} output {n} bytes from {self._encoded} "
                        f"(ratio limit {limits.max_ratio:g})",
                    )
                if last:
                    self._identity.update(piece)
                    self._decoded = n
                else:
                    self._push(i + 1, self._stages[i + 1].feed(piece))
        except _Bad as e:
            raise _Stop(DecodeFailure.BAD_CODING, f"{self.codings[-1 - i]}: {e}") from None

    def result(self) -> DigestResult:
        """Finish (detects truncated streams), after the last `update`; later calls repeat it."""
        if self._result is None:
            self._result = self._finish()
        return self._result

    def _finish(self) -> DigestResult:
        raw = self._raw.digest()
        if self._encoded == 0:
            # An empty body is empty whatever its declared coding: no client gets any byte.
            return DigestResult(None, raw, raw, codings=self.codings)
        try:
            for i, stage in enumerate(self._stages):
                self._push(i, stage.finish())
        except _Stop as e:
            self._fail(e.failure, e.detail)
        if self._failure is not None:
            return DigestResult(
                self._failure,
                raw,
                None,
                codings=self.codings,
                encoded_bytes=self._encoded,
                decoded_bytes=self._decoded,
                detail=self._detail,
            )
        identity = self._identity.digest() if self.codings else raw
        alternates: tuple[bytes, ...] = ()
        if self._first_member is not None and self._first_member != identity:
            alternates = (self._first_member,)
        return DigestResult(
            None,
            raw,
            identity,
            alternates,
            self.codings,
            self._encoded,
            self._decoded if self.codings else self._encoded,
        )

    def digest(self) -> bytes:
        """The identity digest (32 bytes); raises a `DecodeError` subclass if there is none."""
        res = self.result()
        if res.failure is not None or res.identity is None:
            failure = res.failure or DecodeFailure.BAD_CODING
            raise _ERRORS[failure](failure, res.detail)
        return res.identity

    def raw_digest(self) -> bytes:
        """SHA-256 of the bytes as received (the coded representation)."""
        return self._raw.digest()


def identity_digest(
    body: bytes, content_encoding: Iterable[str | bytes] = (), limits: DecodeLimits | None = None
) -> DigestResult:
    """One-shot `IdentityHasher` for a spooled body; no coding costs one SHA-256 pass."""
    if not content_encoding:
        d = hashlib.sha256(body).digest()
        return DigestResult(None, d, d, encoded_bytes=len(body), decoded_bytes=len(body))
    h = IdentityHasher(content_encoding, limits)
    h.update(body)
    return h.result()


def stored_digests(
    body: bytes, content_encoding: Iterable[str | bytes] = (), limits: DecodeLimits | None = None
) -> tuple[bytes, ...]:
    """Every digest a cache may have stored `body` under (phases.upstream_response.judge_body):
    its identity digest when its codings can be removed; else its raw digest (the
    "raw-only" policy) or `UNJUDGED_DIGEST` (an unknown coding while no digest was listed).
    A reader that does not trust a stored record checks its digest is one of these: a plain
    sha256 of the stored bytes would refuse every content-coded body, whose digest is its
    decoded representation's."""
    result = identity_digest(body, content_encoding, limits)
    if result.identity is not None:
        return (result.identity,)
    return (result.raw, UNJUDGED_DIGEST)
