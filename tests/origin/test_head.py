"""ResponseHeadLimits (proxy/origin/head.py): what an origin response head is held to, taken from
the config, and the refusal each limit gives (502, naming the config field)."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, OriginConfig, load
from proxy.origin import OriginError, OriginFailure
from proxy.origin.head import ResponseHeadLimits

LIMITS = ResponseHeadLimits(header_bytes=100, header_count=4, field_bytes=40)


def test_limits_come_from_the_origin_config() -> None:
    cfg = OriginConfig(
        max_response_header_bytes=1000,
        max_response_header_count=10,
        max_response_header_field_bytes=100,
    )
    assert ResponseHeadLimits.from_config(cfg) == ResponseHeadLimits(1000, 10, 100)
    assert ResponseHeadLimits.from_config(OriginConfig()) == ResponseHeadLimits()
    example = load("config/edgeproxy.example.toml").origin
    assert ResponseHeadLimits.from_config(example) == ResponseHeadLimits()


@pytest.mark.parametrize(
    "field",
    ["max_response_header_bytes", "max_response_header_count", "max_response_header_field_bytes"],
)
def test_a_zero_limit_is_a_config_error(tmp_path, field: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        f'[[sites]]\nname = "a"\nhosts = ["*"]\norigin = "http://127.0.0.1:9"\n\n'
        f"[origin]\n{field} = 0\n"
    )
    with pytest.raises(ConfigError, match=field):
        load(path)


def test_fields_exactly_at_the_limits_pass() -> None:
    fields = [(b"A", b"x" * 39), (b"B", b"x" * 19), (b"C", b"x" * 19), (b"D", b"x" * 19)]
    assert sum(len(n) + len(v) for n, v in fields) == 100
    LIMITS.check_fields(fields)
    LIMITS.check_fields([])


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ([(b"A", b"x" * 40)], "max_response_header_field_bytes"),
        ([(b"A", b"x")] * 5, "max_response_header_count"),
        ([(b"A", b"x" * 30)] * 4, "max_response_header_bytes"),
    ],
    ids=["one-field-too-large", "too-many-fields", "total-too-large"],
)
def test_over_a_limit_is_a_protocol_502_naming_it(
    fields: list[tuple[bytes, bytes]], names: str
) -> None:
    with pytest.raises(OriginError) as e:
        LIMITS.check_fields(fields)
    assert e.value.kind is OriginFailure.PROTOCOL and e.value.status == 502
    assert names in e.value.detail


def test_the_stall_bound_holds_one_field_line_with_room_for_whitespace() -> None:
    """Bytes without a field completing: one whole field line of the largest size fits."""
    line = b"N: " + b"v" * (LIMITS.field_bytes - 1) + b" " * 32 + b"\r\n"
    assert len(line) <= LIMITS.stall_bytes < 2 * LIMITS.field_bytes + 512
    for refusal in (LIMITS.unending(), LIMITS.reason_too_long(), LIMITS.line_too_long()):
        assert refusal.kind is OriginFailure.PROTOCOL
        assert "max_response_header_field_bytes" in refusal.detail
