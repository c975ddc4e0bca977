"""JobStore's Lua state changes against a real Redis: idempotent create, token
fencing, batch counters, cancel, reap/release, requeue and heartbeats."""

from __future__ import annotations

import threading
import time

import pytest

from promptq.tasks.store import JobStatus, JobStore, new_token

COUNTERS = ("queued", "running", "waiting", "succeeded", "failed", "cancelled", "retried", "failed_over",
            "recovered", "input_tokens", "output_tokens")


def spec(job_id="j1", batch_id=None, targets=("openai:gpt-4o", "claude:haiku"), stream=False):
    return {"id": job_id, "targets": list(targets), "prompt": "p", "stream": stream, "batch_id": batch_id}


@pytest.fixture
def counters(redis_client, keys):
    def read(batch_id="b1"):
        raw = redis_client.hgetall(keys.batch(batch_id))
        values = {k.decode(): int(v) for k, v in raw.items()}
        return {name: values.get(name, 0) for name in COUNTERS}

    return read


@pytest.fixture
def inflight(redis_client, keys):
    return lambda: {k.decode(): s for k, s in redis_client.zrange(keys.inflight, 0, -1, withscores=True)}


def field(redis_client, keys, job_id, name):
    value = redis_client.hget(keys.job(job_id), name)
    return value.decode() if value is not None else None


def running_job(store, job_id="j1", batch_id=None, lease=30.0, **kw):
    token = new_token()
    assert store.create(spec(job_id, batch_id, **kw), token)
    assert store.start(job_id, token, "w1", lease, batch_id) == "run"
    return token


# --- create ----------------------------------------------------------------------


def test_create_is_idempotent_and_counts_a_batch_job_once(store, counters, redis_client, keys):
    first, second = new_token(), new_token()
    assert store.create(spec(batch_id="b1"), first) is True
    assert store.create(dict(spec(batch_id="b1"), prompt="changed"), second) is False
    assert field(redis_client, keys, "j1", "token") == first
    record = store.get("j1")
    assert record.status is JobStatus.QUEUED and record.spec["prompt"] == "p"
    assert (record.attempt, record.target_index, record.started_at) == (1, 0, None)
    assert abs(record.created_at - time.time()) < 5
    assert counters()["queued"] == 1


def test_unknown_job_reads_as_none(store):
    assert store.get("nope") is None and store.status("nope") is None


# --- start -----------------------------------------------------------------------


def test_start_verdicts(store, inflight, redis_client, keys):
    token = new_token()
    assert store.start("j1", token, "w1", 30, None) == "missing"
    store.create(spec(), token)
    assert store.start("j1", new_token(), "w1", 30, None) == "stale"
    # Until its message is sent (and `release` is called) a new job is in
    # inflight, so a producer crash between the two is recovered.
    assert store.status("j1") is JobStatus.QUEUED and set(inflight()) == {"j1"}
    before = time.time()
    assert store.start("j1", token, "w1", 30, None) == "run"
    record = store.get("j1")
    assert record.status is JobStatus.RUNNING and record.worker == "w1"
    assert before <= record.started_at <= time.time()
    assert before + 30 <= inflight()["j1"] <= time.time() + 30
    assert store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "ok"}, batch_id=None) == 1
    assert store.start("j1", token, "w1", 30, None) == "terminal"
    assert store.start("j1", new_token(), "w1", 30, None) == "terminal"


def test_restarting_a_running_job_with_its_token_does_not_recount(store, counters):
    token = running_job(store, batch_id="b1")
    assert store.start("j1", token, "w2", 30, "b1") == "run"
    assert counters()["running"] == 1 and counters()["queued"] == 0


def test_a_second_start_keeps_the_first_started_at(store, redis_client, keys):
    token = running_job(store)
    first = field(redis_client, keys, "j1", "started_at")
    assert first and store.start("j1", token, "w2", 30, None) == "run"
    assert field(redis_client, keys, "j1", "started_at") == first
    assert field(redis_client, keys, "j1", "worker") == "w2"


# --- move ------------------------------------------------------------------------


