"""The site roster the edge's go-live gate enforces (proxy/gate.py): signature, order, reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import gate
from proxy.blocklist.format import generate_keypair


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


def _gate(tmp_path: Path, public: bytes) -> gate.Gate:
    return gate.Gate(
        directory=tmp_path,
        public_key_pem=public,
        max_bytes=1 << 20,
        challenge_prefix="/.well-known/edgeproxy-challenge/",
        held_status=421,
        holding_status=503,
        holding_pages={},
    )


def test_roster_round_trip_and_matching(keys: tuple[bytes, bytes]) -> None:
    private, public = keys
    data = gate.render_roster(7, ["A.example.", "*.shop.example"], private, created_at=1.0)
    r = gate.parse_roster(data, public)
    assert r.sequence == 7 and r.hosts == {"a.example"}
    assert r.live("a.example") and r.live("x.shop.example")
    assert r.live("a.b.shop.example") and not r.live("shop.example")  # the apex is not covered
    assert not r.live("b.example") and not r.live("shop.example.evil")
    assert not r.live("xshop.example") and not r.live("")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.replace(b"a.example", b"b.example"),  # content changed after signing
        lambda d: d.split(b"\n")[0] + b"\n",  # signature line dropped
        lambda d: d[:-1],  # truncated
        lambda d: b"",  # empty
    ],
)
def test_tampered_roster_is_refused(keys: tuple[bytes, bytes], tamper: object) -> None:
    private, public = keys
    data = gate.render_roster(3, ["a.example"], private)
    with pytest.raises(gate.RosterError):
        gate.parse_roster(tamper(data), public)  # type: ignore[operator]


def test_roster_signed_by_another_key_is_refused(keys: tuple[bytes, bytes]) -> None:
    other_private, _ = generate_keypair()
    with pytest.raises(gate.RosterError, match="wrong key"):
        gate.parse_roster(gate.render_roster(3, ["a.example"], other_private), keys[1])


def test_gate_keeps_last_good_roster(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    private, public = keys
    g = _gate(tmp_path, public)
    assert g.holds("a.example", "/") and not g.reload()  # nothing yet: everything held
    assert not g.holds("a.example", "/.well-known/edgeproxy-challenge/tok")
    swaps: list[int] = []
    g.on_swap = lambda: swaps.append(g.roster.sequence)
    gate.write_roster(tmp_path, gate.render_roster(5, ["a.example"], private), 5)
    assert g.reload() and not g.holds("a.example", "/") and swaps == [5]
    # A newer file with a bad signature: refused, counted, the held roster stays.
    bad = gate.render_roster(6, ["a.example", "b.example"], private).replace(b"b.ex", b"c.ex")
    (tmp_path / gate.roster_filename(6)).write_bytes(bad)
    assert not g.reload()
    assert g.roster.sequence == 5 and g.failures == 1 and g.holds("b.example", "/")
    # An older sequence under a newer name never replaces the held one.
    (tmp_path / gate.roster_filename(9)).write_bytes(gate.render_roster(4, [], private))
    assert not g.reload() and g.roster.sequence == 5 and not g.holds("a.example", "/")
    gate.write_roster(tmp_path, gate.render_roster(10, [], private), 10)
    assert g.reload() and g.holds("a.example", "/") and swaps == [5, 10]


@pytest.mark.parametrize(
    ("gate_toml", "field"),
    [
        ("enabled = true", "gate.public_key"),  # no key at all: it could only hold everything
        ('enabled = true\npublic_key = "/nonexistent.pem"', "gate.public_key"),
        ('enabled = true\npublic_key = "{pub}"\nheld_status = 99', "gate.held_status"),
        (
            'enabled = true\npublic_key = "{pub}"\nholding_page_file = "/no/page.html"',
            "gate.holding_page_file",
        ),
        ('enabled = true\npublic_key = "{pub}"\npoll_interval_s = -1', "gate.poll_interval_s"),
    ],
)
def test_gate_config_is_checked_at_start(
    tmp_path: Path, keys: tuple[bytes, bytes], gate_toml: str, field: str
) -> None:
    from proxy.config import ConfigError, load

    pub = tmp_path / "k.pub"
    pub.write_bytes(keys[1])
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        '[[sites]]\nname = "a"\nhosts = ["a.example"]\norigin = "http://127.0.0.1:9"\n\n[gate]\n'
        + gate_toml.replace("{pub}", str(pub))
        + "\n"
    )
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert field in err.value.field


def test_gate_off_by_default_and_in_the_example(keys: tuple[bytes, bytes]) -> None:
    from proxy.config import Config, load

    root = Path(__file__).resolve().parents[1]
    assert Config().gate.enabled is False
    assert load(root / "config" / "edgeproxy.example.toml").gate.enabled is False
