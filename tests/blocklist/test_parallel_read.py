"""`blocklist.compile_processes`: a large version's entry lines read by forked processes give
exactly what one process gives: the same entries in the same order, the same compiled forms,
and the same first refusal (file, line, reason) wherever in the file it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.blocklist.format import (
    PARALLEL_MIN_LINES,
    AddLine,
    BlocklistError,
    Reading,
    parse_version,
)
from proxy.blocklist.model import CompiledById, EntryType
from tests.blocklist.signing import signed_lines

N = PARALLEL_MIN_LINES + 1000


def lines(n: int) -> list[AddLine]:
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(
                AddLine(id=f"u{i}", type=EntryType.URL, value=f"http://a.example/{i}?b=2&a=1")
            )
        elif i % 3 == 1:
            out.append(AddLine(id=f"h{i}", type=EntryType.HOST, value=f"h{i}.example", notice="N"))
        else:
            out.append(AddLine(id=f"d{i}", type=EntryType.SHA256, value=f"{i:064x}"))
    return out


def read(data: bytes, keys: tuple[bytes, bytes], processes: int) -> tuple[object, CompiledById]:
    compiled: CompiledById = {}
    v = parse_version(
        data, Path("v.jsonl"), keys[1], reading=Reading(compiled=compiled, processes=processes)
    )
    return v, compiled


def test_forked_readers_give_what_one_reader_gives(keys: tuple[bytes, bytes]) -> None:
    data = signed_lines(keys[0], lines(N))
    one, one_forms = read(data, keys, 1)
    two, two_forms = read(data, keys, 2)
    assert two == one
    assert {i: f for i, (_e, f) in two_forms.items()} == {i: f for i, (_e, f) in one_forms.items()}
    seen: list[tuple[int, int]] = []
    parse_version(
        data,
        Path("v.jsonl"),
        keys[1],
        reading=Reading(progress=lambda d, t: seen.append((d, t)), processes=3),
    )
    assert seen[-1] == (N, N) and all(t == N for _d, t in seen)


@pytest.mark.parametrize("where", ["first share", "last share", "duplicate across shares"])
def test_forked_readers_refuse_at_the_line_one_reader_does(
    keys: tuple[bytes, bytes], where: str
) -> None:
    listed = lines(N)
    if where == "first share":
        listed[10] = AddLine(id="bad", type=EntryType.URL, value="http:///no-host")
        listed[N - 10] = AddLine(id="bad2", type=EntryType.URL, value="http:///no-host")
    elif where == "last share":
        listed[N - 10] = AddLine(id="bad", type=EntryType.URL, value="http:///no-host")
    else:
        listed[N - 10] = AddLine(id="h1", type=EntryType.HOST, value="again.example")
    data = signed_lines(keys[0], listed)
    errors = []
    for processes in (1, 2):
        with pytest.raises(BlocklistError) as caught:
            read(data, keys, processes)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