def test_move_requires_the_current_token(store, inflight, redis_client, keys):
    token = running_job(store)
    due = time.time() + 100
    assert not store.move("j1", new_token(), new_token(), status=JobStatus.RETRYING, target_index=0,
                          attempt=2, deadline=due, batch_id=None)
    assert store.status("j1") is JobStatus.RUNNING and field(redis_client, keys, "j1", "token") == token
    retry_token = new_token()
    assert store.move("j1", token, retry_token, status=JobStatus.RETRYING, target_index=0, attempt=2,
                      deadline=due, batch_id=None)
    record = store.get("j1")
    assert (record.status, record.attempt, record.target_index) == (JobStatus.RETRYING, 2, 0)
    assert field(redis_client, keys, "j1", "token") == retry_token
    assert inflight() == {"j1": pytest.approx(due, abs=1e-3)}
    assert store.start("j1", token, "w1", 30, None) == "stale"
    assert store.start("j1", retry_token, "w1", 30, None) == "run"
    # Failover: next target, attempt 1, out of inflight (the broker holds the message).
    next_token = new_token()
    assert store.move("j1", retry_token, next_token, status=JobStatus.QUEUED, target_index=1, attempt=1,
                      deadline=None, batch_id=None)
    record = store.get("j1")
    assert (record.status, record.attempt, record.target_index) == (JobStatus.QUEUED, 1, 1)
    assert inflight() == {}


def test_move_of_a_finished_job_is_refused(store):
    token = running_job(store)
    store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "a"}, batch_id=None)
    for old in (token, ""):
        assert not store.move("j1", old, new_token(), status=JobStatus.QUEUED, target_index=1, attempt=1,
                              deadline=None, batch_id=None)
    assert store.status("j1") is JobStatus.SUCCEEDED


# --- finish ----------------------------------------------------------------------


def test_first_success_wins_and_sets_ttls(store, inflight, redis_client, keys):
    running_job(store)
    store.add_attempt("j1", {"attempt": 1, "outcome": "succeeded"})
    assert store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "first"}, batch_id=None) == 1
    assert store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "second"}, batch_id=None) == 0
    assert store.finish("j1", status=JobStatus.FAILED, payload={"message": "x"}, batch_id=None) == 0
    record = store.get("j1")
    assert record.status is JobStatus.SUCCEEDED and record.text == "first" and record.error is None
    assert record.attempts == [{"attempt": 1, "outcome": "succeeded"}]
    assert record.finished_at is not None and inflight() == {}
    assert field(redis_client, keys, "j1", "token") == ""
    assert 0 < redis_client.ttl(keys.job("j1")) <= 600
    assert 0 < redis_client.ttl(keys.attempts("j1")) <= 600


def test_failure_with_a_stale_token_is_refused_but_a_late_success_is_kept(store, redis_client, keys):
    old = running_job(store, lease=-1)
    (claim,) = store.reap()
    assert store.finish("j1", status=JobStatus.FAILED, payload={"message": "late"}, batch_id=None, token=old) == 0
    assert store.status("j1") is JobStatus.QUEUED
    # The answer of the presumed-dead worker is real: kept, and the re-published copy is dropped.
    assert store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "paid for"}, batch_id=None) == 1
    assert store.start("j1", claim["token"], "w2", 30, None) == "terminal"
    assert store.get("j1").text == "paid for"


def test_failure_with_the_current_token_is_recorded(store):
    token = running_job(store)
    assert store.finish("j1", status=JobStatus.FAILED, payload={"message": "all failed"}, batch_id=None,
                        token=token) == 1
    record = store.get("j1")
    assert record.status is JobStatus.FAILED and record.error == {"message": "all failed"} and record.result is None


# --- batch counters --------------------------------------------------------------


def test_batch_counters_through_retry_and_success(store, counters):
    def check(**expected):
        got = counters()
        assert got == {name: expected.get(name, 0) for name in COUNTERS}

    t1 = new_token()
    store.create(spec(batch_id="b1"), t1)
    check(queued=1)
    assert store.start("j1", t1, "w1", 30, "b1") == "run"
    check(running=1)
    t2 = new_token()
    assert store.move("j1", t1, t2, status=JobStatus.RETRYING, target_index=0, attempt=2,
                      deadline=time.time() + 60, batch_id="b1", counter="retried")
    check(waiting=1, retried=1)
    assert store.start("j1", t2, "w1", 30, "b1") == "run"
    check(running=1, retried=1)
    t3 = new_token()
    assert store.move("j1", t2, t3, status=JobStatus.QUEUED, target_index=1, attempt=1,
                      deadline=None, batch_id="b1", counter="failed_over")
    check(queued=1, retried=1, failed_over=1)
    assert store.start("j1", t3, "w2", 30, "b1") == "run"
    assert store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "x"}, batch_id="b1",
                        usage={"input_tokens": 12, "output_tokens": 5}) == 1
    check(succeeded=1, retried=1, failed_over=1, input_tokens=12, output_tokens=5)
    # A duplicate finish counts nothing.
    store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "x"}, batch_id="b1",
                 usage={"input_tokens": 12, "output_tokens": 5})
    check(succeeded=1, retried=1, failed_over=1, input_tokens=12, output_tokens=5)


