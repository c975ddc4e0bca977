"""Capacity end to end: real worker processes, real Redis, real HTTP to a fake
OpenAI that enforces requests per minute with a one-second token bucket and
states that bucket in its headers (tests/fakes/ratelimited_server.py, headers="bucket").
No job is lost to a rate limit; waiting spends no retries and opens no circuit."""

from __future__ import annotations

import uuid

import pytest

from promptq.providers.health_redis import RedisHealthStore
from promptq.tasks.batch import cancel_batch, submit_batch
from promptq.tasks.batch_results import batch_status
from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ratelimited_server import RateLimitedOpenAI
from tests.worker_process import WorkerProcess, wait_for

KEY = "sk-test-capacity-0123456789"
ANTHROPIC_KEY = "sk-ant-capacity-0123456789"


@pytest.fixture
def client(redis_server, redis_client):
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    yield client
    client.close()


def env_for(server, **extra):
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url, **extra}


def statuses(client, ids):
    return [client.store.status(i).value for i in ids]


def test_a_batch_against_a_rate_limited_server_loses_nothing(redis_server, client):
    # 150 lines at 600 rpm (a one-second bucket) through two workers of 32 slots:
    # before issue 8 most of them were dead-lettered.
    with RateLimitedOpenAI(api_key=KEY, rpm=600, headers="bucket") as server:
        with WorkerProcess(redis_server.url, ["openai"], env=env_for(server), concurrency=32, name="cap-a"), \
                WorkerProcess(redis_server.url, ["openai"], env=env_for(server), concurrency=32, name="cap-b"):
            lines = [{"custom_id": f"l{i}", "prompt": f"line {i}"} for i in range(150)]
            submission = submit_batch(client, [__import__("json").dumps(line) for line in lines],
                                      targets=["openai:gpt-4o-mini"])
            status = wait_for(lambda: (lambda s: s if s["finished"] else None)(batch_status(client, submission.batch_id)),
                              120, 0.2, "the batch to finish")
        stats = server.stats()
        admitted, rejected = stats["admitted"], stats["rate_limited"]
    assert status["succeeded"] == 150 and status["failed"] == 0, status
    assert status["retried"] == 0  # a 429 is waited out, not retried
    assert status["rate_limited"] == rejected
    # Paced by the provider's own headers: only a few requests ever drew a 429.
    assert rejected <= 0.05 * admitted, (admitted, rejected)
    health = RedisHealthStore(client.redis, "promptq:health").snapshot("openai:gpt-4o-mini")
    assert health.circuit.value == "closed"


def test_429s_spend_no_retries_and_the_deadline_fails_rate_limited(redis_server, client):
    # One request a minute: the first job takes it, the next ones are told to wait ~60 s.
    with RateLimitedOpenAI(api_key=KEY, rpm=1, headers="bucket") as server:
        with WorkerProcess(redis_server.url, ["openai"], env=env_for(server), name="cap-deadline"):
            first = client.submit("first", to=["openai:gpt-4o-mini"], max_retries=0)
            assert client.result(first.id, timeout=30).status.value == "succeeded"
            # max_retries=0 and still never failed for the 429: it waits (in Redis) instead.
            patient = client.submit("patient", to=["openai:gpt-4o-mini"], max_retries=0)
            hasty = client.submit("hasty", to=["openai:gpt-4o-mini"], max_retries=0, rate_limit_deadline_s=5)
            record = client.result(hasty.id, timeout=30)
            wait_for(lambda: client.store.status(patient.id).value == "waiting", 30, 0.1,
                     "the patient job to wait for capacity")
            assert client.store.status(patient.id).value == "waiting"
            assert client.redis.zscore("promptq:deferred", patient.id) is not None
            assert client.cancel(patient.id) == "cancelled"  # a waiting job can be cancelled
    assert record.status.value == "failed"
    assert record.error["reason"] == "rate_limited" and "rate_limited" in record.error["message"]
    assert record.error["last_error"]["error_type"] == "rate_limited"


def test_configured_limit_paces_calls_without_a_429(redis_server, client):
    # The server would allow 6000 rpm; the operator allows 120 (2 a second).
    with RateLimitedOpenAI(api_key=KEY, rpm=6000, headers="bucket") as server:
        env = env_for(server, PROMPTQ_LIMIT_OPENAI_RPM="120")
        with WorkerProcess(redis_server.url, ["openai"], env=env, concurrency=16, name="cap-config"):
            handles = [client.submit(f"paced {i} {uuid.uuid4().hex[:6]}", to=["openai:gpt-4o-mini"]) for i in range(10)]
            for handle in handles:
                assert client.result(handle.id, timeout=60).status.value == "succeeded"
        times = sorted(server.arrivals)
        rejected = server.stats()["rate_limited"]
    assert rejected == 0
    # A burst of one second (2 calls), then one call every 0.5 s: 10 calls span >= 4 s.
    assert times[-1] - times[0] >= 3.5, times


