"""The tests' redis-server is the product's embedded one (workers.embedded_redis)."""

from promptq.workers.embedded_redis import RedisServer, RedisServerError, find_redis_server, free_port

__all__ = ["RedisServer", "RedisServerError", "find_redis_server", "free_port"]
