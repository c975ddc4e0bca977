"""What one non-streamed job's success costs Redis, counted by Redis itself.

Each command a Lua script calls costs Redis CPU (by valgrind's count of
redis-server instructions, a read ~4k, a write ~8k, against ~25k for the
script call itself). These pin, from `INFO commandstats`, the commands the
worker's scripts run for a job on a warm endpoint (seen before, circuit
closed, in the same pacing minute), so a change that adds one back fails here.
The fetch and the ack are the broker's (tests/tasks/test_reliable_ack.py).
"""

from __future__ import annotations

import pytest

from promptq.tasks import run as run_module
from promptq.tasks.app import create_app
from promptq.tasks.runtime import Runtime
from promptq.tasks.store import JobStatus, new_token

#: start (HMGET, HSET, ZADD), circuit (HGET), admission (TIME, HMGET);
#: health (HMGET, HSET, HINCRBYFLOAT), settle (HGET), pacing (TIME, HMGET,
#: HSET), attempt (RPUSH), finish (HMGET, HSET, ZREM, EXPIRE x2), `done`
#: (EXISTS, HINCRBY, PUBLISH). Was 36: 2 HGETs and an HSETNX at start,
#: SADD/HDEL/DEL and 3 HINCRBYs per success, TIME/GET/ZREM to settle, HDEL
#: and EXPIRE in pacing, the seq key's EXPIRE and a second EXISTS.
STEADY = {"hmget": 5, "hset": 4, "zadd": 1, "hget": 2, "time": 2, "hincrbyfloat": 1, "rpush": 1, "zrem": 1,
          "expire": 2, "exists": 1, "hincrby": 1, "publish": 1}
SCRIPTS = 8  # start, allow, admit, health, settle, pacing, finish, done: one round trip each side


@pytest.fixture
def rt(settings):
    app = create_app(settings)
    runtime = Runtime(settings, app)
    runtime.leases = set()  # the heartbeat's bookkeeping only: no LeaseKeeper thread in a unit test
    yield runtime
    runtime.close()
    app.close()


def run_one(rt, store, job_id):
    token = new_token()
    spec = {"id": job_id, "targets": ["mock:m"], "prompt": "hello", "stream": False, "batch_id": None}
    store.create(spec, token)
    store.release(job_id, token)
    job = run_module.JobRun(rt, None, job_id, spec, 0, 1, token)
    return lambda: job.run()


def commands(redis_client):
    return {name[len("cmdstat_"):]: stats["calls"] for name, stats in redis_client.info("commandstats").items()}


def test_a_warm_endpoints_success_runs_only_the_pinned_commands(rt, store, redis_client):
    run_one(rt, store, "cold")()  # first answer: index, pace hash, slow start
    job = run_one(rt, store, "warm")
    redis_client.config_resetstat()
    assert job()["outcome"] == "succeeded"
    counted = commands(redis_client)
    assert counted.pop("evalsha") == SCRIPTS
    for own in ("config", "info"):  # the resetstat and this read
        counted.pop(own, None)
    assert counted == STEADY
    assert store.status("warm") is JobStatus.SUCCEEDED


def test_a_cold_endpoints_first_success_still_indexes_learns_and_gives_back(rt, store, redis_client, keys):
    job = run_one(rt, store, "cold")
    assert job()["outcome"] == "succeeded"
    health = rt.health.prefix
    assert redis_client.smembers(f"{health}:index") == {b"mock:m"}
    pace = rt.pacer.pace_key("mock:m")
    assert 86_000 < redis_client.ttl(pace) <= 86_400 and redis_client.hget(pace, "seen") == b"1"
    assert redis_client.zcard(rt.limiter.bucket_key("mock:m", "slowstart")) == 0
    assert redis_client.hget(keys.job("cold"), "seq") == b"1" and not redis_client.exists(keys.seq("cold"))


def test_the_seq_keys_ttl_after_a_finish_is_the_events_that_follows_it(store, redis_client, keys):
    from promptq.tasks.events import EventPublisher

    events = EventPublisher(redis_client, keys, ttl_s=300)  # shorter than the records' 600 s
    for job_id, follows in (("streamed", True), ("alone", False)):
        token = new_token()
        store.create({"id": job_id, "targets": ["mock:m"], "prompt": "p", "stream": True, "batch_id": None}, token)
        assert store.start(job_id, token, "w", 30, None) == "run"
        events.publish(job_id, "chunk", attempt=1, store=True, text="a")  # the seq key now counts
        redis_client.expire(keys.seq(job_id), 50)
        pipe = redis_client.pipeline(transaction=False)
        store.finish(job_id, status=JobStatus.SUCCEEDED, payload={}, batch_id=None, pipe=pipe, event_follows=follows)
        if follows:
            events.publish(job_id, "done", attempt=1, store=True, pipe=pipe)
        pipe.execute()
        expected = 300 if follows else 600
        assert expected - 5 < redis_client.ttl(keys.seq(job_id)) <= expected