def test_spill_moves_a_job_with_no_capacity_to_its_next_target(redis_server, client):
    with RateLimitedOpenAI(api_key=KEY, rpm=6000, headers="bucket") as server, \
            FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic:
        env = env_for(server, PROMPTQ_LIMIT_OPENAI_RPM="1", PROMPTQ_SPILL_AFTER_S="2",
                      ANTHROPIC_API_KEY=ANTHROPIC_KEY, ANTHROPIC_BASE_URL=anthropic.base_url)
        with WorkerProcess(redis_server.url, ["openai", "claude"], env=env, name="cap-spill"):
            to = ["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"]
            spilled = [client.submit(f"spill {i}", to=to, spill=True) for i in range(3)]
            records = [client.result(h.id, timeout=60) for h in spilled]
            # Without spill the chain is a pure fallback: the job waits for its first target.
            stays = client.submit("stays", to=to)
            wait_for(lambda: client.store.status(stays.id).value == "waiting", 30, 0.1, "the job to wait")
            client.cancel(stays.id)
    assert all(r.status.value == "succeeded" for r in records)
    providers = sorted(r.result["provider"] for r in records)
    assert providers == ["claude", "claude", "openai"], providers
    moved = next(r for r in records if r.result["provider"] == "claude")
    assert moved.id in {h.id for h in spilled}  # same job id
    assert len(moved.attempts) == 1  # spilled before any call: no failure recorded


def test_an_interactive_job_is_not_stuck_behind_a_batch(redis_server, client):
    # 60 batch lines at 60 rpm would hold the provider for a minute; the batch
    # lane leaves a share of the budget, so an interactive job finds room.
    with RateLimitedOpenAI(api_key=KEY, rpm=60, headers="bucket") as server:
        with WorkerProcess(redis_server.url, ["openai"], env=env_for(server), concurrency=16, name="cap-lanes"):
            lines = [__import__("json").dumps({"custom_id": f"b{i}", "prompt": f"batch {i}"}) for i in range(60)]
            batch = submit_batch(client, lines, targets=["openai:gpt-4o-mini"]).batch_id
            wait_for(lambda: batch_status(client, batch)["succeeded"] >= 3, 30, 0.1, "the batch to be under way")
            handle = client.submit("interactive, please", to=["openai:gpt-4o-mini"])
            record = client.result(handle.id, timeout=30)
            left = batch_status(client, batch)
            cancel_batch(client, batch)  # the rest need not run
    assert record.status.value == "succeeded"
    # It did not wait for the batch: most of the batch was still to come.
    assert left["succeeded"] < 30, left


def test_max_retries_counts_real_failures_only(redis_server, client):
    from tests.fakes.openai_server import FakeOpenAI

    with FakeOpenAI(api_key=KEY) as server:
        with WorkerProcess(redis_server.url, ["openai"], env=env_for(server), name="cap-retries"):
            # Two 429s, then one server error: one real failure, within max_retries=1.
            for fault in ("rate_limit_ms:200", "rate_limit_ms:200", "server"):
                server.push(fault)
            handle = client.submit("count my failures", to=["openai:gpt-4o-mini"], max_retries=1)
            record = client.result(handle.id, timeout=60)
    assert record.status.value == "succeeded", record.to_dict()
    assert [a["error"]["category"] if a["error"] else "ok" for a in record.attempts] == \
        ["rate_limit", "rate_limit", "server", "ok"]


def test_batch_submit_carries_spill_and_deadline_to_every_line(redis_server, client, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.worker_process import ROOT

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"c{i}", "prompt": f"p{i}"}) + "\n" for i in range(3)))
    env = {**os.environ, "PROMPTQ_REDIS_URL": redis_server.url, "PYTHONPATH": str(ROOT)}
    # No worker consumes openrouter here: the lines stay queued for us to read.
    out = subprocess.run([sys.executable, "-m", "promptq.workers.cli.main", "batch", "submit", str(path),
                          "--to", "openrouter:a/b", "--to", "openai:gpt-4o-mini", "--spill",
                          "--rate-limit-deadline", "600", "--quiet"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--spill --rate-limit-deadline 600" in out.stderr  # the resume hint keeps them
    batch_id = out.stdout.strip()
    job_ids = [i.decode() for i in client.redis.lrange(f"promptq:batch:{batch_id}:jobs", 0, -1)]
    specs = [client.store.get(i).spec for i in job_ids]
    assert len(specs) == 3 and all(s["spill"] is True and s["rate_limit_deadline_s"] == 600 for s in specs)
    cancel_batch(client, batch_id)
    bad = subprocess.run([sys.executable, "-m", "promptq.workers.cli.main", "batch", "submit", str(path),
                          "--to", "openai:gpt-4o-mini", "--rate-limit-deadline", "-5"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "rate_limit_deadline_s" in bad.stderr
