"""Every pool `promptq worker` offers runs jobs, and a wide gevent pool keeps
200 slow jobs in flight at once."""

from __future__ import annotations

import re
import uuid

import pytest

from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.worker_process import WorkerProcess

KEY = "sk-test-pools-0123456789"


@pytest.fixture
def client(redis_server):
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    yield client
    client.close()


@pytest.mark.parametrize("pool", ["threads", "gevent", "prefork"])
def test_each_pool_runs_jobs(redis_server, client, pool):
    with FakeOpenAI(api_key=KEY) as openai:
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai.base_url}
        with WorkerProcess(redis_server.url, ["openai"], env=env, pool=pool, concurrency=2, name=f"pool-{pool}") as worker:
            handles = [client.submit(f"{pool} job {i} #{uuid.uuid4().hex[:6]}", to=["openai:gpt-4o-mini"])
                       for i in range(4)]
            records = [client.result(h.id, timeout=60) for h in handles]
            log = worker.log()
    assert [r.status.value for r in records] == ["succeeded"] * 4
    assert all(r.text.startswith(f"echo: {pool} job") for r in records)
    # The process that runs the jobs froze its start-up heap out of the
    # collector's walks (tasks.heap): the worker itself, or each prefork child.
    frozen = [int(n) for n in re.findall(r"froze (\d+) start-up objects", log)]
    assert len(frozen) == (1 + 2 if pool == "prefork" else 1), log
    assert min(frozen) > 10_000


def test_gevent_pool_of_200_runs_200_jobs_at_once(redis_server, client):
    # The fake holds every call unanswered until all 200 wait at once: that
    # happens only if the pool (patched by Celery because `promptq worker`
    # names it on celery's command line) really runs 200 jobs concurrently and
    # the worker's Redis clients keep up. Nothing here depends on how fast a
    # busy machine starts them; a 2 s latency did, and a loaded CI run saw 119.
    with FakeOpenAI(api_key=KEY) as openai:
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai.base_url}
        with WorkerProcess(redis_server.url, ["openai"], env=env, pool="gevent", concurrency=200,
                           name="wide") as worker:
            # One answer first: until an endpoint has answered, the limiter's
            # slow start lets only a few calls at it (tasks.limiter.SLOW_START).
            warm = client.result(client.submit("warm up", to=["openai:gpt-4o-mini"]).id, timeout=60)
            assert warm.status.value == "succeeded"
            openai.hold()
            handles = [client.submit(f"wide {i}", to=["openai:gpt-4o-mini"]) for i in range(200)]
            try:
                held = openai.wait_for_held(200, timeout=120)
            except TimeoutError as exc:
                # Where the jobs not at the fake were: their records and the worker's log.
                behind = [r.to_dict() for r in map(client.status, (h.id for h in handles))
                          if r is not None and r.status.value != "running"]
                raise AssertionError(f"{exc}; not running: {behind[:5]}\n{worker.log()[-4000:]}") from exc
            finally:
                openai.release()
            records = [client.result(h.id, timeout=120) for h in handles]
    assert held == 200
    assert sum(r.status.value == "succeeded" for r in records) == 200
    assert len({r.text for r in records}) == 200
