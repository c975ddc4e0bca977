"""Cancelling a running job: the worker process hears it by pub/sub (one
subscriber per process, tasks.cancel) and stops within a second -- a streamed
job at its next chunk, a non-streamed one by abandoning its HTTP call -- and
the record says `cancelled`."""

from __future__ import annotations

import uuid

import pytest

from tests.worker_process import wait_for

pytestmark = pytest.mark.usefixtures("worker")


def test_cancel_while_streaming_stops_the_stream(client):
    words = " ".join(f"w{i}" for i in range(300))
    # 300 pieces, 50 ms apart: fifteen seconds if nothing stops it.
    handle = client.submit(f"{words} [[fault:slow_stream:0.05]] #{uuid.uuid4().hex[:6]}",
                           to=["openai:gpt-4o-mini"], stream=True)
    wait_for(lambda: client.redis.xlen(client.keys.events(handle.id)) >= 5, 30, 0.02, "first chunks")
    assert client.cancel(handle.id) == "requested"
    # Within a few chunks, not at a periodic Redis read of the flag.
    record = client.result(handle.id, timeout=5)
    assert record.status.value == "cancelled"
    events = list(client.events(handle.id, timeout=10))
    chunks = [e for e in events if e["type"] == "chunk"]
    assert events[-1]["type"] == "cancelled"
    assert 5 <= len(chunks) < 100
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_cancel_abandons_a_non_streamed_call(client, fakes):
    openai, _ = fakes
    # The fake answers after 30 s; the cancel must not wait for it.
    prompt = f"think hard [[fault:slow:30]] #{uuid.uuid4().hex[:6]}"
    handle = client.submit(prompt, to=["openai:gpt-4o-mini"])
    # The call, not the start, is what must be abandoned: wait until it reached the fake.
    wait_for(lambda: any(prompt[-7:] in str(r.body) for r in openai.requests), 30, 0.02, "the call")
    assert client.cancel(handle.id) == "requested"
    record = client.result(handle.id, timeout=5)
    assert record.status.value == "cancelled"
    assert record.error and "cancelled" in record.error["message"]
    # The worker is free again: a next job is answered at once.
    again = client.submit(f"after #{uuid.uuid4().hex[:6]}", to=["openai:gpt-4o-mini"])
    assert again.result(timeout=10).status.value == "succeeded"
