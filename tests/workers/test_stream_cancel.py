"""Cancelling a job while it streams: the worker hears of it at a chunk soon
after (the cancel flag is read in the round trip that sends its chunk
events), stops reading, and the job ends cancelled with a `cancelled` event
after every chunk it sent."""

from __future__ import annotations

import uuid

import pytest

from tests.worker_process import wait_for

pytestmark = pytest.mark.usefixtures("worker")


def test_cancel_while_streaming_stops_the_stream(client):
    words = " ".join(f"w{i}" for i in range(300))
    # 300 pieces, 20 ms apart: six seconds if nothing stops it.
    handle = client.submit(f"{words} [[fault:slow_stream:0.02]] #{uuid.uuid4().hex[:6]}",
                           to=["openai:gpt-4o-mini"], stream=True)
    wait_for(lambda: client.redis.xlen(client.keys.events(handle.id)) >= 5, 30, 0.02, "first chunks")
    assert client.cancel(handle.id) == "requested"
    record = client.result(handle.id, timeout=30)
    assert record.status.value == "cancelled"
    events = list(client.events(handle.id, timeout=10))
    chunks = [e for e in events if e["type"] == "chunk"]
    assert events[-1]["type"] == "cancelled"
    assert 5 <= len(chunks) < 300
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
