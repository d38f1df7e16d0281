"""RFC 9111 §4.1 Vary (cases follow cache-tests vary-parse)."""

import pytest

from proxy.rfc.vary import ABSENT, normalise_field, vary_fields, vary_key


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["Accept-Encoding"], ("accept-encoding",)),
        (["Foo, Bar", "foo"], ("bar", "foo")),
        ([" , Foo ,"], ("foo",)),
        ([""], ()),
        ([], ()),
        (["*"], None),
        (["*, *"], None),
        (["*", "*"], None),
        ([", *"], None),
        (["", "*"], None),
        (["*, Foo"], None),
        (["Foo, *"], None),
    ],
)
def test_vary_fields_rfc9111_4_1(values: list[str], expected: tuple[str, ...] | None) -> None:
    assert vary_fields(values) == expected


def test_absent_differs_from_empty_rfc9111_4_1() -> None:
    assert normalise_field("foo", []) == ABSENT
    assert normalise_field("foo", [""]) == ""
    assert ABSENT != ""


@pytest.mark.parametrize(
    ("name", "a", "b"),
    [
        ("accept-encoding", ["gzip, br"], ["br,gzip"]),
        ("accept-encoding", ["gzip", "br"], ["br, gzip"]),  # lines combined
        ("Accept-Encoding", ["GZIP ,  br"], ["br,gzip"]),
        ("accept-language", ["en-US;q=0.8, de"], ["de, en-us; q=0.8"]),
        ("accept", ["text/html,  */*;q=0.1"], ["*/*; q=0.1, text/html"]),
        ("x-custom", ["a ,b"], ["a, b"]),  # whitespace only
        ("x-custom", ["a", "b"], ["a, b"]),
        ("x-custom", ["a,,b"], ["a, b"]),  # empty list elements
    ],
)
def test_equivalent_values_rfc9111_4_1(name: str, a: list[str], b: list[str]) -> None:
    assert normalise_field(name, a) == normalise_field(name, b)


@pytest.mark.parametrize(
    ("name", "a", "b"),
    [
        ("x-custom", ["a, b"], ["b, a"]),  # order is significant for unknown fields
        ("x-custom", ["A"], ["a"]),  # case too
        ("accept-encoding", ["gzip"], ["br"]),
        ("x-custom", ['"a,b"'], ['"a", "b"']),  # commas inside quoted strings
    ],
)
def test_different_values_rfc9111_4_1(name: str, a: list[str], b: list[str]) -> None:
    assert normalise_field(name, a) != normalise_field(name, b)


def test_vary_key_rfc9111_4_1() -> None:
    headers = {"accept-encoding": ["br, gzip"], "foo": ["1"]}
    fields = vary_fields(["Foo, Accept-Encoding, Bar"])
    assert fields is not None
    key = vary_key(fields, lambda n: headers.get(n, []))
    assert key == ("br,gzip", ABSENT, "1")
