"""LeaseKeeper: heartbeats push deadlines forward; reaping re-publishes a dead
worker's job to its current target's queue under a fresh token."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from promptq.tasks.app import create_app
from promptq.tasks.keys import TASK_NAME
from promptq.tasks.leases import LeaseKeeper
from promptq.tasks.settings import Settings
from promptq.tasks.store import JobStatus, JobStore, new_token
from tests.worker_process import wait_for


@pytest.fixture
def runtime(redis_server, redis_client, keys):
    def build(**overrides):
        env = {"PROMPTQ_REDIS_URL": redis_server.url, **{f"PROMPTQ_{k.upper()}": str(v) for k, v in overrides.items()}}
        settings = Settings.load(environ=env)
        app = create_app(settings)
        rt = SimpleNamespace(settings=settings, store=JobStore(redis_client, keys, settings.result_ttl_s),
                             keys=keys, app=app, worker_name="host:4242", leases=None)
        built.append(rt)
        return rt

    built = []
    yield build
    for rt in built:
        if rt.leases is not None:
            rt.leases.stop()
            rt.leases._thread.join(10)
        rt.app.close()


def spec(job_id="j1", targets=("openai:gpt-4o", "claude:haiku", "ollama:llama3.2:1b"), batch_id=None):
    return {"id": job_id, "targets": list(targets), "prompt": "p", "stream": False, "batch_id": batch_id}


def dead_job(store, job_id="j1", target_index=0, **kw):
    """A job whose worker started it and then stopped heart-beating (its deadline has passed)."""
    token = new_token()
    assert store.create(spec(job_id, **kw), token, target_index=target_index)
    assert store.start(job_id, token, "gone:1", -1, kw.get("batch_id")) == "run"
    return token


def test_reap_republishes_to_the_current_targets_queue(runtime, queue_messages, redis_client, keys):
    rt = runtime()
    old = dead_job(rt.store, target_index=1)
    keeper = LeaseKeeper(rt)
    assert keeper.reap() == 1
    assert redis_client.llen("promptq.openai") == 0 and redis_client.llen("promptq.ollama") == 0
    (message,) = queue_messages("promptq.claude")
    assert message["headers"]["task"] == TASK_NAME and message["headers"]["id"] == "j1"
    assert message["args"] == ["j1", spec()]
    new = redis_client.hget(keys.job("j1"), "token").decode()
    assert new != old
    assert message["kwargs"] == {"target_index": 1, "attempt": 1, "token": new}
    # Re-published, so out of inflight; the old message is stale, the new one runs.
    assert redis_client.zscore(keys.inflight, "j1") is None
    assert rt.store.status("j1") is JobStatus.QUEUED
    assert rt.store.start("j1", old, "w2", 30, None) == "stale"
    assert rt.store.start("j1", new, "w2", 30, None) == "run"
    assert keeper.reap() == 0
    assert redis_client.llen("promptq.claude") == 1


def test_reap_of_a_lost_retry_keeps_its_attempt_number(runtime, queue_messages, redis_client, keys):
    rt = runtime()
    token = new_token()
    rt.store.create(spec(targets=("mock:m",)), token)
    rt.store.start("j1", token, "gone:1", 30, None)
    rt.store.move("j1", token, new_token(), status=JobStatus.RETRYING, target_index=0, attempt=3,
                  deadline=time.time() - 1, batch_id=None, counter="retried")
    assert LeaseKeeper(rt).reap() == 1
    (message,) = queue_messages("promptq.mock")
    assert (message["kwargs"]["target_index"], message["kwargs"]["attempt"]) == (0, 3)


def test_reap_leaves_live_and_finished_jobs_alone(runtime, redis_client, keys):
    rt = runtime()
    live = new_token()
    rt.store.create(spec("live"), live)
    rt.store.start("live", live, "w1", 60, None)
    dead_job(rt.store, "done")
    rt.store.finish("done", status=JobStatus.SUCCEEDED, payload={"text": "x"}, batch_id=None)
    assert LeaseKeeper(rt).reap() == 0
    assert redis_client.keys("promptq.*") == []  # no provider queue got a message
    assert redis_client.zrange(keys.inflight, 0, -1) == [b"live"]


def test_beat_refreshes_running_jobs_and_records_the_worker(runtime, redis_client, keys):
    rt = runtime(lease_ttl_s=40, heartbeat_s=5)
    for jid in ("a", "b"):
        token = new_token()
        rt.store.create(spec(jid), token)
        rt.store.start(jid, token, "host:4242", 1, None)
    keeper = LeaseKeeper(rt)
    keeper.add("a")
    keeper.add("gone")  # finished meanwhile: never re-added to inflight
    before = time.time()
    keeper.beat()
    assert before + 40 <= redis_client.zscore(keys.inflight, "a") <= time.time() + 40
    assert redis_client.zscore(keys.inflight, "b") < before + 2
    assert redis_client.zscore(keys.inflight, "gone") is None
    assert before <= float(redis_client.hget(keys.workers, "host:4242")) <= time.time()
    keeper.discard("a")
    assert keeper.running() == ["gone"]


def test_keeper_thread_recovers_a_dead_job_on_its_own(runtime, queue_messages, redis_client, keys):
    rt = runtime(heartbeat_s=0.1, lease_ttl_s=1)
    dead_job(rt.store, targets=("ollama:llama3.2:1b",))
    keeper = LeaseKeeper(rt).start()
    assert rt.leases is keeper
    wait_for(lambda: redis_client.llen("promptq.ollama") == 1, 10, message="the keeper to re-publish the job")
    wait_for(lambda: redis_client.zscore(keys.inflight, "j1") is None, 10, message="release")
    (message,) = queue_messages("promptq.ollama")
    assert message["kwargs"]["token"] == redis_client.hget(keys.job("j1"), "token").decode()
    keeper.stop()
    keeper._thread.join(5)
    assert not keeper._thread.is_alive()


def test_reap_counts_a_batch_job_as_recovered(runtime, redis_client, keys):
    rt = runtime()
    dead_job(rt.store, batch_id="b1")
    assert LeaseKeeper(rt).reap() == 1
    counters = {k.decode(): int(v) for k, v in redis_client.hgetall(keys.batch("b1")).items()}
    assert (counters["queued"], counters["running"], counters["recovered"]) == (1, 0, 1)


def test_the_beat_keeps_running_jobs_cap_leases_alive_and_lets_the_rest_lapse(runtime, redis_client, keys):
    from promptq.tasks.limiter import LEASE_TTL_S, Limiter
    from promptq.tasks.limits import Limit

    rt = runtime(lease_ttl_s=60, heartbeat_s=30)  # the keeper's own loop stays out of the way
    rt.limiter = Limiter(redis_client, "promptq", {"openai": Limit(concurrency=5)})
    keeper = LeaseKeeper(rt).start()
    cap = "promptq:cap:openai:conc"
    keeper.add("running")
    running = rt.limiter.acquire("openai", "m", job_key=keys.job("running"))
    gone = rt.limiter.acquire("openai", "m", job_key=keys.job("gone"))  # its job left without settling
    scores = dict(redis_client.zrange(cap, 0, -1, withscores=True))
    now = float(redis_client.time()[0])
    assert all(s <= now + 61 for s in scores.values()) and LEASE_TTL_S > 61  # short: the keeper's lease time
    keeper.beat()
    after = dict(redis_client.zrange(cap, 0, -1, withscores=True))
    assert after[running.lease_id.encode()] > scores[running.lease_id.encode()]
    assert after[gone.lease_id.encode()] == scores[gone.lease_id.encode()]  # not pushed on: it lapses
    assert rt.limiter.held.held() == [running.lease_id]
