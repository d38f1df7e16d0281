"""`edgeproxy blocklist …` end to end: files in a temp dir, and a fake admin API on 127.0.0.1."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.blocklist.cli import main

DEMO = Path(__file__).resolve().parents[2] / "blocklists" / "demo"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["blocklist", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_lines(path: Path, *objs: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_keygen_sign_verify_show_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    code, out, _ = run(capsys, "keygen", "--out-dir", str(keys))
    assert code == 0 and "key id:" in out
    priv, pub = keys / "blocklist-signing.key", keys / "blocklist-signing.pub"
    assert priv.stat().st_mode & 0o777 == 0o600
    code, _, err = run(capsys, "keygen", "--out-dir", str(keys))
    assert code == 1 and "--force" in err

    lists = tmp_path / "lists"
    lists.mkdir()
    full = write_lines(
        tmp_path / "full.jsonl",
        {"id": "a", "type": "url", "value": "http://demo.local/blocked/a", "notice": "N-1"},
        {"id": "b", "type": "prefix", "value": "http://demo.local/blocked/", "op": "add"},
        {"id": "c", "type": "host", "value": "pirate.example"},
    )
    v1 = lists / "blocklist-0000000001.jsonl"
    code, out, _ = run(capsys, "sign", "--key", str(priv), "--sequence", "1", str(full), str(v1))
    assert code == 0 and "3 adds" in out

    delta = write_lines(
        tmp_path / "delta.jsonl",
        {"op": "remove", "id": "a"},
        {"id": "d", "type": "sha256", "value": "ab" * 32},
    )
    v2 = lists / "blocklist-0000000002.jsonl"
    argv = ["sign", "--key", str(priv), "--sequence", "2", "--base", "1", str(delta), str(v2)]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "delta on 1" in out and "1 removes" in out

    code, out, _ = run(capsys, "verify", "--key", str(pub), str(v2))
    assert code == 0 and out.startswith(f"ok {v2}: sequence 2, signature ok")

    code, out, _ = run(capsys, "show", "--key", str(pub), str(lists))
    assert code == 0
    assert "sequence 1 (full)" in out and "sequence 2 (delta on 1)" in out
    assert "newest: sequence 2, 3 entries: url=0 prefix=1 host=1 sha256=1" in out

    code, out, _ = run(capsys, "show", "--key", str(pub), str(v1))
    assert code == 0 and "adds: url=1 prefix=1 host=1 sha256=0" in out


def test_sign_with_table_writes_the_companions_a_node_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sign --table`: the table and the signed manifest beside the version (a node maps
    them, tests/blocklist/test_shipped.py); full versions only."""
    from proxy.blocklist.shipped import Manifest, companions

    keys = tmp_path / "keys"
    run(capsys, "keygen", "--out-dir", str(keys))
    priv = keys / "blocklist-signing.key"
    src = write_lines(
        tmp_path / "full.jsonl",
        {"id": "a", "type": "url", "value": "http://demo.local/blocked/a?v=1"},
        {"id": "c", "type": "host", "value": "pirate.example"},
    )
    v1 = tmp_path / "blocklist-0000000001.jsonl"
    argv = ["sign", "--key", str(priv), "--sequence", "1", "--table", str(src), str(v1)]
    code, out, _ = run(capsys, *argv)
    table, manifest = companions(v1)
    assert code == 0 and f"compiled {table}: 2 entries" in out and v1.exists()
    signed = Manifest(**json.loads(manifest.read_text().splitlines()[0]))
    assert signed.sequence == 1 and signed.lines == 2 and signed.table_bytes == table.stat().st_size
    assert signed.counts == {"url": 1, "prefix": 0, "host": 1, "sha256": 0}
    argv = ["sign", "--key", str(priv), "--sequence", "2", "--base", "1", "--table", str(src)]
    code, _, err = run(capsys, *argv, str(tmp_path / "blocklist-0000000002.jsonl"))
    assert code == 1 and "full version only" in err


def test_verify_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "keygen", "--out-dir", str(tmp_path))
    priv, pub = tmp_path / "blocklist-signing.key", tmp_path / "blocklist-signing.pub"
    src = write_lines(tmp_path / "in.jsonl", {"id": "a", "type": "host", "value": "e.com"})
    out_file = tmp_path / "v.jsonl"
    run(capsys, "sign", "--key", str(priv), "--sequence", "5", str(src), str(out_file))
    out_file.write_bytes(out_file.read_bytes().replace(b"e.com", b"f.com"))
    code, out, err = run(capsys, "verify", "--key", str(pub), str(out_file))
    assert code == 1 and out == ""
    assert f"{out_file}:3: bad signature" in err
    code, out, _ = run(capsys, "show", "--key", str(pub), str(out_file))
    assert code == 1 and "INVALID bad signature" in out