def test_batch_counters_of_failure_cancel_and_recovery(store, counters):
    tokens = {jid: new_token() for jid in ("a", "b", "c", "d")}
    for jid, token in tokens.items():
        store.create(spec(jid, "b1"), token)
    store.start("a", tokens["a"], "w", 30, "b1")
    store.finish("a", status=JobStatus.FAILED, payload={"message": "m"}, batch_id="b1", token=tokens["a"])
    assert store.cancel("b", "b1") == "cancelled"
    store.start("c", tokens["c"], "w", -1, "b1")  # a worker that died
    assert [c["id"] for c in store.reap()] == ["c"]
    got = counters()
    assert (got["queued"], got["running"], got["failed"], got["cancelled"], got["recovered"]) == (2, 0, 1, 1, 1)
    assert sum(got[n] for n in ("queued", "running", "waiting", "succeeded", "failed", "cancelled")) == 4


# --- cancel ----------------------------------------------------------------------


def test_cancel_queued_job(store, redis_client, keys):
    token = new_token()
    store.create(spec(), token)
    assert store.cancel("j1") == "cancelled"
    assert store.status("j1") is JobStatus.CANCELLED
    assert field(redis_client, keys, "j1", "token") == ""
    assert store.start("j1", token, "w1", 30, None) == "terminal"
    assert store.cancel("j1") == "cancelled"  # its final status, unchanged
    assert store.cancel("nope") == "missing"


def test_cancelled_record_expires_like_other_finished_ones(store, redis_client, keys):
    store.create(spec(), new_token())
    assert store.cancel("j1") == "cancelled"
    assert 0 < redis_client.ttl(keys.job("j1")) <= 600


def test_cancel_retrying_job_leaves_inflight(store, inflight, counters):
    token = running_job(store, batch_id="b1")
    store.move("j1", token, new_token(), status=JobStatus.RETRYING, target_index=0, attempt=2,
               deadline=time.time() + 60, batch_id="b1", counter="retried")
    assert store.cancel("j1", "b1") == "cancelled"
    assert inflight() == {} and counters()["waiting"] == 0 and counters()["cancelled"] == 1


def test_cancel_running_job_is_a_request(store):
    running_job(store)
    assert store.cancel_requested("j1") is False
    assert store.cancel("j1") == "requested"
    assert store.cancel_requested("j1") is True
    assert store.status("j1") is JobStatus.RUNNING


def test_cancel_finished_job_returns_its_status(store):
    running_job(store)
    store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "x"}, batch_id=None)
    assert store.cancel("j1") == "succeeded"


# --- reap / release --------------------------------------------------------------


