"""The desk's pure parts: the public form against the API's element checks, the rate limit,
password hashes; and `edgeproxy takedown set-password`."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from proxy.takedown import accounts, elements
from proxy.takedown.accounts import Role
from proxy.takedown.desk import form, passwords
from proxy.takedown.desk.limits import RateLimit
from proxy.takedown.store import Store
from tests.takedown.conftest import FakeClock

WHOLE = {
    "complainant_name": "Jo Public",
    "complainant_email": "jo@public.example",
    "works": "Song A\n\n  Song B  ",
    "urls": "https://cdn.example/a.mp3\nhttps://cdn.example/b.mp3",
    "legal_basis": "hosted",
    "good_faith": "yes",
    "accurate": "yes",
    "signature": "Jo Public",
}


def test_a_whole_form_is_a_complete_notice_for_the_api() -> None:
    filled = form.fill(WHOLE)
    assert filled.errors == {}
    checked = elements.check_notice(filled.raw)  # what POST /notices would say
    assert checked.complete and checked.legal_basis is elements.LegalBasis.HOSTED
    assert [t["title"] for t in filled.document["works"]] == ["Song A", "Song B"]
    assert len(checked.targets) == 2 and not any(t.error for t in checked.targets)


@pytest.mark.parametrize("field", sorted(form.FIELDS))
def test_each_missing_element_is_named_on_its_field(field: str) -> None:
    values = {k: v for k, v in WHOLE.items() if k != field}
    filled = form.fill(values)
    assert list(filled.errors) == [field]
    element = form.FIELDS[field][0]
    checked = elements.check_notice(filled.raw)  # the API agrees
    if checked.error is not None:  # no target at all: refused by the schema (400, no case)
        assert field == "urls" and checked.error.field == element
        assert filled.errors[field] == form.FIELDS[field][1]
    else:
        assert checked.missing == [element]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("complainant_name", "   "),
        ("works", "\n \n"),
        ("legal_basis", "because"),
        ("good_faith", "on"),
        ("accurate", "no"),
        ("signature", "\t"),
    ],
)
def test_blank_or_wrong_values_count_as_missing(field: str, value: str) -> None:
    assert list(form.fill(WHOLE | {field: value}).errors) == [field]


@pytest.mark.parametrize("url", ["ftp://cdn.example/a", "not a url", "https:///nohost"])
def test_an_unusable_url_is_an_error_on_the_urls_field(url: str) -> None:
    filled = form.fill(WHOLE | {"urls": f"https://cdn.example/ok\n{url}"})
    assert list(filled.errors) == ["urls"] and url in filled.errors["urls"]


def test_lines_are_bounded() -> None:
    many = "\n".join(f"https://cdn.example/{i}" for i in range(form.MAX_LINES + 50))
    assert len(form.fill(WHOLE | {"urls": many}).document["targets"]) == form.MAX_LINES


def test_rate_limit_window_and_address_bound() -> None:
    clock = FakeClock()
    rl = RateLimit(2, 60.0, 3, clock)
    for _ in range(2):
        assert rl.retry_after_s("a") == 0
        rl.hit("a")
    assert rl.retry_after_s("a") == 60.0
    clock.advance(59)
    assert rl.retry_after_s("a") == pytest.approx(1.0)
    assert rl.retry_after_s("b") == 0  # per address
    clock.advance(1)
    assert rl.retry_after_s("a") == 0
    for addr in ("b", "c", "d", "e"):
        rl.hit(addr)
    assert len(rl._windows) == 3  # the least recently seen are forgotten


def test_password_hash_round_trip_and_no_plaintext() -> None:
    h = passwords.hash_password("correct horse battery")
    assert "correct" not in h and h.startswith("scrypt$")
    assert passwords.verify_password("correct horse battery", h)
    assert not passwords.verify_password("correct horse batterY", h)
    assert passwords.hash_password("correct horse battery") != h  # salted
    for broken in ("", "scrypt$1$2", "bcrypt$x$y$z$a$b", h.replace("scrypt", "md5")):
        assert not passwords.verify_password("correct horse battery", broken)


def _cli(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch) -> int:
    from proxy.takedown import cli

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return cli.main(argv)


def test_set_password_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "td.db")
    store = Store(db)
    ids = {
        r: accounts.parse_key(store.run_sync(accounts.create_account, r.value, r, 0.0))
        for r in (Role.OPERATOR, Role.SUBMITTER, Role.ADMIN)
    }
    store.close()
    base = ["set-password", "--db", db, "--password-stdin"]
    op = str(ids[Role.OPERATOR])
    assert _cli(base + ["--account", op], "short\n", monkeypatch) == 2
    assert "at least 12" in capsys.readouterr().err
    assert _cli(base + ["--account", str(ids[Role.SUBMITTER])], "x" * 12 + "\n", monkeypatch) == 2
    assert "only operator and admin" in capsys.readouterr().err
    assert _cli(base + ["--account", "999"], "x" * 12 + "\n", monkeypatch) == 2
    assert _cli(base + ["--account", op, "--login", "desk"], "y" * 12 + "\n", monkeypatch) == 0
    assert "signs in to the desk as 'desk'" in capsys.readouterr().out
    admin = str(ids[Role.ADMIN])
    assert _cli(base + ["--account", admin, "--login", "desk"], "z" * 12 + "\n", monkeypatch) == 2
    assert "taken" in capsys.readouterr().err
    store = Store(db)
    try:
        found = store.run_sync(passwords.candidate, "desk")
        assert found is not None and passwords.check(found, "y" * 12) is not None
        assert passwords.check(found, "z" * 12) is None
        raw = store.run_sync(
            lambda c: c.execute(
                "SELECT password_hash FROM accounts WHERE id = ?", (int(op),)
            ).fetchone()[0]
        )
        assert "yyyy" not in raw
    finally:
        store.close()
