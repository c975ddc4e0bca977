"""tasks.task_events: Celery's task events reach a monitor in batches.

A real worker runs jobs on the fake OpenAI server; this test listens on the
Redis channels Celery's events go out on (as Flower does) and reads every
message. Each job's received / started / succeeded events all arrive, and
they come in `task.multi` batches sent at most once per EVENT_FLUSH_S (plus
one per EVENT_BUFFER_LIMIT events), not one round trip per event or per job.
"""

from __future__ import annotations

import base64
import json
import time

from promptq.tasks.task_events import EVENT_BUFFER_LIMIT, EVENT_FLUSH_S
from tests.worker_process import wait_for

JOBS = 40


def test_task_events_arrive_complete_and_batched(worker, client, redis_server):
    listener = redis_server.client().pubsub()
    listener.psubscribe("*celeryev/task*")
    wait_for(lambda: listener.get_message(timeout=0.1) is not None, 10, message="the subscription")  # psubscribe confirmed
    ids = [client.submit(f"evented {i}", to=["openai:gpt-4o-mini"]).id for i in range(JOBS)]
    seen: dict = {job_id: set() for job_id in ids}
    messages, first, last = 0, None, None

    def all_seen() -> bool:
        nonlocal messages, first, last
        message = listener.get_message(timeout=0.2)
        while message is not None:
            # task-sent events are a producer's (a worker's failover sends them), not this count's.
            if message["type"] == "pmessage" and not message["channel"].endswith(b"task.sent"):
                now = time.monotonic()
                first, last, messages = first or now, now, messages + 1
                envelope = json.loads(message["data"])
                events = json.loads(base64.b64decode(envelope["body"]))
                for event in events if isinstance(events, list) else [events]:
                    if event.get("uuid") in seen:
                        seen[event["uuid"]].add(event["type"])
            message = listener.get_message(timeout=0.01)
        return all({"task-received", "task-started", "task-succeeded"} <= kinds for kinds in seen.values())

    wait_for(all_seen, 60, message="every job's received, started and succeeded events")
    listener.close()
    events = 3 * JOBS
    span = last - first
    # Batched by time: no more messages than flush periods in the span (plus
    # the first, and any batch that filled up), never one per event.
    allowed = span / EVENT_FLUSH_S + 2 + events // EVENT_BUFFER_LIMIT
    assert messages <= allowed, f"{messages} event messages in {span:.2f}s for {events} events"
    assert messages < events / 2
