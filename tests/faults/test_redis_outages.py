"""Redis going away mid-batch: a clean shutdown, a SIGKILL (AOF with fsync
always, so what was acknowledged to a client is on disk), and `maxmemory`
refusing writes for a few seconds. Workers wait and reconnect, never exit,
and every job is answered exactly once."""

from __future__ import annotations

import time

import pytest

from promptq.tasks.batch_results import batch_status
from tests.worker_process import wait_for

from .conftest import report, assert_batch_answered_once, duplicate_calls, submit

pytestmark = pytest.mark.faults

N = 120


def _midway(client, batch_id, done=20):
    wait_for(lambda: batch_status(client, batch_id)["done"] >= done, 60, 0.02, f"{done} jobs done")


@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
def test_redis_restart_mid_batch(how, redis_aof, openai, client, workers):
    a, b = workers("a"), workers("b")
    batch_id = submit(client, N)
    _midway(client, batch_id)
    if how == "sigkill":
        redis_aof.kill()
    else:
        redis_aof.shutdown()
    time.sleep(2)  # the outage itself: Redis stays down this long
    redis_aof.start_again()
    results = assert_batch_answered_once(client, batch_id, N, alive=[a, b], timeout_s=90)
    report(f"redis {how} mid-batch", N, results, openai)
    for proc in (a, b):
        log = proc.log_path.read_text(errors="replace")
        # Waited out with one line per retry: no crash, not even a traceback.
        assert "Unrecoverable error" not in log and "Traceback" not in log, log[-3000:]
    print(f"redis {how}: {N} jobs, duplicate provider calls: {duplicate_calls(openai)}")


def test_redis_at_maxmemory_for_a_few_seconds(redis_aof, openai, client, workers):
    a, b = workers("a"), workers("b")
    r = redis_aof.client()
    batch_id = submit(client, N)
    _midway(client, batch_id)
    r.config_set("maxmemory-policy", "noeviction")  # what compose pins
    r.config_set("maxmemory", 1)  # every write that may need memory is refused: OOM
    time.sleep(4)  # the fault lasts this long
    r.config_set("maxmemory", 0)
    results = assert_batch_answered_once(client, batch_id, N, alive=[a, b], timeout_s=90)
    report("redis at maxmemory for 4 s", N, results, openai)
    for proc in (a, b):
        log = proc.log_path.read_text(errors="replace")
        assert "Unrecoverable error" not in log and "Traceback" not in log, log[-3000:]
    print(f"maxmemory: {N} jobs, duplicate provider calls: {duplicate_calls(openai)}")
