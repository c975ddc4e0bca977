"""A failure to start a job never acknowledges its message (issue 10 item 2):
Redis errors that mean "not now" are waited out, anything else rejects the
message back to its queue instead of failing (and so acking) the task."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis
from celery.exceptions import Reject

from promptq.tasks import redis_wait
from promptq.tasks.run import JobRun


class FlakyStore:
    def __init__(self, errors):
        self.errors = list(errors)
        self.calls = 0

    def start(self, *args):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "run"


def job_run(store):
    rt = SimpleNamespace(store=store, worker_name="w:1", settings=SimpleNamespace(lease_ttl_s=6.0))
    return JobRun(rt, None, "j1", {"targets": ["mock:m"]}, 0, 1, "tok")


def test_transient_redis_errors_are_waited_out(monkeypatch, caplog):
    monkeypatch.setattr(redis_wait.time, "sleep", lambda s: None)  # the waits themselves are not under test
    store = FlakyStore([redis.ConnectionError("down"), redis.exceptions.BusyLoadingError("LOADING"),
                        redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'")])
    assert job_run(store)._start() == "run"
    assert store.calls == 4
    waits = [r for r in caplog.records if "redis unavailable during job j1: start" in r.getMessage()]
    assert len(waits) == 3 and all(r.exc_info is None for r in waits)  # one line each, no traceback


def test_any_other_start_failure_requeues_the_message():
    store = FlakyStore([redis.exceptions.ResponseError("ERR something unexpected")])
    with pytest.raises(Reject) as info:
        job_run(store)._start()
    assert info.value.requeue is True
