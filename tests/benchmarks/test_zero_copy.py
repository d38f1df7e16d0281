"""benchmarks/zero_copy.py: every mode answers the object asked for, byte for byte, on a kept-alive
connection (so the CPU figures compare servers that do the same work), and the driver runs."""

from __future__ import annotations

import asyncio

import lmdb
import pytest

from benchmarks import zero_copy
from benchmarks.targets import free_port

SIZE = 200_000  # larger than a socket's first send: partial writes are exercised


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("zero-copy")
    zero_copy.prepare(d, 5, SIZE)
    env = lmdb.open(str(d / "lmdb"), readonly=True, lock=False)
    with env.begin() as txn:  # the files and the database hold the same bodies
        assert all(txn.get(b"%d" % i) == (d / "files" / str(i)).read_bytes() for i in range(5))
    env.close()
    return d


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> bytes:
    writer.write(b"GET /o/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


@pytest.mark.parametrize("mode", zero_copy.MODES)
async def test_each_mode_serves_the_stored_bodies(workdir, mode) -> None:
    port = free_port()
    server = asyncio.ensure_future(zero_copy._serve(mode, workdir, 5, SIZE, port))
    try:
        for _ in range(200):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.01)
        for i in (3, 0, 4, 3):  # one connection, several requests
            body = await _get(reader, writer, i)
            assert body == (workdir / "files" / str(i)).read_bytes()
            assert body != (workdir / "files" / str((i + 1) % 5)).read_bytes()
        writer.close()
    finally:
        server.cancel()


def test_the_driver_prints_a_row_per_mode(capsys) -> None:
    assert (
        zero_copy.main(["--kib", "16", "--objects", "10", "--duration-s", "1", "--rounds", "1"])
        == 0
    )
    out = capsys.readouterr().out
    for mode in zero_copy.MODES:
        assert f"| {mode} | " in out
