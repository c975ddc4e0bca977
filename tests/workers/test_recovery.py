"""At-least-once: a worker killed with SIGKILL mid-job loses nothing, and a
pickled message is refused without harming the worker."""

from __future__ import annotations

import sys
import uuid

import pytest
from kombu import Connection

from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.worker_process import WorkerProcess, wait_for

KEY = "sk-test-recovery-0123456789"


@pytest.fixture
def openai():
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
def env(openai):
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai.base_url}


@pytest.fixture
def client(redis_server):
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    yield client
    client.close()


def test_sigkill_mid_job_completes_on_another_worker(redis_server, openai, env, client):
    openai.push("slow:60")  # the first call hangs; the worker dies during it
    first = WorkerProcess(redis_server.url, ["openai"], env=env, name="doomed").start()
    try:
        handle = client.submit(f"survive #{uuid.uuid4().hex[:6]}", to=["openai:gpt-4o-mini"])
        wait_for(
            lambda: (r := client.status(handle.id)) and r.status.value == "running" and r.worker == first.worker_name,
            30, message="the job to be running on the first worker",
        )
        openai.wait_for_requests(1, timeout=10)
        first.kill()
    finally:
        first.stop()
    with WorkerProcess(redis_server.url, ["openai"], env=env, name="rescuer") as second:
        record = client.result(handle.id, timeout=60)
        assert record.status.value == "succeeded", record.to_dict()
        assert record.worker == second.worker_name
        assert len(openai.requests) == 2  # the hung call, then the rescued one
        assert "re-queued on openai" in second.log()


def test_pickled_message_is_refused_and_worker_keeps_going(redis_server, openai, env, client):
    job_id = uuid.uuid4().hex
    with WorkerProcess(redis_server.url, ["openai"], env=env, name="strict") as worker:
        with Connection(redis_server.url) as conn:
            producer = conn.Producer(serializer="pickle")
            producer.publish(
                [[job_id, {"targets": ["openai:gpt-4o-mini"], "prompt": "pickled"}], {}, {}],
                routing_key="promptq.openai",
                headers={"task": "promptq.run_job", "id": job_id, "lang": "py", "argsrepr": "", "kwargsrepr": ""},
            )
        wait_for(lambda: "application/x-python-serialize" in worker.log() or "ContentDisallowed" in worker.log(),
                 20, message="the worker to refuse the pickled message")
        # The worker survived and still runs JSON jobs.
        handle = client.submit("after the pickle", to=["openai:gpt-4o-mini"])
        assert client.result(handle.id, timeout=30).status.value == "succeeded"
        assert not any("pickled" in str(r.body) for r in openai.requests)


class PlainCeleryWorker(WorkerProcess):
    """Started as `celery -A promptq.workers.celery_app worker`, without `promptq worker`'s checks."""

    def command(self) -> list:
        queues = ",".join(f"promptq.{p}" for p in self.providers.split(","))
        return [sys.executable, "-P", "-m", "celery", "-A", "promptq.workers.celery_app", "worker", "-Q", queues,
                "-P", self.pool, "-c", str(self.concurrency), "-n", f"{self.name}@%h", "--without-mingle",
                "--without-gossip", "--loglevel", "INFO"]


def test_plain_celery_worker_without_a_key_leaves_that_queue_alone(redis_server, openai, client):
    # `promptq worker` refuses to start without the key (tests/workers/test_cli_first_use.py); a
    # worker started through plain Celery stops consuming that queue, loudly, and serves the others.
    from tests.fakes.anthropic_server import FakeAnthropic

    from promptq.providers.health_redis import RedisHealthStore

    with FakeAnthropic(api_key="sk-ant-test-keyed-012345") as anthropic:
        env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": openai.base_url,
               "ANTHROPIC_API_KEY": "sk-ant-test-keyed-012345", "ANTHROPIC_BASE_URL": anthropic.base_url}
        with PlainCeleryWorker(redis_server.url, ["openai", "claude"], env=env, name="keyless") as worker:
            parked = client.submit("who has a key?", to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
            served = client.submit("claude, please", to=["claude:claude-3-5-haiku-latest"])
            assert client.result(served.id, timeout=30).status.value == "succeeded"
            log = worker.log()
    assert "NOT consuming promptq.openai" in log and "set OPENAI_API_KEY" in log
    # Not taken off the queue to be failed: still queued, for a worker that has the key.
    assert client.status(parked.id).status.value == "queued" and client.status(parked.id).attempts == []
    assert openai.requests == []
    health = RedisHealthStore(redis_server.client(), "promptq:health").snapshot("openai:gpt-4o-mini")
    assert health.failures == 0 and health.circuit.value == "closed"
    client.cancel(parked.id)


def test_control_replies_do_not_linger_in_processing_lists(redis_server, openai, env, client):
    """Inspect/ping replies are consumed without acks (Flower, the CLI): reliable
    fetch must not keep them in the caller's processing list, where recovery
    would later find them and call them poison."""
    r = redis_server.client()
    poisoned_before = r.llen("promptq:poison")  # the session's server: earlier tests may have left some
    with WorkerProcess(redis_server.url, ["openai"], env=env, name="pinged") as worker:
        for _ in range(3):
            assert worker.name + "@" in "".join(client.app.control.inspect(timeout=5, limit=1).ping() or {})
    assert [k for k in r.keys("promptq:processing:*") if r.llen(k)] == []
    assert r.llen("promptq:poison") == poisoned_before
