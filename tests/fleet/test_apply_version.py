"""NodeBlocklist.apply_version, the path a feed's verified version takes into the workers: the
change workers get is computed from the delta alone and must equal what a directory reload of
the same versions would send; what does not fit is refused and changes nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy.blocklist.format import BlocklistError, generate_keypair, parse_version, render_version
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.node import NodeBlocklist
from proxy.config import BlocklistConfig, Config


def e(i: str, path: str = "") -> Entry:
    return Entry(i, EntryType.URL, f"http://demo.local/{path or i}")


class Workers:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        self.sent.append((op, args))
        return [{"worker": 0, "version": args.get("version", 0), "applied_at": time.time()}]


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


def node(tmp_path: Path, keys: tuple[bytes, bytes], **bl: Any) -> tuple[NodeBlocklist, Workers]:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(keys[1])
    (tmp_path / "fleet").mkdir(exist_ok=True)
    cfg = msgspec.structs.replace(
        Config(),
        blocklist=BlocklistConfig(
            dir=str(tmp_path / "fleet"), public_key=str(pub), allow_empty=True, **bl
        ),
    )
    workers = Workers()
    b = NodeBlocklist(cfg, tmp_path / "state", workers)
    b.load_initial()
    return b, workers


def version(keys: tuple[bytes, bytes], seq: int, adds: list[Entry], **kw: Any) -> Any:
    return parse_version(render_version(seq, adds, private_key_pem=keys[0], **kw), "t", keys[1])


async def test_deltas_change_only_what_they_name(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    b, workers = node(tmp_path, keys)
    await b.apply_version(version(keys, 1, [e("a"), e("b")]))
    await b.push([{"id": "b", "type": "url", "value": "http://demo.local/pushed-b"}])
    # Removes a and b, re-adds a changed, adds c: b stays (the operator's push holds it).
    await b.apply_version(version(keys, 2, [e("a", "a2"), e("c")], base=1, removes=["a", "b"]))
    op, args = workers.sent[-1]
    assert op == "blocklist.delta"
    assert {x["id"] for x in args["add"]} == {"a", "c"} and args["remove"] == []
    assert {x.id: x.value for x in b.entries()} == {
        "a": "http://demo.local/a2",
        "b": "http://demo.local/pushed-b",
        "c": "http://demo.local/c",
    }
    assert b.file_sequence == 2
    await b.apply_version(version(keys, 3, [], base=2, removes=["c"]))
    assert workers.sent[-1][1]["remove"] == ["c"]


async def test_what_does_not_fit_is_refused_and_changes_nothing(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    b, workers = node(tmp_path, keys, max_sequence_step=10)
    await b.apply_version(version(keys, 1, [e("a")]))
    sent = len(workers.sent)
    for bad, words in (
        (version(keys, 3, [e("x")], base=2), "rests on 2"),
        (version(keys, 1, [e("x")]), "not newer"),
        (version(keys, 50, [e("x")]), "max_sequence_step"),
    ):
        with pytest.raises(BlocklistError, match=words):
            await b.apply_version(bad)
    assert len(workers.sent) == sent
    assert [x.id for x in b.entries()] == ["a"] and b.file_sequence == 1


async def test_a_full_version_replaces_the_file_layer(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    b, workers = node(tmp_path, keys)
    await b.apply_version(version(keys, 1, [e("a"), e("b")]))
    await b.apply_version(version(keys, 2, [e("b"), e("c")]))
    assert sorted(x.id for x in b.entries()) == ["b", "c"]
    op, args = workers.sent[-1]
    assert op == "blocklist.delta" and args["remove"] == ["a"]


async def test_state_files_are_written_only_when_they_change(
    tmp_path: Path, keys: tuple[bytes, bytes]
) -> None:
    """Each state file costs an fsync on the way to an ack: a feed version rewrites the
    version counter and the audit head it carries, and the operator's pushed entries only
    when they changed since they were last written whole (a push is logged,
    proxy/blocklist/changelog.py); what it wrote is what a restart reads back."""
    b, _ = node(tmp_path, keys)
    await b.push([{"id": "p", "type": "url", "value": "http://demo.local/pushed"}])
    pushed = tmp_path / "state" / "pushed-entries.json"
    assert b'"p"' not in pushed.read_bytes()  # logged, not rewritten
    await b.apply_version(version(keys, 1, [e("a")]))
    assert b'"p"' in pushed.read_bytes()  # the state written whole: the push with it
    before = pushed.stat().st_mtime_ns, pushed.stat().st_ino
    head = {"seq": 7, "hash": "ab" * 32, "signature": "sig"}
    await b.apply_version(version(keys, 2, [e("a"), e("b")], audit_head=head))
    assert (pushed.stat().st_mtime_ns, pushed.stat().st_ino) == before
    again, _ = node(tmp_path, keys)
    assert again.version == b.version + 1  # a start makes the next node version
    assert again.pushed.keys() == {"p"}
    assert again.audit_head is not None and again.audit_head["seq"] == 7
    assert again.audit_head["via"] == "feed:2"
