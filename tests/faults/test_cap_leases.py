"""A configured concurrency cap against SIGKILL: the slot a killed worker held
mid-call comes back within the fault-detection time (not the ten-minute
lease TTL), while a live worker's long call keeps its slot for as long as it
runs (tasks/held_leases.py)."""

from __future__ import annotations

import json
import time

import pytest

from promptq.tasks.batch import submit_batch
from tests.worker_process import FAST_ENV, wait_for

from .conftest import TARGET, assert_batch_answered_once, report

pytestmark = pytest.mark.faults

CAP = {"PROMPTQ_LIMIT_OPENAI_CONCURRENCY": "1"}
CAP_KEY = "promptq:cap:openai:conc"
LEASE_TTL_S = float(FAST_ENV["PROMPTQ_LEASE_TTL_S"])
#: Lease 3 s, heartbeat 0.5 s: a dead worker's slot and job are back well
#: before this; with the old fixed lease the slot stayed taken for 600 s.
RECOVERY_LIMIT_S = 15


def one_job(client, prompt: str) -> str:
    line = json.dumps({"custom_id": "c0", "prompt": prompt}) + "\n"
    return submit_batch(client, [line], targets=[TARGET]).batch_id


def lease_left_s(r) -> float:
    seconds, micros = r.time()
    scores = [score for _, score in r.zrange(CAP_KEY, 0, -1, withscores=True)]
    return max(scores) - (seconds + micros / 1e6) if scores else 0.0


def test_a_killed_workers_cap_slot_comes_back_within_the_lease_time(redis_aof, openai, client, workers):
    r = redis_aof.client()
    openai.push("hang")  # the first call never answers: the worker dies inside it
    doomed = workers("doomed", **CAP)
    first = one_job(client, "held by a worker about to die")
    openai.wait_for_requests(1, timeout=20)
    assert r.zcard(CAP_KEY) == 1  # the cap's only slot, taken by the call under way
    rescuer = workers("rescuer", **CAP)  # up before the kill: the clock below times detection only
    doomed.kill()
    killed_at = time.monotonic()
    second = one_job(client, "waits for the slot")
    # The dead worker's job comes back after the lease time and must get the
    # slot too: both are answered, one after the other, under the cap of one.
    wait_for(lambda: len(openai.requests) >= 2, RECOVERY_LIMIT_S, 0.05, "a call after the slot came back")
    back_s = time.monotonic() - killed_at
    for batch_id in (first, second):
        results = assert_batch_answered_once(client, batch_id, 1, alive=[rescuer], timeout_s=RECOVERY_LIMIT_S)
    took_s = time.monotonic() - killed_at
    report(f"SIGKILL mid-call under a concurrency cap of 1: slot back {back_s:.1f}s, both answered {took_s:.1f}s "
           "after the kill", 2, results * 2, openai)
    assert took_s < RECOVERY_LIMIT_S, took_s
    assert len(openai.requests) == 3  # the hung call, its job again, the second job


def test_a_live_long_call_keeps_its_slot_past_the_lease_ttl(redis_aof, openai, client, workers):
    r = redis_aof.client()
    call_s = 3 * LEASE_TTL_S  # several lease times: only the heartbeat keeps the slot
    worker = workers("steady", **CAP)
    first = one_job(client, f"a long call [[fault:slow:{call_s}]]")
    openai.wait_for_requests(1, timeout=20)
    started = time.monotonic()
    # Kept alive, not long-lived: the lease is short, so this is the heartbeat's doing.
    assert 0 < lease_left_s(r) <= LEASE_TTL_S + 0.5, lease_left_s(r)
    second = one_job(client, "waits for the long call")
    wait_for(lambda: len(openai.requests) >= 2, call_s + RECOVERY_LIMIT_S, 0.05, "the second job's call")
    waited_s = time.monotonic() - started
    assert waited_s >= call_s - 0.5, f"the second call went {waited_s:.1f}s into a {call_s}s call under a cap of 1"
    for batch_id in (first, second):
        assert_batch_answered_once(client, batch_id, 1, alive=[worker], timeout_s=RECOVERY_LIMIT_S)