def test_sign_refuses_bad_input_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "keygen", "--out-dir", str(tmp_path))
    priv = str(tmp_path / "blocklist-signing.key")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id":"a","type":"host","value":"e.com"}\n\n{"id":"b","type":"sha256"}\n')
    code, _, err = run(
        capsys, "sign", "--key", priv, "--sequence", "1", str(bad), str(tmp_path / "o.jsonl")
    )
    assert code == 1 and f"{bad}:3:" in err
    removes = write_lines(tmp_path / "r.jsonl", {"op": "remove", "id": "a"})
    code, _, err = run(
        capsys, "sign", "--key", priv, "--sequence", "1", str(removes), str(tmp_path / "o.jsonl")
    )
    assert code == 1 and "need a delta" in err
    code, _, err = run(
        capsys, "sign", "--key", "/nonexistent", "--sequence", "1", str(bad), str(tmp_path / "o")
    )
    assert code == 1 and "cannot read key" in err


def test_the_shipped_demo_version_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    pub = DEMO / "DEMO-ONLY-signing.pub"
    code, out, _ = run(capsys, "show", "--key", str(pub), str(DEMO))
    assert code == 0 and "newest: sequence 1, 6 entries" in out


# -- admin API client ------------------------------------------------------------------------


class FakeAdmin:
    """The lead's admin API contract, in memory."""

    def __init__(self) -> None:
        self.version = 1
        self.entries: dict[str, dict[str, Any]] = {}
        self.auth: list[str | None] = []
        self.bodies: list[Any] = []

    def applied(self) -> dict[str, Any]:
        workers = [
            {"worker": i, "pid": 100 + i, "version": self.version, "applied_at": 1.5e9}
            for i in range(2)
        ]
        return {"version": self.version, "applied_at": 1.5e9, "workers": workers}

    def app(self) -> web.Application:
        async def check(request: web.Request) -> None:
            self.auth.append(request.headers.get("Authorization"))
            if request.headers.get("Authorization") != "Bearer s3cret":
                raise web.HTTPUnauthorized(
                    text=json.dumps({"error": "missing or bad token"}),
                    content_type="application/json",
                )

        async def post(request: web.Request) -> web.Response:
            await check(request)
            body = await request.json()
            self.bodies.append(body)
            for e in body["entries"]:
                self.entries[e["id"]] = e
            self.version += 1
            return web.json_response(self.applied())

        async def delete(request: web.Request) -> web.Response:
            await check(request)
            if self.entries.pop(request.match_info["id"], None) is None:
                return web.json_response({"error": "no such entry"}, status=404)
            self.version += 1
            return web.json_response(self.applied())

        async def status(request: web.Request) -> web.Response:
            await check(request)
            answer = self.applied()
            answer["counts"] = {"url": len(self.entries), "prefix": 0, "host": 0, "sha256": 0}
            answer["history"] = [{"version": self.version, "applied_at": 1.5e9, "source": "admin"}]
            return web.json_response(answer)

        app = web.Application()
        app.router.add_post("/blocklist/entries", post)
        app.router.add_delete("/blocklist/entries/{id}", delete)
        app.router.add_get("/blocklist", status)
        return app


