"""Shared fixtures: a real redis-server for the whole session with a clean
client per test, fake vendor servers, and real `promptq worker` processes
(see tests/worker_process.py)."""

from __future__ import annotations

import pytest

from tests.seed_alias import install_seed_alias

# The user's seed tests import `providers.error_handling` and
# `providers.fallback_manager`; they must get promptq's own modules, not a
# second copy of the checkout's folder (two ProviderError classes would make
# `except` and `isinstance` silently stop matching).
install_seed_alias()

from tests.redis_server import RedisServer

pytest_plugins = ["tests.fakes.fixtures"]


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server):
    """A client of the session's server, flushed before the test and after it
    (so a test using it leaves nothing behind for tests that share the server)."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.flushall()
    client.close()
