"""File drop: each publication becomes the next signed version in a blocklist directory."""

from __future__ import annotations

from pathlib import Path

from proxy.blocklist import format as blformat
from proxy.takedown.publisher import FileDrop
from proxy.takedown.service import TakedownService
from tests.takedown.conftest import MakeEnv, notice


async def test_versions_are_signed_full_and_sequential(make_env: MakeEnv, tmp_path: Path) -> None:
    env = await make_env(n_edges=1)
    private_pem, public_pem = blformat.generate_keypair()
    drop_dir = tmp_path / "blocklist"
    drop_dir.mkdir()
    # Someone (an earlier service, a hand-made list) already wrote sequence 5.
    blformat.write_version(
        drop_dir / blformat.version_filename(5), 5, [], private_key_pem=private_pem
    )
    svc: TakedownService = env.svc
    assert svc.publisher is not None
    svc.publisher.file_drop = FileDrop(drop_dir, private_pem)
    _, a = await env.post("/notices", "trusted", notice())
    view = await env.wait_state(a["case"], "enforced")
    assert (
        next(e for e in view["timeline"] if e["event"] == "published")["data"]["file_sequence"] == 6
    )
    _, b = await env.post("/notices", "trusted", notice({"sha256": "cd" * 32}))
    await env.wait_state(b["case"], "enforced")
    loaded, errors = blformat.load_newest(
        drop_dir, public_pem, current_sequence=None, max_bytes=1 << 20
    )
    assert not errors and loaded is not None
    entries, seq = loaded
    assert seq == 7
    assert {(e.type.value, e.value) for e in entries} == {
        ("url", "https://cdn.example/a.mp3"),
        ("sha256", "cd" * 32),
    }
    assert [p.name for p in blformat.list_versions(drop_dir)] == [
        blformat.version_filename(n) for n in (5, 6, 7)
    ]
    counter = {
        "subscriber": {"name": "O", "address": "A", "phone": "1"},
        "material": [{"url": "https://cdn.example/a.mp3"}],
        "signature": "O",
        "statements": {
            "good_faith_mistake": True,
            "consent_to_jurisdiction": True,
            "accept_service": True,
        },
    }
    _, out = await env.post(f"/cases/{a['case']}/counter-notice", "operator", counter)
    env.clock.now = out["restore"]["restore_at"]
    await env.svc.run_due()
    await env.wait_state(a["case"], "restored")
    loaded, _ = blformat.load_newest(drop_dir, public_pem, current_sequence=None, max_bytes=1 << 20)
    assert loaded is not None and loaded[1] == 8
    assert [e.value for e in loaded[0]] == ["cd" * 32]
