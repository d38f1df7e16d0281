"""RFC 8941 Dictionary parsing and bare-item serialisation."""

from decimal import Decimal

import pytest

from proxy.rfc.structured import (
    InnerList,
    Item,
    Token,
    is_token,
    parse_dictionary,
    serialize_bare_item,
    serialize_string,
)


def test_dictionary_basic_rfc8941_4_2_2() -> None:
    d = parse_dictionary('a=1, b, c="x", d=tok, e=?0, f=1.5, g=:aGk=:')
    assert d is not None
    assert d["a"] == Item(1, {})
    assert d["b"] == Item(True, {})
    assert d["c"] == Item("x", {})
    assert d["d"] == Item(Token("tok"), {})
    assert isinstance(d["d"], Item) and isinstance(d["d"].value, Token)
    assert d["e"] == Item(False, {})
    assert d["f"] == Item(Decimal("1.5"), {})
    assert d["g"] == Item(b"hi", {})


def test_dictionary_params_and_inner_list_rfc8941_3_1_1() -> None:
    d = parse_dictionary("a=(1 2);x, b;y=2")
    assert d is not None
    a = d["a"]
    assert isinstance(a, InnerList) and [i.value for i in a.items] == [1, 2]
    assert a.params == {"x": True}
    assert d["b"] == Item(True, {"y": 2})


def test_duplicate_key_last_wins_rfc8941_4_2_2() -> None:
    d = parse_dictionary("a=1, a=2")
    assert d is not None and d["a"] == Item(2, {})


@pytest.mark.parametrize(
    "value",
    [
        "MaX-aGe=1",  # keys are lowercase
        "a=1,",  # trailing comma
        "a=1 b=2",
        "max-age =1",
        "max-age= 1",
        "a=&&&",
        "a=1, &&&&&",
        'a="unterminated',
        'a="\\x"',  # only \" and \\ escapes
        "a=1234567890123456",  # 16-digit integer
        "a=1.1234",  # 4 fractional digits
        "a=1.",
        "a=?2",
        "a=(1 2",
        "a=:!!:",
    ],
)
def test_invalid_dictionary_rfc8941_4_2(value: str) -> None:
    assert parse_dictionary(value) is None


def test_whitespace_rfc8941_4_2() -> None:
    assert parse_dictionary("  a=1 ,\tb  ") == {"a": Item(1, {}), "b": Item(True, {})}


def test_empty_rfc8941_4_2_2() -> None:
    assert parse_dictionary("") == {}


def test_date_and_display_string_rfc9651() -> None:
    d = parse_dictionary('a=@1659578233, b=%"f%c3%bc"')
    assert d is not None
    assert d["a"].value.seconds == 1659578233  # type: ignore[union-attr]
    assert d["b"].value.value == "fü"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "?1"),
        (False, "?0"),
        (5, "5"),
        (-3, "-3"),
        ('a"b', '"a\\"b"'),
        (Token("tok/1"), "tok/1"),
        (b"hi", ":aGk=:"),
        (Decimal("1.50"), "1.5"),
    ],
)
def test_serialize_bare_item_rfc8941_4_1_3(value: object, text: str) -> None:
    assert serialize_bare_item(value) == text  # type: ignore[arg-type]


def test_serialize_string_replaces_non_ascii_rfc8941_4_1_6() -> None:
    assert serialize_string("naïve") == '"na?ve"'


@pytest.mark.parametrize(
    ("text", "ok"),
    [("abc", True), ("*x", True), ("a:b/c", True), ("1a", False), ("", False), ("a b", False)],
)
def test_is_token_rfc8941_3_3_4(text: str, ok: bool) -> None:
    assert is_token(text) is ok
