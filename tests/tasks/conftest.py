"""Fixtures for the queue-layer tests: the store / publisher a worker would
use, a producer `Client`, and a reader for the Celery messages kombu leaves in
a provider's Redis list. The real redis-server (one per session) and
`redis_client` (flushed before every test) come from tests/conftest.py."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List

import pytest

from promptq.tasks.events import EventPublisher
from promptq.tasks.keys import Keys
from promptq.tasks.settings import Settings
from promptq.tasks.store import JobStore


@pytest.fixture
def settings(redis_server, redis_client) -> Settings:
    # redis_client first: the database is flushed before anything is built on it.
    return Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url})


@pytest.fixture
def keys() -> Keys:
    return Keys("promptq")


@pytest.fixture
def store(redis_client, keys) -> JobStore:
    return JobStore(redis_client, keys, result_ttl_s=600)


@pytest.fixture
def publisher(redis_client, keys) -> EventPublisher:
    return EventPublisher(redis_client, keys, maxlen=1000, ttl_s=600)


@pytest.fixture
def client(settings):
    from promptq.tasks.client import Client

    producer = Client(settings)
    yield producer
    producer.close()
    producer.app.close()


def decode_message(raw: bytes) -> Dict[str, Any]:
    """One kombu Redis envelope -> {'envelope', 'headers', 'args', 'kwargs'}; JSON only."""
    envelope = json.loads(raw)
    assert envelope["content-type"] == "application/json", envelope["content-type"]
    assert envelope["properties"]["body_encoding"] == "base64"
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    return {"envelope": envelope, "headers": envelope["headers"], "args": args, "kwargs": kwargs}


@pytest.fixture
def queue_messages(redis_client):
    """`queue_messages("promptq.openai")` -> the decoded messages waiting there, oldest first."""

    def read(queue: str) -> List[Dict[str, Any]]:
        # kombu LPUSHes and BRPOPs: the oldest message is at the right end.
        return [decode_message(raw) for raw in reversed(redis_client.lrange(queue, 0, -1))]

    return read
