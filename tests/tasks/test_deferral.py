"""Waiting in Redis: deferred jobs leave inflight, the reaper and the heartbeat
leave them alone (issue 8, fix 4), and the mover puts each due one back on
its queue exactly once, under a fresh token."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from promptq.tasks.app import create_app
from promptq.tasks.deferral import Deferrer
from promptq.tasks.leases import LeaseKeeper
from promptq.tasks.settings import Settings
from promptq.tasks.store import JobStatus, JobStore, new_token


@pytest.fixture
def rt(redis_server, redis_client, keys):
    settings = Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url})
    app = create_app(settings)
    store = JobStore(redis_client, keys, settings.result_ttl_s)
    yield SimpleNamespace(settings=settings, store=store, keys=keys, app=app, worker_name="host:1", leases=None,
                          deferrer=Deferrer(redis_client, keys, app))
    app.close()


def running_job(rt, job_id="j1", batch_id=None):
    token = new_token()
    spec = {"id": job_id, "targets": ["openai:gpt-4o-mini", "claude:haiku"], "prompt": "p", "batch_id": batch_id}
    assert rt.store.create(spec, token)
    rt.store.release(job_id, token)  # the message was "sent"
    assert rt.store.start(job_id, token, rt.worker_name, 30, batch_id) == "run"
    return token


def test_a_waiting_retry_is_never_reaped_however_long_it_waits(rt, redis_client, keys):
    token = running_job(rt)
    since = rt.deferrer.defer("j1", token, due=time.time() + 3600, status="retrying", target_index=0, attempt=2,
                              batch_id=None, counter="retried", endpoint="openai:gpt-4o-mini")
    assert since is not None
    assert redis_client.zscore(keys.inflight, "j1") is None
    # Long past any lease or grace: nothing for a reaper to re-publish.
    claimed = [j for j in rt.store.reap(limit=100) if j["id"] == "j1"]
    assert claimed == []
    assert rt.store.status("j1") is JobStatus.RETRYING


def test_heartbeat_does_not_resurrect_a_job_that_went_to_wait(rt, redis_client, keys):
    token = running_job(rt)
    keeper = LeaseKeeper(rt)
    keeper.add("j1")  # still listed as running in this process when the beat comes
    rt.deferrer.defer("j1", token, due=time.time() + 3600, status="waiting", target_index=0, attempt=1,
                      batch_id=None, endpoint="openai:gpt-4o-mini")
    keeper.beat()
    assert redis_client.zscore(keys.inflight, "j1") is None


def test_mover_puts_a_due_job_back_once_with_a_fresh_token(rt, redis_client, keys, queue_messages):
    token = running_job(rt, batch_id="b1")
    redis_client.hset(keys.batch("b1"), mapping={"total": 1})
    assert rt.deferrer.defer("j1", token, due=time.time() - 1, status="waiting", target_index=0, attempt=3,
                             batch_id="b1", rate_limited=True, counter="rate_limited",
                             endpoint="openai:gpt-4o-mini") is not None
    assert int(redis_client.hget(keys.batch("b1"), "capacity")) == 1
    assert rt.deferrer.waiting_by_endpoint() == {"openai:gpt-4o-mini": 1}
    # The old token is dead: a stale delivery can no longer start or re-defer the job.
    assert rt.deferrer.defer("j1", token, due=time.time(), status="waiting", target_index=0, attempt=3,
                             batch_id="b1") is None
    assert rt.deferrer.move_due() == 1
    assert rt.deferrer.move_due() == 0  # once only
    (message,) = queue_messages("promptq.openai")
    fresh = redis_client.hget(keys.job("j1"), "token").decode()
    assert message["kwargs"] == {"target_index": 0, "attempt": 3, "token": fresh} and fresh != token
    assert rt.store.status("j1") is JobStatus.QUEUED
    counters = {k.decode(): int(v) for k, v in redis_client.hgetall(keys.batch("b1")).items()}
    assert counters["capacity"] == 0 and counters["queued"] == 1 and counters["rate_limited"] == 1
    assert rt.deferrer.waiting_by_endpoint() == {}
    assert redis_client.hget(keys.job("j1"), "rl_waits:0") == b"1"


def test_a_job_not_yet_due_stays_and_a_cancelled_one_is_dropped(rt, redis_client, keys, queue_messages):
    token = running_job(rt, "later")
    rt.deferrer.defer("later", token, due=time.time() + 60, status="waiting", target_index=0, attempt=1,
                      batch_id=None, endpoint="openai:gpt-4o-mini")
    token = running_job(rt, "gone")
    rt.deferrer.defer("gone", token, due=time.time() - 1, status="waiting", target_index=0, attempt=1,
                      batch_id=None, endpoint="openai:gpt-4o-mini")
    assert rt.store.cancel("gone") == "cancelled"  # a waiting job can be cancelled
    assert rt.deferrer.move_due() == 0
    assert queue_messages("promptq.openai") == []
    assert rt.store.status("later") is JobStatus.WAITING and rt.deferrer.waiting() == 1
