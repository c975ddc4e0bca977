"""Which redis-server the tests, the demo and the benchmark start."""

from __future__ import annotations

import pytest

from promptq.workers.embedded_redis import RedisServer, RedisServerError, find_redis_server


def test_promptq_redis_server_names_the_binary_to_start(monkeypatch, tmp_path):
    monkeypatch.delenv("PROMPTQ_REDIS_SERVER", raising=False)
    default = find_redis_server()
    monkeypatch.setenv("PROMPTQ_REDIS_SERVER", default)
    server = RedisServer().start()  # the named binary really serves
    try:
        assert server.executable == default and server.client().ping()
    finally:
        server.stop()


def test_a_promptq_redis_server_that_is_not_executable_is_named_in_the_error(monkeypatch, tmp_path):
    bogus = tmp_path / "redis-server"
    bogus.write_text("not a program")
    monkeypatch.setenv("PROMPTQ_REDIS_SERVER", str(bogus))
    with pytest.raises(RedisServerError, match="PROMPTQ_REDIS_SERVER=.*not an executable"):
        find_redis_server()
