"""Accepting on a listen socket shared by a node's workers (proxy/front/accept.py): the workers'
connection counts are shared, a worker over its share leaves a new connection to the others for
`accept_defer_s` and then takes it anyway, and running out of descriptors pauses accepting
instead of spinning. The split itself, over real workers, is tests/node/test_accept_balance.py."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket

import pytest

from proxy.front.accept import ConnectionShares, SharedListener
from proxy.front.limits import FrontLimits
from proxy.front.server import FrontServer
from tests.front.conftest import ok_handler, read_response

GET = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"


@pytest.fixture
def shares_fd():
    fd = ConnectionShares.create()
    yield fd
    os.close(fd)


def test_every_worker_sees_the_others_counts(shares_fd: int) -> None:
    first = ConnectionShares(shares_fd, slot=0, workers=2)
    second = ConnectionShares(shares_fd, slot=1, workers=2)
    first.set(5)
    second.set(3)
    assert list(second.counts[:2]) == [5, 3]
    assert not first.should_leave()  # 5 of 8: a fair share (4) plus one
    first.set(6)
    assert first.should_leave() and not second.should_leave()
    second.set(0)  # a worker that restarts at an index starts from nothing
    third = ConnectionShares(shares_fd, slot=1, workers=2)
    assert third.counts[1] == 0 and first.should_leave()
    for s in (first, second, third):
        s.close()


def test_a_slot_past_the_array_wraps_instead_of_writing_outside(shares_fd: int) -> None:
    near = ConnectionShares(shares_fd, slot=2, workers=3)
    far = ConnectionShares(shares_fd, slot=ConnectionShares.SLOTS + 2, workers=2)
    far.set(7)
    assert near.counts[2] == 7
    far.close()
    near.close()


async def served(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET)
    assert (await read_response(reader)).status == 200
    return reader, writer


async def start(
    sock: socket.socket, shares: ConnectionShares | None, **limits: float
) -> FrontServer:
    server = FrontServer(ok_handler, FrontLimits(**limits))  # type: ignore[arg-type]
    server.connection_shares = shares
    sock.bind(("127.0.0.1", 0))
    await server.start(sock=sock)
    return server


async def test_a_worker_over_its_share_leaves_a_connection_then_takes_it(shares_fd) -> None:
    mine = ConnectionShares(shares_fd, slot=0, workers=2)
    other = ConnectionShares(shares_fd, slot=1, workers=2)  # a worker with none
    server = await start(socket.socket(), mine, accept_defer_s=0.05)
    conns = []
    for _ in range(3):  # 3 of 3: over 1.5 + 1 from now on
        other.accepted()  # so that the quiet node's turn-taking is not what defers
        conns.append(await served(server.port))
    assert server.accepts_deferred == 0 and mine.counts[0] == 3
    other.accepted()
    conns.append(await served(server.port))  # nobody else took it: served after the deferral
    assert server.accepts_deferred == 1 and mine.counts[0] == 4
    for _, writer in conns:
        writer.close()
    await server.drain_and_close(1.0)
    assert mine.counts[0] == 0
    mine.close()
    other.close()


async def test_on_a_quiet_node_the_worker_that_took_the_last_leaves_the_next(shares_fd) -> None:
    """A client opening one connection after another, each closed before the next, leaves
    every count at 0 or 1: the counts cannot split them, so the worker that accepted last
    leaves the next to the others (and takes it after the deferral when nobody does)."""
    mine = ConnectionShares(shares_fd, slot=0, workers=2)
    other = ConnectionShares(shares_fd, slot=1, workers=2)
    server = await start(socket.socket(), mine, accept_defer_s=0.05)

    async def one_connection() -> None:
        _, writer = await served(server.port)
        writer.close()
        await writer.wait_closed()

    await one_connection()  # nobody accepted before: taken at once
    assert server.accepts_deferred == 0 and mine.counts[mine.LAST] == 1
    await one_connection()  # this worker took the last: left, then taken
    assert server.accepts_deferred == 1
    other.accepted()
    await one_connection()  # the other worker took the last: taken at once
    assert server.accepts_deferred == 1 and mine.counts[mine.LAST] == 1
    await server.drain_and_close(1.0)
    mine.close()
    other.close()


def test_a_lone_worker_never_leaves_a_connection(shares_fd: int) -> None:
    alone = ConnectionShares(shares_fd, slot=0, workers=1)
    alone.accepted()
    assert not alone.should_leave()
    alone.set(50)
    assert not alone.should_leave()
    alone.close()


async def test_with_deferral_off_the_loop_accepts_every_connection(shares_fd) -> None:
    mine = ConnectionShares(shares_fd, slot=0, workers=2)
    server = await start(socket.socket(), mine, accept_defer_s=0)
    assert not isinstance(server._server, SharedListener)  # the loop's own accept
    conns = [await served(server.port) for _ in range(5)]
    assert server.accepts_deferred == 0 and mine.counts[0] == 5  # still counted
    for _, writer in conns:
        writer.close()
    await server.drain_and_close(1.0)
    mine.close()


class OutOfDescriptors(socket.socket):
    """A listen socket whose first `failures` accepts fail with EMFILE."""

    failures = 1

    def _accept(self):  # type: ignore[override]
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super()._accept()


async def test_out_of_descriptors_pauses_accepting_then_serves(caplog, shares_fd) -> None:
    sock = OutOfDescriptors()
    mine = ConnectionShares(shares_fd, slot=0, workers=2)
    server = await start(sock, mine, accept_error_pause_s=0.05)
    with caplog.at_level(logging.ERROR, logger="proxy.front.accept"):
        reader, writer = await served(server.port)  # waits in the backlog through the pause
    assert sock.failures == 0
    assert any("not accepting for 0.05 s" in r.getMessage() for r in caplog.records)
    writer.close()
    await server.drain_and_close(1.0)
    mine.close()
