"""The baseline: a bare Celery task making the same HTTP call with `requests`.

    celery -A bench.bare_app worker -Q bench.bare -P threads -c 32 -E

Same broker (the bench's Redis), same pool and concurrency as the promptq
worker it is compared with, its own queue, and the text returned into
Celery's Redis result backend (one `celery-task-meta-<id>` key per task),
so "result stored" means the same thing on both sides. It shares promptq's
Celery choices that are configuration, not promptq code -- JSON only, late
acks, prefetch one per slot, task events on (`-E`), broker connections
sized to the pool -- so the ratio measures what promptq's own code costs
on top of Celery: job records, tokens, leases, events, the provider layer.

Configured from the environment, set by the bench: BENCH_REDIS_URL,
BENCH_BASE_URL, BENCH_API_KEY, BENCH_CONCURRENCY.
"""

from __future__ import annotations

import os
import time

import requests
from celery import Celery
from celery.signals import worker_ready
from requests.adapters import HTTPAdapter

QUEUE = "bench.bare"
TASK = "bench.bare_call"
READY_KEY = "bench:bare:ready"

_redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_concurrency = int(os.environ.get("BENCH_CONCURRENCY", "32"))
_connections = max(64, _concurrency * 2 + 16)

app = Celery("bench_bare", broker=_redis_url, backend=_redis_url, set_as_current=False)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=True,
    broker_connection_retry_on_startup=True,
    broker_pool_limit=_connections,
    broker_transport_options={"max_connections": _connections},
    redis_max_connections=_connections,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
)

_session = requests.Session()
_adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(32, _concurrency), max_retries=0)
_session.mount("http://", _adapter)


@app.task(name=TASK)
def bare_call(prompt: str, model: str = "gpt-4o-mini") -> str:
    response = _session.post(
        os.environ["BENCH_BASE_URL"] + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": prompt}]},
        headers={"Authorization": "Bearer " + os.environ["BENCH_API_KEY"]},
        timeout=(10.0, 120.0),
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


@worker_ready.connect
def _ready(sender=None, **_):
    import redis

    client = redis.Redis.from_url(_redis_url)
    client.hset(READY_KEY, str(os.getpid()), time.time())
    client.close()
