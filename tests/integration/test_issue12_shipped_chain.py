"""Issue 12: a running node applies deltas dropped over a shipped version as changes over its
table, and a restarted node maps the table it kept in its state and applies the deltas dropped
while it was down: `edgeproxy_blocklist_compiles_total` does not move (no compile job at all
after the restart), and every entry of the base and of each delta (adds and removes) is
enforced by every worker."""

from __future__ import annotations

from pathlib import Path

from proxy.blocklist.format import generate_keypair, version_filename, write_version
from proxy.blocklist.model import Entry, EntryType
from tests.integration.node import Node, eventually
from tests.integration.test_issue12_shipped_table import (
    counters,
    origin_app,
    sign_with_table,
    status,
)

BASE = [
    Entry("m", EntryType.PREFIX, "http://127.0.0.1/manga/"),
    *(Entry(f"b{i}", EntryType.URL, f"http://127.0.0.1/b/{i}") for i in range(200)),
]
# sequence: (adds, removes); 2 and 3 dropped together on a running node, 4 while it is down
DELTAS = {
    2: ([Entry("d2", EntryType.URL, "http://127.0.0.1/d2/a"),
         Entry("p2", EntryType.PREFIX, "http://127.0.0.1/p2/")], ["b0"]),
    3: ([Entry("d3", EntryType.URL, "http://127.0.0.1/d3/a")], ["p2"]),
    4: ([Entry("d4", EntryType.URL, "http://127.0.0.1/d4/a")], ["b1", "m"]),
}  # fmt: skip


def drop(lists: Path, key: bytes, sequence: int) -> None:
    adds, removes = DELTAS[sequence]
    path = lists / version_filename(sequence)
    write_version(path, sequence, adds, base=sequence - 1, removes=removes, private_key_pem=key)


async def enforced(node: Node, listed: list[str], unlisted: list[str]) -> bool:
    # Twice each: both workers answer in turn.
    got = [await status(node.url + p) for p in [*listed, *unlisted] * 2]
    return got == ([451] * len(listed) + [200] * len(unlisted)) * 2


async def test_deltas_over_a_shipped_table_and_a_restart_compile_nothing(
    origin_server, tmp_path: Path
) -> None:
    private, public = generate_keypair()
    (tmp_path / "key.pem").write_bytes(private)
    (tmp_path / "pub.pem").write_bytes(public)
    origin = await origin_server(origin_app([]))
    lists = tmp_path / "lists"
    lists.mkdir()
    await sign_with_table(tmp_path / "key.pem", 1, BASE, lists / version_filename(1))
    node = Node.on_dir(origin, lists, tmp_path / "pub.pem", workers=2)
    await node.start()
    try:
        assert (await counters(node, "edgeproxy_blocklist_tables_shipped"))[""] == 1
        compiles = (await counters(node, "edgeproxy_blocklist_compiles"))[""]
        assert await enforced(node, ["/b/0", "/b/199", "/manga/x"], ["/d2/a"])
        drop(lists, private, 2)
        drop(lists, private, 3)

        async def at_3() -> bool:
            return await enforced(
                node, ["/b/1", "/b/199", "/manga/x", "/d2/a", "/d3/a"], ["/b/0", "/p2/x"]
            )

        await eventually(at_3, timeout_s=20, what="deltas 2 and 3 enforced")
        assert (await counters(node, "edgeproxy_blocklist_compiles"))[""] == compiles
        assert await counters(node, "edgeproxy_blocklist_reload_failures") == {"": 0.0}
    finally:
        assert await node.stop() == 0
    drop(lists, private, 4)
    await node.start()  # the same state directory
    try:
        listed = ["/b/2", "/b/199", "/d2/a", "/d3/a", "/d4/a"]
        assert await enforced(node, listed, ["/b/0", "/b/1", "/p2/x", "/manga/x"])
        assert (await counters(node, "edgeproxy_blocklist_compiles"))[""] == 0
        assert (await counters(node, "edgeproxy_blocklist_tables_shipped"))[""] == 0
        assert "mapped from its table kept by the last run" in "".join(node.output)
        # A worker started now maps the kept table and replays the deltas.
        await node.kill_worker_and_wait(0)
        assert await enforced(node, listed, ["/b/0", "/b/1", "/p2/x", "/manga/x"])
    finally:
        await node.stop()
