"""Issue 12: a full version dropped with its signer's compiled table (`blocklist sign --table`)
is mapped by a running node without a local compile, and enforced exactly as a compiled one:
url, prefix, query-keyed and sha256 entries, cached copies purged, pushes kept over it (also
in a worker started later). A table that fails its spot check is refused, counted by reason,
and the version is compiled locally: never a listed URL served meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.blocklist import shipped
from proxy.blocklist.format import generate_keypair, render_version, version_filename, write_atomic
from proxy.blocklist.model import Entry, EntryType
from proxy.blocklist.table import write_table
from tests.blocklist.test_shipped import vouch
from tests.integration.node import Node, eventually

BODY_OF = "/digest/x"  # its body is listed by digest
DIGEST = hashlib.sha256(f"content of {BODY_OF}".encode()).hexdigest()


def origin_app(seen: list[str]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(
            text=f"content of {request.path}", headers={"Cache-Control": "max-age=300"}
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


async def status(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        await r.read()
        return r.status


async def counters(node: Node, name: str) -> dict[str, float]:
    """A counter's samples by their first label's value ("" when it has none)."""
    async with aiohttp.ClientSession() as s, s.get(node.admin + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == name + "_total":
                out[next(iter(sample.labels.values()), "")] = sample.value
    return out


async def sign_with_table(key: Path, sequence: int, entries: list[Entry], out: Path) -> None:
    """The operator's command: `edgeproxy blocklist sign --table`."""
    source = out.with_name(f"entries-{sequence}.src")
    source.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in entries))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.cli", "blocklist", "sign", "--key", str(key),
        "--sequence", str(sequence), "--table", str(source), str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await proc.communicate()
    assert proc.returncode == 0, output.decode()


V2 = [
    Entry("u", EntryType.URL, "http://127.0.0.1/later/y", notice="N-u"),
    Entry("q", EntryType.URL, "http://127.0.0.1/watch?v=42"),
    Entry("p", EntryType.PREFIX, "http://127.0.0.1/manga/"),
    Entry("h", EntryType.HOST, "pirate.invalid"),
    Entry("d", EntryType.SHA256, DIGEST),
    *(Entry(f"n{i}", EntryType.URL, f"http://127.0.0.1/n/{i}") for i in range(60)),
]


