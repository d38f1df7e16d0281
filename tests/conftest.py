"""Fixtures every test package may use."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 of this test's own, stopped by PID afterwards."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_root_handler_outlives_its_test() -> Iterator[None]:
    """A test that runs the CLI, a supervisor or a worker in this process configures the root
    logger to the stderr pytest captured for that test (`proxy.node.servicelog.configure`); a
    later test's thread (an SMTP server's) then logged into the closed stream ("--- Logging
    error ---" in the run's output). Such a handler goes with its test, and the root level
    is put back. pytest's own handlers (subclasses of StreamHandler) are pytest's to remove."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in before and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    root.setLevel(level)
