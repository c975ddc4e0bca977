"""A failure to start a job never acknowledges its message (issue 10 item 2):
Redis errors that mean "not now" are waited out, anything else rejects the
message back to its queue instead of failing (and so acking) the task."""

from __future__ import annotations

import pytest
import redis
from celery.exceptions import Reject

from promptq.tasks import round_trips
from promptq.tasks import run as run_module
from promptq.tasks.app import create_app
from promptq.tasks.runtime import Runtime
from promptq.tasks.store import new_token


@pytest.fixture
def job(settings, store):
    app = create_app(settings)
    rt = Runtime(settings, app)
    token = new_token()
    spec = {"id": "j1", "targets": ["mock:m"], "prompt": "p", "stream": False, "batch_id": None}
    store.create(spec, token)
    yield run_module.JobRun(rt, None, "j1", spec, 0, 1, token)
    rt.close()
    app.close()


def failing(errors, monkeypatch):
    real = round_trips.execute_scripts
    calls = []

    def execute(client, pipe):
        calls.append(1)
        if errors:
            pipe.reset()
            raise errors.pop(0)
        return real(client, pipe)

    # Every job pipeline goes out through RoundTrips, one execute_scripts per round trip.
    monkeypatch.setattr(round_trips, "execute_scripts", execute)
    return calls


def test_transient_redis_errors_are_waited_out(job, monkeypatch, caplog):
    monkeypatch.setattr(run_module.wait_for_redis.__globals__["time"], "sleep", lambda s: None)
    calls = failing([redis.ConnectionError("down"), redis.exceptions.BusyLoadingError("LOADING"),
                     redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'")],
                    monkeypatch)
    verdict, _allow, _first = job._start()
    assert verdict == "run" and len(calls) == 4
    waits = [r for r in caplog.records if "redis unavailable during job j1: start" in r.getMessage()]
    assert len(waits) == 3 and all(r.exc_info is None for r in waits)  # one line each, no traceback


def test_any_other_start_failure_requeues_the_message(job, monkeypatch):
    failing([redis.exceptions.ResponseError("ERR something unexpected")], monkeypatch)
    with pytest.raises(Reject) as info:
        job._start()
    assert info.value.requeue is True


def test_an_endpoint_seen_closed_gets_its_admission_in_the_start_round_trip(job, monkeypatch):
    calls = failing([], monkeypatch)
    verdict, allow, first = job._start()
    assert verdict == "run" and first is None and len(calls) == 1  # nothing known yet: asked later
    job._remember_circuit(allow)
    assert job.endpoint in job.rt.closed_circuits
    verdict, allow, first = job._start()
    assert verdict == "run" and len(calls) == 2  # still one round trip, admission included
    admission = first()
    assert admission.granted and admission.lease_id
    job._give_back(first)


def test_a_job_that_may_spill_never_books_a_turn_before_the_spill_check(job, monkeypatch):
    job.rt.closed_circuits.add(job.endpoint)
    job.spec.update(spill=True)
    job.targets.append("mock:other")
    _, _, first = job._start()
    assert first is None


def test_an_early_admission_for_a_dropped_delivery_gives_its_concurrency_back(job, redis_client):
    job.rt.closed_circuits.add(job.endpoint)
    slow_start = job.rt.limiter.bucket_key(job.endpoint, "slowstart")
    _, _, first = job._start()
    assert redis_client.zcard(slow_start) == 1  # a cold endpoint's slow-start slot, taken
    job._give_back(first)
    assert redis_client.zcard(slow_start) == 0


def test_an_open_circuit_is_forgotten_so_the_next_job_asks_after_it(job):
    job.rt.closed_circuits.add(job.endpoint)

    denied = job.rt.health.queue_allow_request(job.endpoint, job.rt.redis)
    denied.reply = 0  # what the script answers for an open circuit
    job._remember_circuit(denied)
    assert job.endpoint not in job.rt.closed_circuits