@pytest.mark.parametrize(
    ("install", "check"), [("copy", "thread"), ("link", "child"), ("link", "sealed")]
)
async def test_a_shipped_table_is_enforced_without_a_local_compile(
    origin_server, tmp_path: Path, install: str, check: str
) -> None:
    """`check`: workers check every byte of each table themselves (`worker_check_whole`) in a
    thread, or (`check_in_child_min_bytes = 0`) in a child process, as they do tables of
    64 MiB and more; or, as by default, map the file the supervisor checked (its seal)."""
    private, public = generate_keypair()
    (tmp_path / "key.pem").write_bytes(private)
    (tmp_path / "pub.pem").write_bytes(public)
    seen: list[str] = []
    origin = await origin_server(origin_app(seen))
    lists = tmp_path / "lists"
    lists.mkdir()
    first = [Entry("a", EntryType.PREFIX, "http://127.0.0.1/listed/")]
    write_atomic(lists / version_filename(1), render_version(1, first, private_key_pem=private))
    config = tmp_path / "edge.toml"  # `--origin` replaces the site; a config file needs one
    config.write_text(
        f'[blocklist]\ntable_install = "{install}"\n'
        f"check_in_child_min_bytes = {0 if check == 'child' else 1 << 26}\n"
        f"worker_check_whole = {'false' if check == 'sealed' else 'true'}\n\n"
        f'[[sites]]\nname = "default"\nhosts = ["*"]\norigin = "{origin}"\n'
    )
    node = Node.on_dir(origin, lists, tmp_path / "pub.pem", "--config", str(config), workers=2)
    await node.start()
    try:
        # cached before they are listed: the version's load must purge them
        for path in ("/later/y", "/manga/one", BODY_OF, "/watch?v=42&t=1"):
            assert await status(node.url + path) == 200
        pushed = {"id": "x", "type": "url", "value": "http://127.0.0.1/pushed"}
        code, _ = await node.admin_json("POST", "/blocklist/entries", {"entries": [pushed]})
        assert code == 200
        await sign_with_table(tmp_path / "key.pem", 2, V2, lists / version_filename(2))

        async def shipped_in() -> bool:
            return (await counters(node, "edgeproxy_blocklist_tables_shipped")).get("") == 1

        await eventually(shipped_in, timeout_s=20, what="the shipped table taken")
        table2 = shipped.companions(lists / version_filename(2))[0]
        # linked: the node's state names the shipped inode (made read-only); copied: it does not
        assert table2.stat().st_nlink == (1 if install == "copy" else 3)
        assert bool(table2.stat().st_mode & 0o222) == (install == "copy")
        compiles = (await counters(node, "edgeproxy_blocklist_compiles"))[""]

        async def applied() -> bool:  # every worker answered that it enforces version 2
            _, listing = await node.admin_json("GET", "/blocklist")
            return any(h["source"] == "file:2" for h in listing["history"])

        await eventually(applied, timeout_s=20, what="version 2 applied by every worker")

        async def pinned() -> bool:  # the supervisor locks the table's probe sections
            async with aiohttp.ClientSession() as s, s.get(node.admin + "/metrics") as r:
                text = await r.text()
            got = {
                sample.name: sample.value
                for fam in text_string_to_metric_families(text)
                for sample in fam.samples
                if sample.name.startswith("edgeproxy_blocklist_pin")
            }
            locked = got["edgeproxy_blocklist_pinned_bytes"]
            return locked > 0 and got["edgeproxy_blocklist_pin_failures_total"] == 0

        await eventually(pinned, what="the table's probe sections locked in memory")
        # each of the 2 workers took version 1 at start and version 2 now
        taken = await counters(node, "edgeproxy_blocklist_worker_tables")
        assert taken == ({"whole": 0, "sealed": 4} if check == "sealed" else
                         {"whole": 4, "sealed": 0})  # fmt: skip
        for p in ["/later/y", "/manga/one", BODY_OF, "/watch?t=1&v=42", "/n/59", "/pushed"]:
            assert await status(node.url + p) == 451, p
        assert await status(node.url + "/watch?v=43") == 200
        assert await status(node.url + "/listed/x") == 200  # version 1 is replaced
        assert await counters(node, "edgeproxy_blocklist_table_rejected") == {}
        # A worker started now maps the shipped table with the push as its overlay.
        await node.kill_worker_and_wait(0)
        for _ in range(4):  # both workers answer in turn
            assert await status(node.url + "/pushed") == 451
            assert await status(node.url + "/later/y") == 451

        # Version 3's table lacks half its entries (valid, vouched for): the spot check
        # catches it, the version is compiled here, and every entry is enforced.
        v3 = [*V2, Entry("v3", EntryType.URL, "http://127.0.0.1/new/in/3")]
        path3 = lists / version_filename(3)
        data3 = render_version(3, v3, private_key_pem=private)
        table, manifest = shipped.companions(path3)
        shipped.write_companions(path3, data3, v3, private)
        write_table(table, v3[1::2], 3, time.time())
        vouch(manifest, table, private)
        write_atomic(path3, data3)

        async def refused() -> bool:
            got = await counters(node, "edgeproxy_blocklist_table_rejected")
            return got.get("spot-check") == 1

        await eventually(refused, timeout_s=20, what="the bad table refused")

        async def v3_enforced() -> bool:
            return await status(node.url + "/new/in/3") == 451

        await eventually(v3_enforced, what="version 3 enforced")
        assert (await counters(node, "edgeproxy_blocklist_compiles"))[""] > compiles
        assert (await counters(node, "edgeproxy_blocklist_tables_shipped"))[""] == 1
        for path in ("/later/y", "/n/0", "/n/1", "/pushed", BODY_OF):
            assert await status(node.url + path) == 451
        listed_fetches = [p for p in seen if p.startswith(("/new/", "/n/", "/pushed"))]
        assert listed_fetches == []  # never fetched (nor served) once listed
        assert "shipped table rejected (spot-check)" in "".join(node.output)
    finally:
        await node.stop()