async def test_push_remove_status_against_the_admin_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = FakeAdmin()
    server = TestServer(admin.app(), host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"

    async def cli(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["blocklist", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    try:
        monkeypatch.delenv("EDGEPROXY_ADMIN_TOKEN", raising=False)
        code, _, err = await cli("status", "--admin", url)
        assert code == 1 and "edgeproxy blocklist status:" in err and "answered 401" in err
        assert "missing or bad token" in err and "EDGEPROXY_ADMIN_TOKEN" in err

        monkeypatch.setenv("EDGEPROXY_ADMIN_TOKEN", "s3cret")
        code, out, _ = await cli(
            "push", "--admin", url, "--id", "n/1", "--type", "url",
            "--value", "http://demo.local/blocked/x", "--notice", "N-1", "--reason", "copyright",
        )  # fmt: skip
        assert code == 0, out
        assert "applied version 2" in out and "in 2/2 workers" in out and "pid 101" in out
        assert admin.bodies[-1] == {
            "entries": [
                {
                    "id": "n/1",
                    "type": "url",
                    "value": "http://demo.local/blocked/x",
                    "notice": "N-1",
                    "reason": "copyright",
                }
            ]
        }
        assert admin.auth[-1] == "Bearer s3cret"

        many = write_lines(
            tmp_path / "e.jsonl",
            {"id": "a", "type": "host", "value": "a.example", "expires_at": 2e9},
            {"id": "b", "type": "prefix", "value": "http://b.example/p/"},
        )
        code, out, _ = await cli("push", "--admin", url, "--file", str(many))
        assert code == 0 and "pushed 2 entries" in out and "applied version 3" in out
        assert admin.bodies[-1]["entries"][0]["expires_at"] == 2e9

        code, _, err = await cli(
            "push", "--admin", url, "--id", "x", "--type", "sha256", "--value", "zz"
        )
        assert code == 1 and "64 hexadecimal" in err and len(admin.bodies) == 2

        code, out, _ = await cli("remove", "--admin", url, "n/1")
        assert code == 0 and "removed n/1" in out and "applied version 4" in out
        code, _, err = await cli("remove", "--admin", url, "n/1")
        assert code == 1 and "HTTP 404: no such entry" in err

        code, out, _ = await cli("status", "--admin", url)
        assert code == 0
        assert out.startswith(f"edgeproxy blocklist at {url}: version 4, 2 workers"), out
        assert "  entries: url 2, prefix 0, host 0, sha256 0" in out
        assert "    worker 1 (pid 101): blocklist version 4 applied 20" in out
        assert "from admin" in out
        code, out, _ = await cli("status", "--admin", url, "--json")
        assert code == 0 and json.loads(out)["version"] == 4
    finally:
        await server.close()

    code, _, err = await cli("status", "--admin", url, "--timeout", "2")
    assert code == 1 and f"edgeproxy blocklist status: cannot reach {url}" in err


def test_digest_gives_the_entry_value_of_a_coded_body(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gzip
    import hashlib

    import brotli

    body = b"DEMO BLOCKED BODY\n"
    plain = tmp_path / "body"
    plain.write_bytes(body)
    coded = tmp_path / "body.gz.br"
    coded.write_bytes(brotli.compress(gzip.compress(body)))
    want = hashlib.sha256(body).hexdigest()
    assert want.startswith("08b81f7d")  # the demo list's sha256 entry
    code, out, _ = run(capsys, "digest", str(plain))
    assert code == 0 and out == f"{want}  {plain}\n"
    code, out, err = run(capsys, "digest", "--content-encoding", "gzip, br", str(coded))
    assert code == 0 and out.split()[0] == want and "as received (gzip, br)" in err
    code, out, err = run(capsys, "digest", "--content-encoding", "gzip", str(coded))
    assert code == 1 and out == "" and "bad-coding" in err and "refuses" in err
    code, _, err = run(capsys, "digest", "--content-encoding", "compress", str(plain))
    assert code == 1 and "unknown-coding" in err
    code, _, err = run(capsys, "digest", str(tmp_path / "missing"))
    assert code == 1 and "missing" in err


def test_compile_writes_the_table_workers_load_and_shows_progress_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxy.blocklist.format import generate_keypair, version_filename, write_version
    from proxy.blocklist.model import Entry, EntryType
    from proxy.blocklist.table import MappedTable

    private, public = generate_keypair()
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public)
    lists = tmp_path / "lists"
    lists.mkdir()
    entries = [Entry(f"h{i}", EntryType.HOST, f"h{i}.example") for i in range(70000)]
    write_version(lists / version_filename(4), 4, entries, private_key_pem=private)
    out = tmp_path / "v4.map"
    code, stdout, err = run(capsys, "compile", "--key", str(pub), str(lists), str(out))
    assert code == 0 and "sequence 4, 70000 entries" in stdout
    assert err == ""  # stderr is no terminal here: quiet unless asked
    table = MappedTable(out)
    table.verify()
    assert table.version == 4 and table.entries == 70000
    code, _, err = run(
        capsys,
        "compile",
        "--progress",
        "--key",
        str(pub),
        str(lists / version_filename(4)),
        str(out),
    )
    assert code == 0
    assert "verify: 70,000 of 70,000 entries (100%)" in err
    assert "compile: 70,000 of 70,000 entries (100%)" in err
    code, _, err = run(
        capsys, "verify", "--progress", "--key", str(pub), str(lists / version_filename(4))
    )
    assert code == 0 and "verify: 70,000 of 70,000 entries (100%)" in err


@pytest.mark.parametrize("table", [False, True])
def test_a_refused_full_sign_leaves_nothing_beside_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: bool
) -> None:
    """A full version is signed as a stream (its input read line by line, twice with
    --table): a bad line or a repeated id found after thousands of good ones leaves no version,
    no companion and no temporary file beside OUT."""
    keys = tmp_path / "keys"
    run(capsys, "keygen", "--out-dir", str(keys))
    priv = str(keys / "blocklist-signing.key")
    good = [{"id": f"u{i}", "type": "url", "value": f"http://e.com/{i}"} for i in range(3000)]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "blocklist-0000000001.jsonl"
    flag = ["--table"] if table else []
    for tail, said in [
        ({"id": "x", "type": "sha256", "value": "no"}, "in.jsonl:3001:"),
        ({"id": "u17", "type": "host", "value": "e.org"}, "duplicate id"),
    ]:
        src = write_lines(tmp_path / "in.jsonl", *good, tail)
        code, _, err = run(
            capsys, "sign", "--key", priv, "--sequence", "1", *flag, str(src), str(out)
        )
        assert code == 1 and said in err
        assert list(out_dir.iterdir()) == []
    src = write_lines(tmp_path / "in.jsonl", *good)
    code, out_text, _ = run(
        capsys, "sign", "--key", priv, "--sequence", "1", *flag, str(src), str(out)
    )
    assert code == 0 and "3000 adds" in out_text
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [out.name]
        + (["blocklist-0000000001.manifest", "blocklist-0000000001.table"] if table else [])
    )
