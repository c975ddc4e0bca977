"""Shared fixtures: a real redis-server for the whole session, fake vendor
servers, and real `promptq worker` processes (see tests/worker_process.py)."""

from __future__ import annotations

import pytest

from tests.redis_server import RedisServer

pytest_plugins = ["tests.fakes.fixtures"]


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server
