"""Building Celery apps: each `Client` builds one, so building many must
leave nothing behind once they are closed, and must not touch other apps.
A producer that makes a Client per request runs these paths millions of times."""

from __future__ import annotations

import gc
import warnings
import weakref

from celery import Celery
from celery.exceptions import DuplicateTaskNameWarning
from celery.signals import worker_ready
from kombu import pools

from promptq.tasks.app import create_app
from promptq.tasks.client import Client
from promptq.tasks.keys import TASK_NAME
from promptq.tasks.settings import Settings

#: Nothing listens here: building a client or an app connects to nothing.
SETTINGS = Settings.load(environ={"PROMPTQ_REDIS_URL": "redis://127.0.0.1:1/0"})


def test_closed_clients_leave_no_app_and_no_signal_handler_behind():
    receivers = len(worker_ready.receivers)
    apps = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(20):
            client = Client(SETTINGS)
            apps.append(weakref.ref(client.app))
            assert TASK_NAME in client.app.tasks  # finalized, the task registered
            client.close()
            del client
    gc.collect()
    assert len(worker_ready.receivers) == receivers
    assert [ref() for ref in apps] == [None] * 20
    assert not [w for w in caught if issubclass(w.category, DuplicateTaskNameWarning)]


def test_run_job_belongs_to_its_own_app_only():
    first, second = create_app(SETTINGS), create_app(SETTINGS)
    other = Celery("someone-else", set_as_current=False)
    try:
        assert first.tasks[TASK_NAME].app is first
        assert second.tasks[TASK_NAME].app is second
        assert TASK_NAME not in other.tasks
    finally:
        for app in (first, second, other):
            app.close()


def _producers_held_process_wide() -> int:
    return sum(pool._resource.qsize() for pool in pools.producers.values())


def test_clients_that_submitted_leave_no_producers_behind(settings):
    # kombu's process-wide producer pool grew by 416 lazy producers for each
    # Client that submitted (tasks.producer_pool): ~100 KB a Client, forever.
    Client(settings).close()
    held = _producers_held_process_wide()
    apps = []
    for i in range(10):
        client = Client(settings)
        client.submit(f"leak check {i}", to=["mock:m"])
        apps.append(weakref.ref(client.app))
        client.close()
        del client
    gc.collect()
    assert _producers_held_process_wide() == held
    assert [ref() for ref in apps] == [None] * 10
