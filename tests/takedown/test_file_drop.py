"""File drop: each publication becomes the next signed version in a blocklist directory, a
delta on the newest version there, so other publishers' entries survive (issue 14)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from proxy.blocklist import format as blformat
from proxy.blocklist.model import Entry, EntryType
from proxy.takedown.publisher import FileDrop
from proxy.takedown.service import TakedownService
from tests.takedown.conftest import Env, MakeEnv, notice

COUNTER = {
    "subscriber": {"name": "O", "address": "A", "phone": "1"},
    "material": [{"url": "https://cdn.example/a.mp3"}],
    "signature": "O",
    "statements": {
        "good_faith_mistake": True,
        "consent_to_jurisdiction": True,
        "accept_service": True,
    },
}


def others(n: int, prefix: str = "op") -> list[Entry]:
    return [
        Entry(f"{prefix}-{i}", EntryType.URL, f"http://listed.example/{prefix}/{i}", "X", "x")
        for i in range(n)
    ]


def resolved(drop_dir: Path, public_pem: bytes) -> tuple[dict[str, Entry], int]:
    loaded, errors = blformat.load_newest(
        drop_dir, public_pem, current_sequence=None, max_bytes=1 << 30
    )
    assert not errors and loaded is not None, errors
    return {e.id: e for e in loaded[0]}, loaded[1]


def _peek(path: Path) -> blformat.Header:
    return msgspec.json.decode(path.read_bytes().split(b"\n", 1)[0], type=blformat.Header)


async def with_drop(make_env: MakeEnv, drop_dir: Path, private_pem: bytes, **kw: Any) -> Env:
    env = await make_env(n_edges=1)
    svc: TakedownService = env.svc
    assert svc.publisher is not None
    svc.publisher.file_drop = FileDrop(drop_dir, private_pem, **kw)
    return env


async def restore(env: Env, case: int) -> None:
    status, out = await env.post(f"/cases/{case}/counter-notice", "operator", COUNTER)
    assert status == 201, out
    env.clock.now = out["restore"]["restore_at"]
    await env.svc.run_due()
    await env.wait_state(case, "restored")


async def test_versions_are_signed_deltas_on_the_newest_and_sequential(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    private_pem, public_pem = blformat.generate_keypair()
    drop_dir = tmp_path / "blocklist"
    drop_dir.mkdir()
    # Someone (an earlier service, a hand-made list) already wrote sequence 5.
    blformat.write_version(
        drop_dir / blformat.version_filename(5), 5, [], private_key_pem=private_pem
    )
    env = await with_drop(make_env, drop_dir, private_pem)
    _, a = await env.post("/notices", "trusted", notice())
    view = await env.wait_state(a["case"], "enforced")
    assert (
        next(e for e in view["timeline"] if e["event"] == "published")["data"]["file_sequence"] == 6
    )
    _, b = await env.post("/notices", "trusted", notice({"sha256": "cd" * 32}))
    await env.wait_state(b["case"], "enforced")
    entries, seq = resolved(drop_dir, public_pem)
    assert seq == 7
    assert {(e.type.value, e.value) for e in entries.values()} == {
        ("url", "https://cdn.example/a.mp3"),
        ("sha256", "cd" * 32),
    }
    assert [p.name for p in blformat.list_versions(drop_dir)] == [
        blformat.version_filename(n) for n in (5, 6, 7)
    ]
    assert [_peek(drop_dir / blformat.version_filename(n)).base for n in (6, 7)] == [5, 6]
    await restore(env, a["case"])
    entries, seq = resolved(drop_dir, public_pem)
    assert seq == 8 and [e.value for e in entries.values()] == ["cd" * 32]


async def test_issue14_newest_full_list_survives_an_actioned_case(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    private_pem, public_pem = blformat.generate_keypair()
    drop_dir = tmp_path / "blocklist"
    drop_dir.mkdir()
    big = others(50_000)
    blformat.write_version(
        drop_dir / blformat.version_filename(40), 40, big, private_key_pem=private_pem
    )
    env = await with_drop(make_env, drop_dir, private_pem)
    _, a = await env.post("/notices", "trusted", notice())
    await env.wait_state(a["case"], "enforced")
    v41 = drop_dir / blformat.version_filename(41)
    assert _peek(v41).base == 40 and _peek(v41).entries == 1
    entries, _ = resolved(drop_dir, public_pem)
    assert len(entries) == 50_001 and "op-49999" in entries
    await restore(env, a["case"])
    entries, seq = resolved(drop_dir, public_pem)
    assert seq == 42 and len(entries) == 50_000 and set(entries) == {e.id for e in big}


async def test_newest_delta_and_an_operator_version_between_publications(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    """The newest is a delta; then an operator signs a version by hand between two of the
    service's; a restore removes only the service's entry, even if the operator's list has an
    entry of the same shape."""
    private_pem, public_pem = blformat.generate_keypair()
    drop_dir = tmp_path / "blocklist"
    drop_dir.mkdir()
    blformat.write_version(
        drop_dir / blformat.version_filename(1), 1, others(10), private_key_pem=private_pem
    )
    blformat.write_version(
        drop_dir / blformat.version_filename(2),
        2,
        others(3, "late"),
        base=1,
        removes=["op-0"],
        private_key_pem=private_pem,
    )
    env = await with_drop(make_env, drop_dir, private_pem)
    _, a = await env.post("/notices", "trusted", notice())
    await env.wait_state(a["case"], "enforced")
    assert _peek(drop_dir / blformat.version_filename(3)).base == 2
    # The operator's CLI (`blocklist sign --base 3`) between two service publications.
    blformat.write_version(
        drop_dir / blformat.version_filename(4),
        4,
        others(2, "cli"),
        base=3,
        removes=["op-1"],
        private_key_pem=private_pem,
    )
    _, b = await env.post("/notices", "trusted", notice({"sha256": "cd" * 32}))
    await env.wait_state(b["case"], "enforced")
    assert _peek(drop_dir / blformat.version_filename(5)).base == 4
    await restore(env, a["case"])
    entries, seq = resolved(drop_dir, public_pem)
    assert seq == 6
    expected = {f"op-{i}" for i in range(2, 10)} | {"late-0", "late-1", "late-2", "cli-0", "cli-1"}
    assert set(entries) - expected == {next(i for i in entries if i.startswith("case2-"))}


async def test_a_full_version_after_a_long_chain_is_the_union(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    private_pem, public_pem = blformat.generate_keypair()
    drop_dir = tmp_path / "blocklist"
    drop_dir.mkdir()
    blformat.write_version(
        drop_dir / blformat.version_filename(1), 1, others(5), private_key_pem=private_pem
    )
    env = await with_drop(make_env, drop_dir, private_pem, max_delta_chain=2)
    cases = []
    for digest in ("ab", "cd", "ef"):
        _, c = await env.post("/notices", "trusted", notice({"sha256": digest * 32}))
        await env.wait_state(c["case"], "enforced")
        cases.append(c["case"])
    # 2 rests on 1 (chain 2), so 3 is full; 4 is a delta on it again.
    assert [_peek(drop_dir / blformat.version_filename(n)).base for n in (2, 3, 4)] == [1, None, 3]
    entries, seq = resolved(drop_dir, public_pem)
    assert seq == 4 and len(entries) == 8 and {f"op-{i}" for i in range(5)} <= set(entries)


async def test_untrusted_newest_version_refuses_and_writes_nothing(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    private_pem, _ = blformat.generate_keypair()
    stranger, _ = blformat.generate_keypair()
    drop_dir = tmp_path / "blocklist"
    drop_dir.mkdir()
    blformat.write_version(
        drop_dir / blformat.version_filename(1), 1, others(3), private_key_pem=private_pem
    )
    blformat.write_version(
        drop_dir / blformat.version_filename(2), 2, others(3, "x"), private_key_pem=stranger
    )
    before = sorted(p.name for p in drop_dir.iterdir())
    env = await with_drop(make_env, drop_dir, private_pem)
    _, a = await env.post("/notices", "trusted", notice())
    for _ in range(100):
        _, view = await env.get(f"/cases/{a['case']}")
        refused = [e for e in view["timeline"] if e["event"] == "publication_refused"]
        if refused:
            break
        await asyncio.sleep(0.02)
    assert refused, view["timeline"]
    assert "wrong key" in refused[0]["data"]["reason"]
    assert len(refused) == 1  # retried, but recorded once
    assert view["state"] == "actioned"
    assert sorted(p.name for p in drop_dir.iterdir()) == before


async def test_reversal_and_unsuspension_remove_only_the_services_entries(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    """Undo goes through the file drop too: a reversal and a lifted suspension are versions
    that remove the service's entries, whether delta or full, and leave the operator's alone."""
    private_pem, public_pem = blformat.generate_keypair()
    drop_dir = tmp_path / "blocklist"
    drop_dir.mkdir()
    blformat.write_version(
        drop_dir / blformat.version_filename(1), 1, others(5), private_key_pem=private_pem
    )
    env = await with_drop(make_env, drop_dir, private_pem, max_delta_chain=2)
    _, a = await env.post("/notices", "trusted", notice({"url": "https://shady.example/1"}))
    await env.wait_state(a["case"], "enforced")
    _, b = await env.post("/notices", "trusted", notice({"url": "https://shady.example/2"}))
    await env.wait_state(b["case"], "enforced")
    entries, _ = resolved(drop_dir, public_pem)
    assert "suspend-shady.example" in entries and f"case{a['case']}-t1" in entries
    status, _ = await env.post(f"/cases/{a['case']}/reverse", "admin", {"statement": "mistake"})
    assert status == 200
    status, _ = await env.post("/sites/shady.example/unsuspend", "admin", {"statement": "ok"})
    assert status == 200
    for _ in range(250):
        _, view = await env.get(f"/cases/{b['case']}")
        if "unsuspension_enforced" in [e["event"] for e in view["timeline"]]:
            break
        await asyncio.sleep(0.02)
    entries, seq = resolved(drop_dir, public_pem)
    assert set(entries) == {f"op-{i}" for i in range(5)} | {f"case{b['case']}-t2"}
    kinds = {
        e["data"]["kind"]: e["data"]["file_sequence"]
        for c in (a["case"], b["case"])
        for e in (await env.get(f"/cases/{c}"))[1]["timeline"]
        if e["event"] in ("reversal_published", "unsuspend_published")
    }
    assert set(kinds) == {"reversal", "unsuspend"} and max(kinds.values()) == seq


def test_newest_is_known_after_a_write_and_resolved_again_after_anyone_elses(
    tmp_path: Path,
) -> None:
    """Each publication asks for the newest version: re-verifying the whole delta chain every
    time was the service's bottleneck (benchmarks/fleet.py). What this drop wrote itself is
    known without reading it back, and must equal what the edge's loader resolves; a version
    another publisher writes (a new file) is noticed and read."""
    private, public = blformat.generate_keypair()
    d = tmp_path / "drop"
    drop = FileDrop(d, private, max_delta_chain=3)
    for seq in range(1, 6):
        newest = drop.newest()
        if drop.needs_full(newest):
            drop.write(seq, [*newest.entries.values(), *others(1, f"s{seq}")])
        else:
            drop.write(seq, others(1, f"s{seq}"), base=newest.sequence, removes=["s1-0"])
        known = drop.newest()
        entries, sequence = resolved(d, public)
        assert (known.sequence, known.entries) == (sequence, entries)
        assert known.chain_length == FileDrop(d, private).newest().chain_length
    blformat.write_version(
        d / blformat.version_filename(6), 6, others(2, "op"), base=5, private_key_pem=private
    )
    newest = drop.newest()
    assert newest.sequence == 6 and {"op-0", "op-1", "s5-0"} <= set(newest.entries)


async def test_waiting_publications_share_a_version_and_a_removal_never_rides_with_a_block(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    """A burst of decisions: publications waiting together go out as one signed version (each
    recorded with its sequence), at most `max_publications_per_version`, and blocks never
    share one with the removal after them (a delta applies removes before adds)."""
    from proxy.takedown import publications as pubs

    private_pem, public_pem = blformat.generate_keypair()
    drop_dir = tmp_path / "blocklist"
    env = await with_drop(make_env, drop_dir, private_pem, max_publications_per_version=3)
    svc: TakedownService = env.svc
    edges = [e.url for e in env.edges]

    def url(i: int) -> dict[str, str]:
        return {"id": f"e{i}", "type": "url", "value": f"https://cdn.example/{i}"}

    def create(conn: Any) -> list[int]:  # no kick: the dispatcher sleeps until told
        now = env.clock()
        blocks = [pubs.create_publication(conn, "block", now, edges, entries=[url(i)]) for i in range(4)]  # fmt: skip
        lift = pubs.create_publication(conn, "withdrawal", now, edges, entries=[url(0)])
        late = pubs.create_publication(conn, "block", now, edges, entries=[url(9)])
        return [*blocks, lift, late]

    pids = await svc.store.run(create)
    assert svc.publisher is not None
    svc.publisher.kick()

    def sequences(conn: Any) -> list[int | None]:
        q = "SELECT file_sequence FROM publications WHERE id = ?"
        return [conn.execute(q, (p,)).fetchone()[0] for p in pids]

    deadline = asyncio.get_running_loop().time() + 5
    while None in (seqs := await svc.store.run(sequences)):
        assert asyncio.get_running_loop().time() < deadline, seqs
        await asyncio.sleep(0.02)
    assert seqs == [1, 1, 1, 2, 3, 4]
    entries, seq = resolved(drop_dir, public_pem)
    assert seq == 4 and sorted(entries) == ["e1", "e2", "e3", "e9"]
