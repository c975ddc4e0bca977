"""SIGKILL at random moments of a batch, repeated with seeds.

Two workers run a batch against a fake OpenAI that takes 0.2 s per call;
every so often (seeded random) one is killed with SIGKILL and a new one
started. At each kill the test reads, from Redis, which windows of a job's
life the dead worker held jobs in:

* before_fetch   -- messages still waiting in the queue;
* fetch_to_start -- messages in the dead process's processing list whose job
                    never started;
* start_to_call  -- jobs it started that the provider never saw;
* mid_call       -- jobs whose provider call was under way.

Seeds are tried until before_fetch and mid_call have both been hit (the
fetch-to-start and call-to-result-write windows are microseconds wide with a
threads pool, so test_windows.py reaches them deterministically). Every
batch must be answered exactly once, with every worker alive at the end;
duplicate provider calls are counted and reported per 1,000 jobs.
"""

from __future__ import annotations

import json
import random
import time
from typing import Dict, List, Set

import pytest

from promptq.tasks.batch_results import batch_status
from promptq.tasks.recovery import describe
from tests.fakes.openai_server import FakeOpenAI

from .conftest import report, KEY, assert_batch_answered_once, calls_per_prompt, duplicate_calls, submit

pytestmark = pytest.mark.faults

N = 150
KILLS = 4
SEEDS = (1, 2, 3)


@pytest.fixture
def openai():
    with FakeOpenAI(api_key=KEY, latency_s=0.2) as server:
        yield server


def windows_held(r, client, dead_pid: int, dead_name: str, openai) -> Set[str]:
    hit: Set[str] = set()
    from promptq.tasks.lanes import queue_lists

    if any(r.llen(key) for key in queue_lists("promptq.openai").values()):  # every lane's list
        hit.add("before_fetch")
    seen_prompts = set(calls_per_prompt(openai))
    for key in r.keys(f"promptq:processing:*:{dead_pid}:*"):
        for item in r.lrange(key, 0, -1):
            try:
                _, job_id, _token = describe(item)
            except ValueError:
                continue
            record = client.store.get(job_id)
            if record and record.status.value == "queued":
                hit.add("fetch_to_start")
    for job_id in r.zrange("promptq:inflight", 0, -1):
        record = client.store.get(job_id.decode())
        if record and record.status.value == "running" and record.worker == dead_name:
            hit.add("mid_call" if record.spec.get("prompt") in seen_prompts else "start_to_call")
    return hit


def storm(seed: int, redis_aof, client, workers, openai) -> Dict[str, object]:
    rng = random.Random(seed)
    r = redis_aof.client()
    live = [workers(f"s{seed}a"), workers(f"s{seed}b")]
    batch_id = submit(client, N, tag=f"seed{seed}")
    hit: Set[str] = set()
    for k in range(KILLS):
        time.sleep(rng.uniform(0.3, 1.2))  # where the kill lands is the experiment
        if batch_status(client, batch_id)["finished"]:
            break
        victim = live.pop(rng.randrange(len(live)))
        name, pid = victim.worker_name, victim.proc.pid
        victim.kill()
        hit |= windows_held(r, client, pid, name, openai)
        live.append(workers(f"s{seed}r{k}"))
    results = assert_batch_answered_once(client, batch_id, N, alive=live, timeout_s=120)
    report(f"kill storm seed {seed} ({KILLS} SIGKILLs)", N, results, openai)
    return {"hit": hit, "duplicates": duplicate_calls(openai)}


def test_kill_storm_answers_every_job_once(redis_aof, openai, client, workers):
    hit: Set[str] = set()
    report: List[str] = []
    jobs = duplicates = 0
    for seed in SEEDS:
        before = duplicate_calls(openai)
        outcome = storm(seed, redis_aof, client, workers, openai)
        hit |= outcome["hit"]
        jobs += N
        duplicates = duplicate_calls(openai)
        report.append(f"seed {seed}: windows {sorted(outcome['hit'])}, duplicate calls {duplicates - before}")
        if {"before_fetch", "mid_call"} <= hit:
            break
    print("\n".join(report))
    print(json.dumps({"jobs": jobs, "kills": KILLS * len(report), "duplicate_calls": duplicates,
                      "duplicates_per_1000_jobs": round(1000 * duplicates / jobs, 1)}))
    assert {"before_fetch", "mid_call"} <= hit, report
