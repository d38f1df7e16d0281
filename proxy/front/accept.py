"""Accepting on the listen socket a node's workers share, so that connections spread over them.

Every worker of a node accepts on the one socket the supervisor bound (proxy/node/supervisor.py
says why it is one socket and not one per worker). uvloop's own server accepts in libuv's loop,
which takes every pending connection before it returns to its poll: whichever worker wakes first
takes a whole burst. Measured (a node of 2 workers, wrk opening 64 connections): 64/0, 54/10
and 27/37 in three rounds. A worker holding all the connections serves them on one core while
the other idles (a round that went 64/0 served 44k req/s against 47-48k in the others, on a
loaded machine) and its run queue lengthens the tail. (libuv's `UV_TCP_SINGLE_ACCEPT`, which
sleeps between accepts, changed nothing here.)

Accepting one connection a loop turn (nginx's `multi_accept off`) is not enough either: on a
machine whose cores are all busy, the worker that is running accepts again before the one
woken beside it is given a core (measured: 64/0, 12/52, 13/51). So the workers also share
their counts of open connections (`ConnectionShares`: one int32 slot per worker in a memfd the
supervisor creates and every worker maps), and `SharedListener` works thus:

- at most `per_turn` connections each time the loop finds the socket readable (1 by default);
- a worker holding more than its fair share (the node's open connections over the number of
  workers, plus one) does not accept for `defer_s`, leaving the connection to a worker with
  fewer; once that time has passed it accepts one anyway, so a connection never waits on a
  worker that is stuck or gone for more than `defer_s`;
- on a quiet node (at most one open connection per worker) the counts cannot tell the workers
  apart: a client that opens one connection after another, each closed before the next, finds
  every count at 0 or 1, and the worker the kernel wakes first took all of them (seen: 34 of 34
  requests in a test under load). So the workers also share which of them accepted last, and on a
  quiet node that worker leaves the next connection to the others the same way;
- each accepted socket goes to the loop's `connect_accepted_socket`: the same transport
  (TCP_NODELAY, TLS) that uvloop's server would make.

What it costs: a new connection goes through Python here (accept, the transport's setup, a
descriptor check), about 10-25 µs more than uvloop's accept in C (measured with a new
connection per request on a loaded machine: ~60 -> ~85 µs of the worker's CPU per
connection); nothing once a connection is open. `accept_defer_s = 0` turns balancing off and
gives the socket back to uvloop's own accept, for an edge whose clients open a connection per
request.

Why not per-worker SO_REUSEPORT sockets, which the kernel balances by a hash: see the
supervisor's docstring (any process of the same user could join the group and take a share).

An accept that fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) stops accepting for
`error_pause_s`, as asyncio's own server does, instead of spinning on a readable socket;
connections wait in the backlog meanwhile. Other errors (the peer gone before accept) drop that
one connection.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mmap
import os
import socket
from collections.abc import Callable, Coroutine
from functools import partial
from ssl import SSLContext
from typing import Any

log = logging.getLogger(__name__)

_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ConnectionShares:
    """Open connections per worker, one int32 slot each, and which worker accepted last, in
    shared memory.

    The supervisor `create`s the memfd and passes it to every worker, which maps it with its
    own slot. A slot is written only by its worker (zeroed when a worker of that index maps
    it, so a restarted worker does not inherit a dead one's count), read by all: an aligned
    4-byte store is atomic, and a count a moment old only makes a share a little off. The last
    word (`LAST`) holds the slot of the worker that accepted last, plus one; every worker writes
    it, and a write lost to a race only lets one worker take two connections in a row."""

    SLOTS = 1024  # worker indices beyond it share slots (modulo): the shares get coarser
    LAST = SLOTS  # the word after the slots

    def __init__(self, fd: int, slot: int = 0, workers: int = 1) -> None:
        self._map = mmap.mmap(fd, 4 * (self.SLOTS + 1))
        self.counts = memoryview(self._map).cast("i")
        self._slot = slot % self.SLOTS
        self._workers = max(1, min(workers, self.SLOTS))
        self.counts[self._slot] = 0

    @classmethod
    def create(cls) -> int:
        """A new zeroed memfd for a node (inheritable by `pass_fds`)."""
        fd = os.memfd_create("edgeproxy-connections", 0)
        os.ftruncate(fd, 4 * (cls.SLOTS + 1))
        return fd

    def set(self, count: int) -> None:
        self.counts[self._slot] = count

    def accepted(self) -> None:
        """This worker accepted the node's latest connection."""
        self.counts[self.LAST] = self._slot + 1

    def should_leave(self) -> bool:
        """Should this worker leave the next connection to the others: does it hold more than
        the node's open connections over its workers, plus one, or, on a quiet node (no more
        open connections than workers), did it accept the last one?"""
        n = self._workers
        if n == 1:
            return False
        counts = self.counts
        total = sum(counts[:n])
        if total <= n:
            return counts[self.LAST] == self._slot + 1
        return counts[self._slot] * n > total + n

    def close(self) -> None:
        self.counts.release()
        self._map.close()


class _Accepted:
    """What `connect_accepted_socket` reads of an accepted socket: its descriptor, family and
    type. The transport closes the descriptor; `close` here is then a no-op (uvloop calls it,
    expecting EBADF from a socket whose descriptor it already closed)."""

    __slots__ = ("_fd", "family")
    type = socket.SOCK_STREAM

    def __init__(self, fd: int, family: int) -> None:
        self._fd = fd
        self.family = family

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        pass


class SharedListener:
    """Accepts on `sock` (bound; listening, or made to listen with `backlog`) for `factory`.

    It answers what the front asks of an `asyncio.Server`: `sockets`, `close()`,
    `wait_closed()`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        per_turn: int = 1,
        error_pause_s: float = 0.5,
        shares: ConnectionShares | None = None,
        defer_s: float = 0.001,
        backlog: int = 1024,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout_s: float | None = None,
    ) -> None:
        self.sockets = [sock]
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._family = int(sock.family)
        # uvloop reads only the descriptor of an accepted socket; asyncio's own loop uses the
        # socket object for its transport's every read and write
        self._bare = type(loop).__module__.startswith("uvloop")
        self._factory = factory
        self._per_turn = per_turn
        self._error_pause_s = error_pause_s
        self._shares = shares
        self._defer_s = defer_s
        self._deferred = False  # the last readable turn was left to the other workers
        self.deferrals = 0  # turns left to the other workers, for tests and status
        self._tls: dict[str, Any] = {}
        if ssl is not None:
            self._tls = {"ssl": ssl, "ssl_handshake_timeout": ssl_handshake_timeout_s}
        self._handing: dict[Coroutine[Any, Any, Any], asyncio.Future[Any]] = {}  # being set up
        self._resume: asyncio.TimerHandle | None = None
        self._closed = False
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(backlog)  # else keep the supervisor's backlog
        sock.setblocking(False)
        loop.add_reader(self._fd, self._accept)

    def _accept(self) -> None:
        shares = self._shares
        if shares is not None and not self._deferred and shares.should_leave():
            self._deferred = True
            self.deferrals += 1
            self._loop.remove_reader(self._fd)
            self._resume = self._loop.call_later(self._defer_s, self._listen_again)
            return
        self._deferred = False
        for _ in range(self._per_turn):
            try:
                fd, _ = self._sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return  # another worker took it
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.error(
                        "front: accept failed (%s); not accepting for %.2f s",
                        exc,
                        self._error_pause_s,
                    )
                    self._loop.remove_reader(self._fd)
                    self._resume = self._loop.call_later(self._error_pause_s, self._listen_again)
                return  # ECONNABORTED and the like: that connection is gone, not the socket
            if shares is not None:
                shares.accepted()
            self._hand_over(fd)

    def _hand_over(self, fd: int) -> None:
        # The loop's coroutine makes the transport in its first step and then only waits for
        # `connection_made` (or the TLS handshake): it is stepped here, without a Task, as a
        # Task would step it. uvloop is given the bare descriptor (`_Accepted`), not a
        # `socket.socket`, whose making and enum properties cost more than the rest.
        accepted: Any = _Accepted(fd, self._family)
        if not self._bare:
            accepted = socket.socket(self._family, socket.SOCK_STREAM, fileno=fd)
        self._step(self._loop.connect_accepted_socket(self._factory, accepted, **self._tls))

    def _step(self, setup: Coroutine[Any, Any, Any], waited: Any = None) -> None:
        try:
            waiter = setup.send(None)
        except StopIteration:
            self._handing.pop(setup, None)
            return
        except Exception as exc:  # a TLS handshake that failed or timed out: closed already
            self._handing.pop(setup, None)
            log.debug("front: accepted connection not set up: %r", exc)
            return
        waiter._asyncio_future_blocking = False
        self._handing[setup] = waiter
        waiter.add_done_callback(partial(self._step, setup))

    def _listen_again(self) -> None:
        self._resume = None
        if not self._closed:
            self._loop.add_reader(self._fd, self._accept)

    def close(self) -> None:
        """Stop accepting and close this process's copy of the socket (the supervisor's stays
        open for the other workers)."""
        if self._closed:
            return
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        else:
            self._loop.remove_reader(self._fd)
        self._sock.close()

    async def wait_closed(self) -> None:
        """Connections still being set up finish being set up (or fail)."""
        while self._handing:
            await asyncio.wait(list(self._handing.values()))
            await asyncio.sleep(0)  # their last steps
