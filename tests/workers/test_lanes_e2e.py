"""Priority lanes end to end: a real worker process, real Redis, the fake
OpenAI server over HTTP with some latency. An interactive job submitted
behind a batch backlog on the same provider runs before the backlog drains,
and a batch job keeps its lane when it is retried or fails over."""

from __future__ import annotations

import json
import threading
import uuid
from typing import List

import pytest

from promptq.tasks.batch import job_id_for, submit_batch
from promptq.tasks.client import Client
from promptq.tasks.lanes import list_key
from promptq.tasks.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.worker_process import WorkerProcess, wait_for

KEY = "sk-test-lanes-0123456789abcdef"
BACKLOG = 120


@pytest.fixture(scope="module")
def slow_openai():
    with FakeOpenAI(api_key=KEY, latency_s=0.1) as fake:
        yield fake


@pytest.fixture
def client(redis_server, redis_client):
    producer = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    yield producer
    producer.close()
    producer.app.close()


@pytest.fixture
def worker(redis_server, redis_client, slow_openai):
    # Two slots: the backlog takes 120 * 0.1 s / 2 = 6 s or more to drain.
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": slow_openai.base_url}
    with WorkerProcess(redis_server.url, ["openai"], env=env, concurrency=2, name="lanes") as proc:
        yield proc


def started_at(client: Client, job_id: str) -> float:
    return float(client.redis.hget(client.keys.job(job_id), "started_at") or 0)


def test_interactive_job_starts_before_the_batch_backlog_drains(client, worker):
    lines = [json.dumps({"custom_id": f"c{i}", "prompt": f"batch line {i}"}) for i in range(BACKLOG)]
    sub = submit_batch(client, lines, targets=["openai:gpt-4o-mini"], batch_id=f"b-{uuid.uuid4().hex[:6]}")
    batch_ids = [job_id_for(sub.batch_id, f"c{i}") for i in range(BACKLOG)]
    # The worker is busy on the batch before the interactive job arrives.
    wait_for(lambda: sum(1 for j in batch_ids[:10] if started_at(client, j)) >= 2, 30,
             message="the worker to start on the batch")
    handle = client.submit("urgent question", to=["openai:gpt-4o-mini"])
    record = client.result(handle.id, timeout=60)
    assert record.status.value == "succeeded" and record.spec["lane"] == "interactive"
    mine = started_at(client, handle.id)
    wait_for(lambda: client.redis.llen(list_key("promptq.openai", "batch")) == 0
             and all(started_at(client, j) for j in batch_ids), 120, message="the batch to drain")
    later = [j for j in batch_ids if started_at(client, j) > mine]
    # With strict lanes only the jobs already fetched (two slots) may start
    # before it; in one FIFO queue it would have waited for all of them.
    assert len(later) >= BACKLOG - 10, f"{BACKLOG - len(later)} batch jobs started before the interactive one"


READY = "lanes-monitor-ready"


def _lpushes(redis_server, job_id: str, ready: threading.Event, stop: threading.Event, seen: List[str]) -> None:
    """The key of every LPUSH of a message of `job_id`, as Redis saw it (MONITOR)."""
    conn = redis_server.client()
    with conn.monitor() as monitor:
        for command in monitor.listen():
            if stop.is_set():
                return
            text = command.get("command", "")
            if READY in text:
                ready.set()
            if text.startswith("LPUSH") and job_id in text:
                key = text.split(" ", 2)[1]
                seen.append(key)


@pytest.mark.parametrize("fault, second_queue", [("server", "promptq.openai"), ("invalid", "promptq.ollama")])
def test_retry_and_failover_keep_the_batch_lane(client, worker, slow_openai, redis_server, fault, second_queue):
    # "server" (500) is retried on the same target; "invalid" (400) fails over
    # to ollama, whose queue no worker here consumes: the message waits there.
    slow_openai.push(fault)
    batch_id = f"b-{uuid.uuid4().hex[:6]}"
    job_id = job_id_for(batch_id, "only")
    seen: List[str] = []
    ready, stop = threading.Event(), threading.Event()
    spy = threading.Thread(target=_lpushes, args=(redis_server, job_id, ready, stop, seen), daemon=True)
    spy.start()
    # MONITOR sees commands only once it is attached: wait until it saw ours.
    wait_for(lambda: client.redis.echo(READY) and ready.wait(0.1), 10, message="MONITOR to attach")
    submit_batch(client, [json.dumps({"custom_id": "only", "prompt": "p"})],
                 targets=["openai:gpt-4o-mini", "ollama:llama3.2"], batch_id=batch_id)
    wait_for(lambda: len(seen) >= 2, 30, message=f"the {fault} re-publish (seen {seen})")
    stop.set()
    client.redis.ping()  # one more command so the monitor loop wakes up and ends
    # MONITOR prints keys escaped: kombu's separator reads "\x06\x16".
    lane_list = lambda queue: list_key(queue, "batch").encode("unicode_escape").decode()
    assert seen[:2] == [lane_list("promptq.openai"), lane_list(second_queue)], seen