def test_reap_claims_a_dead_job_once_under_concurrent_reapers(redis_server, store, keys, inflight):
    old = running_job(store, lease=-1)
    stores = [JobStore(redis_server.client(), keys) for _ in range(2)]
    barrier = threading.Barrier(len(stores))
    results = [None] * len(stores)

    def reaper(i):
        barrier.wait(5)
        results[i] = stores[i].reap(redeadline_s=30)

    threads = [threading.Thread(target=reaper, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    claims = [c for r in results for c in r]
    assert len(claims) == 1, results
    claim = claims[0]
    assert claim["id"] == "j1" and claim["status"] == "running"
    assert (claim["target_index"], claim["attempt"]) == (0, 1)
    assert claim["spec"] == spec() and claim["token"] != old
    assert store.status("j1") is JobStatus.QUEUED
    assert time.time() + 25 < inflight()["j1"] <= time.time() + 30
    assert store.start("j1", old, "w1", 30, None) == "stale"
    assert store.start("j1", claim["token"], "w2", 30, None) == "run"
    for s in stores:
        s.redis.close()


def test_many_dead_jobs_each_claimed_exactly_once(redis_server, store, keys):
    ids = [f"j{i}" for i in range(60)]
    for jid in ids:
        running_job(store, jid, lease=-1)
    stores = [JobStore(redis_server.client(), keys) for _ in range(4)]
    claimed, lock = [], threading.Lock()

    def reaper(s):
        while True:
            batch = s.reap(limit=7)
            if not batch:
                return
            with lock:
                claimed.extend(batch)

    threads = [threading.Thread(target=reaper, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(c["id"] for c in claimed) == sorted(ids)
    assert len({c["token"] for c in claimed}) == len(ids)
    for s in stores:
        s.redis.close()


def test_reap_ignores_live_jobs_and_drops_finished_entries(store, redis_client, keys, inflight):
    running_job(store, "alive", lease=60)
    running_job(store, "done", lease=-1)
    store.finish("done", status=JobStatus.SUCCEEDED, payload={"text": "x"}, batch_id=None)
    redis_client.zadd(keys.inflight, {"done": 1.0, "ghost": 1.0})  # stale entries
    assert store.reap() == []
    assert set(inflight()) == {"alive"}


def test_reap_of_a_lost_retry(store, counters):
    token = running_job(store, batch_id="b1")
    store.move("j1", token, new_token(), status=JobStatus.RETRYING, target_index=1, attempt=3,
               deadline=time.time() - 1, batch_id="b1", counter="retried")
    (claim,) = store.reap()
    assert (claim["status"], claim["target_index"], claim["attempt"]) == ("retrying", 1, 3)
    assert counters()["waiting"] == 0 and counters()["queued"] == 1 and counters()["recovered"] == 1


def test_release_only_while_queued_with_that_token(store, inflight):
    running_job(store, lease=-1)
    (claim,) = store.reap()
    assert store.release("j1", new_token()) is False
    assert "j1" in inflight()
    assert store.release("j1", claim["token"]) is True
    assert inflight() == {}
    # Once the re-published copy runs, releasing with that token does nothing.
    assert store.start("j1", claim["token"], "w2", 30, None) == "run"
    assert store.release("j1", claim["token"]) is False
    assert "j1" in inflight()


# --- requeue / heartbeat ---------------------------------------------------------


def test_requeue_failed_only_for_failed_jobs(store, redis_client, keys, counters):
    token = running_job(store, batch_id="b1")
    assert store.requeue_failed("j1", new_token(), "b1") is False
    redis_client.lpush(keys.dead_letter, "other")
    store.finish("j1", status=JobStatus.FAILED, payload={"message": "x"}, batch_id="b1", token=token)
    redis_client.lpush(keys.dead_letter, "j1")
    store.add_attempt("j1", {"attempt": 1})
    assert store.dead_letters() == ["j1", "other"]
    fresh = new_token()
    assert store.requeue_failed("j1", fresh, "b1") is True
    record = store.get("j1")
    assert (record.status, record.target_index, record.attempt) == (JobStatus.QUEUED, 0, 1)
    assert record.error is None and record.finished_at is None
    assert field(redis_client, keys, "j1", "token") == fresh
    assert redis_client.ttl(keys.job("j1")) == -1 and redis_client.ttl(keys.attempts("j1")) == -1
    assert store.dead_letters() == ["other"]
    assert counters()["failed"] == 0 and counters()["queued"] == 1
    assert store.requeue_failed("j1", new_token(), "b1") is False
    assert store.requeue_failed("nope", new_token(), None) is False


def test_requeue_clears_an_old_cancel_request(store, redis_client, keys):
    token = running_job(store)
    assert store.cancel("j1") == "requested"
    store.finish("j1", status=JobStatus.FAILED, payload={"message": "x"}, batch_id=None, token=token)
    assert store.requeue_failed("j1", new_token(), None) is True
    assert store.cancel_requested("j1") is False


def test_refresh_pushes_deadlines_without_resurrecting(store, inflight):
    running_job(store, "a", lease=5)
    running_job(store, "b", lease=5)
    store.finish("b", status=JobStatus.SUCCEEDED, payload={"text": "x"}, batch_id=None)
    deadline = time.time() + 500
    store.refresh(["a", "b", "never"], deadline)
    assert inflight() == {"a": pytest.approx(deadline, abs=1e-3)}
    store.refresh([], deadline)  # no-op, no error


def test_a_batch_expires_twice_the_record_ttl_after_its_last_job_finished(store, redis_client, keys):
    token = new_token()
    store.create(spec(batch_id="b9"), token)
    redis_client.rpush(keys.batch_jobs("b9"), "j1")  # as submit_batch lists it
    assert redis_client.ttl(keys.batch("b9")) == -1  # no expiry while nothing finished
    assert store.start("j1", token, "w1", 30, "b9") == "run"
    assert store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "x"}, batch_id="b9") == 1
    for key in (keys.batch("b9"), keys.batch_jobs("b9")):
        assert store.result_ttl_s * 2 - 5 <= redis_client.ttl(key) <= store.result_ttl_s * 2
    assert 0 < redis_client.ttl(keys.job("j1")) <= store.result_ttl_s


def test_create_many_writes_new_records_with_their_messages_in_order_and_skips_existing_ones(
        store, redis_client, keys):
    specs = [{"id": f"m{i}", "targets": ["mock:m"], "prompt": f"p{i}", "batch_id": "b1"} for i in range(4)]
    store.create(specs[1], "old-token")  # a line submitted before
    redis_client.delete(keys.inflight)
    lists = ["q:a", "q:a", "q:b", "q:a"]
    pipe = redis_client.pipeline(transaction=False)
    store.create_many(specs, ["t0", "t1", "t2", "t3"], "b1", pipe, [(q, f"msg{i}") for i, q in enumerate(lists)])
    (created,) = pipe.execute()
    assert created == [1, 0, 1, 1]
    assert redis_client.hget(keys.job("m1"), "token") == b"old-token"  # the existing record untouched
    assert redis_client.hget(keys.job("m2"), "token") == b"t2"
    # Only new records got a message, each on its own list, in line order (a worker pops from the right).
    assert redis_client.lrange("q:a", 0, -1) == [b"msg3", b"msg0"] and redis_client.lrange("q:b", 0, -1) == [b"msg2"]
    assert redis_client.zcard(keys.inflight) == 0  # nothing left for a reaper to send
    assert redis_client.hget(keys.batch("b1"), "queued") == b"4"  # the earlier line, then three new ones




# --- spend limit -------------------------------------------------------------------


def test_a_batch_job_is_halted_at_start_once_its_batch_spent_its_limit(store, redis_client, keys):
    # Two jobs cost 300 and 200 nano-dollars against a 500 limit: the third is
    # not started ('halted', nothing changed); a job of no batch is not held back.
    redis_client.hset(keys.batch("b1"), "max_cost_nusd", 500)
    for job_id, cost in (("j1", 300), ("j2", 200)):
        token = running_job(store, job_id, batch_id="b1")
        store.finish(job_id, status=JobStatus.SUCCEEDED, payload={"text": "ok"}, batch_id="b1", token=token,
                     cost_nano=cost)
    assert int(redis_client.hget(keys.batch("b1"), "cost_nusd")) == 500
    token = new_token()
    assert store.create(spec("j3", "b1"), token)
    assert store.start("j3", token, "w1", 30.0, "b1") == "halted"
    assert field(redis_client, keys, "j3", "status") == "queued"
    assert running_job(store, "solo") is not None
    # A raised limit lets the batch go on.
    redis_client.hset(keys.batch("b1"), "max_cost_nusd", 501)
    assert store.start("j3", token, "w1", 30.0, "b1") == "run"


def test_a_free_job_adds_no_cost_field_and_a_batch_without_a_limit_never_halts(store, redis_client, keys):
    token = running_job(store, "j1", batch_id="b1")
    store.finish("j1", status=JobStatus.SUCCEEDED, payload={"text": "ok"}, batch_id="b1", token=token, cost_nano=0)
    assert redis_client.hget(keys.batch("b1"), "cost_nusd") is None
    token = running_job(store, "j2", batch_id="b1")
    store.finish("j2", status=JobStatus.SUCCEEDED, payload={"text": "ok"}, batch_id="b1", token=token,
                 cost_nano=10**15)
    assert running_job(store, "j3", batch_id="b1") is not None
