"""Deterministic reproductions of the two windows random kills hit only by
chance, using the test-only pause hook (tasks/test_hooks.py):

* after_fetch: the message has left the queue and Celery has not seen it
  (kombu's BRPOP-to-`unacked` window, where a kill used to lose it for good);
* before_start: Celery holds the message, `JobStore.start` has not run (the
  job was neither `running` nor in `inflight`, so only the one-hour
  visibility timeout brought it back).

Each kills the worker held at that point and times how long the job takes
to be answered by a second worker: within the lease time, exactly one
provider call.
"""

from __future__ import annotations

import time

import pytest

from tests.worker_process import wait_for

from .conftest import report, assert_batch_answered_once, calls_per_prompt, duplicate_calls, submit

pytestmark = pytest.mark.faults

#: Lease 3 s and heartbeat 0.5 s (tests/worker_process.py): a dead worker's
#: job must be answered well before this; the visibility timeout is 3,600 s.
RECOVERY_LIMIT_S = 15


def hold(redis_aof, point):
    client = redis_aof.client()
    client.set(f"promptq:test:pause:{point}", "1")
    return client


@pytest.mark.parametrize("point", ["after_fetch", "before_start"])
def test_worker_killed_between_fetch_and_start_loses_nothing(point, redis_aof, openai, client, workers):
    r = hold(redis_aof, point)
    doomed = workers("doomed", PROMPTQ_TEST_PAUSE_AT=point)
    batch_id = submit(client, 1)
    wait_for(lambda: r.get(f"promptq:test:paused:{point}"), 20, message=f"the worker to pause at {point}")
    doomed.kill()
    killed_at = time.monotonic()
    assert openai.requests == []  # it died before any provider call
    r.delete(f"promptq:test:pause:{point}")
    rescuer = workers("rescuer")
    results = assert_batch_answered_once(client, batch_id, 1, alive=[rescuer], timeout_s=RECOVERY_LIMIT_S)
    report(f"SIGKILL at {point}", 1, results, openai)
    assert time.monotonic() - killed_at < RECOVERY_LIMIT_S
    assert list(calls_per_prompt(openai).values()) == [1] and duplicate_calls(openai) == 0
    assert "re-queued" in rescuer.log()
    # Nothing is left behind for kombu's visibility timeout to restore an hour later.
    wait_for(lambda: r.hlen("unacked") == 0, 10, message="the unacked hash to empty")
    assert not r.keys("promptq:processing:*")


def test_redis_restart_while_a_job_starts_never_acknowledges_it(redis_aof, openai, client, workers):
    """Redis goes away exactly when a worker calls `JobStore.start`: the worker
    waits for it (one log line per try) instead of failing and acknowledging
    the message of a job that never ran."""
    r = hold(redis_aof, "before_start")
    worker = workers("steady", PROMPTQ_TEST_PAUSE_AT="before_start")
    batch_id = submit(client, 1)
    wait_for(lambda: r.get("promptq:test:paused:before_start"), 20, message="the worker to pause before start")
    r.close()
    # The held worker sees Redis gone, leaves the pause and goes on into
    # store.start, which cannot reach Redis either.
    redis_aof.shutdown()
    wait_for(lambda: "redis unavailable during job" in worker.log(), 20, message="the worker to wait for redis")
    redis_aof.start_again()
    redis_aof.client().delete("promptq:test:pause:before_start")
    results = assert_batch_answered_once(client, batch_id, 1, alive=[worker], timeout_s=60)
    report("redis shutdown at before_start", 1, results, openai)
    assert duplicate_calls(openai) == 0
    log = worker.log_path.read_text(errors="replace")
    assert "Unrecoverable error" not in log and "redis is back: job" in log


def test_worker_killed_between_call_and_result_write_answers_once(redis_aof, openai, client, workers):
    """The one window where at-least-once costs a second provider call: the
    answer came back and the worker died before writing it. The job is
    answered once (the batch has one line for it), and the fake counts the
    two calls this costs -- what README "Guarantees" says."""
    r = hold(redis_aof, "before_record")
    doomed = workers("doomed", PROMPTQ_TEST_PAUSE_AT="before_record")
    batch_id = submit(client, 1)
    wait_for(lambda: r.get("promptq:test:paused:before_record"), 20, message="the worker to pause before the write")
    doomed.kill()
    r.delete("promptq:test:pause:before_record")
    rescuer = workers("rescuer")
    results = assert_batch_answered_once(client, batch_id, 1, alive=[rescuer], timeout_s=RECOVERY_LIMIT_S)
    report("SIGKILL at before_record", 1, results, openai)
    assert list(calls_per_prompt(openai).values()) == [2]


def test_default_settings_redispatch_a_dead_workers_job_within_10_s(redis_aof, openai, client, workers):
    """Issue 10 item 5, with the shipped heartbeat and lease (not the tests' fast ones)."""
    from promptq.tasks.settings import Settings

    defaults = Settings()
    env = {"PROMPTQ_HEARTBEAT_S": str(defaults.heartbeat_s), "PROMPTQ_LEASE_TTL_S": str(defaults.lease_ttl_s),
           "PROMPTQ_TEST_PAUSE_AT": "before_start"}
    r = hold(redis_aof, "before_start")
    pair = {proc.proc.pid: proc for proc in (workers("one", **env), workers("two", **env))}
    batch_id = submit(client, 1)
    paused = wait_for(lambda: r.get("promptq:test:paused:before_start"), 20, message="a worker to pause")
    doomed = pair.pop(int(paused.split()[0]))
    doomed.kill()
    killed_at = time.monotonic()
    r.delete("promptq:test:pause:before_start")
    results = assert_batch_answered_once(client, batch_id, 1, alive=list(pair.values()), timeout_s=20)
    took = time.monotonic() - killed_at
    report(f"SIGKILL before start, default lease: answered {took:.1f}s after the kill", 1, results, openai)
    assert took < 10, took
