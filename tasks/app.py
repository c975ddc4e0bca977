"""The Celery app, built from `Settings` at an entry point, never on import.

Everything that matters for durability is set here, with the reason:
JSON only (a pickled message is refused), late acks so a crash redelivers,
prefetch of one per slot because LLM calls are long, a visibility timeout
above the longest retry countdown, and broker connection limits sized to the
pool (kombu's Redis transport defaults to 10, which stalls a big pool).
"""

from __future__ import annotations

import ssl
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from celery import Celery
from celery.signals import worker_ready

from .heap import freeze_startup_heap
from .keys import Keys
from .lanes import PRIORITY_STEPS
from .observer import Observer
from .producer_pool import OwnProducerPoolAMQP
from .run import register_tasks
from .settings import Settings


#: URL schemes served by kombu's plain Redis transport, which reliable fetch extends.
RELIABLE_FETCH_SCHEMES = ("redis", "rediss", "redis+socket", "unix", "socket")


def broker_options(redis_url: str) -> dict:
    """Reliable fetch (tasks.reliable_fetch) for plain Redis URLs.

    Naming the transport class replaces the one kombu would pick from the URL
    scheme, so what the scheme implied must be kept: `rediss://` means TLS
    (verified, unless the URL's `ssl_cert_reqs` says otherwise; kombu alone
    would fall back to an unverified connection). `sentinel://` keeps kombu's
    Sentinel transport, without reliable fetch.
    """
    parts = urlsplit(redis_url)
    if parts.scheme not in RELIABLE_FETCH_SCHEMES:
        return {}
    options: dict = {"broker_transport": "promptq.tasks.reliable_fetch:Transport"}
    if parts.scheme == "rediss" and "ssl_cert_reqs" not in parts.query:
        options["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def create_app(
    settings: Settings,
    *,
    observer_factory: Optional[Callable[[], Observer]] = None,
    main: str = "promptq",
) -> Celery:
    keys = Keys(settings.key_prefix)
    max_connections = settings.effective_broker_max_connections
    app = Celery(main, broker=settings.redis_url, set_as_current=False, amqp=OwnProducerPoolAMQP)
    # Reliable fetch (tasks.reliable_fetch, built on tasks.broker's channel
    # that keeps one Redis client) for plain Redis URLs.
    app.conf.update(broker_options(settings.redis_url))
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # Job records in Redis are the results (tasks.store): richer than
        # Celery's backend, and one write per job instead of two.
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        # On a broker connection loss, running jobs go on: their results go
        # to the job records, and their messages (which the lost channel can
        # no longer ack) are settled from the processing list. Cancelling
        # them would only pay for the same calls twice.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        # A worker waits out a Redis outage of any length (Celery's default
        # gives up, and exits, after 100 tries).
        broker_connection_max_retries=None,
        broker_pool_limit=max_connections,
        # Messages Celery cannot take in go to the poison list (tasks.poison);
        # task events go out in batches (tasks.task_events).
        worker_consumer="promptq.tasks.consumer:WorkerConsumer",
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "max_connections": max_connections,
            "socket_keepalive": True,
            "health_check_interval": 25,
            "promptq_key_prefix": settings.key_prefix,
            # One Redis list per lane; BRPOP asks every interactive list
            # before any batch one (tasks.lanes). Producers and workers
            # must agree on the steps, so they are set here, for both.
            "priority_steps": list(PRIORITY_STEPS),
        },
        task_default_queue=keys.queue("default"),
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    app.promptq_settings = settings
    app.promptq_observer_factory = observer_factory
    register_tasks(app)

    return app


@worker_ready.connect
def _start_runtime(sender: Any = None, **_: Any) -> None:
    """Start heart-beating and reaping as soon as a promptq worker is up, not
    on its first job: an idle worker must still recover a dead one's jobs.

    Connected once, here, for every app `create_app` builds (they carry
    `promptq_settings`): a handler connected per app, i.e. per `Client`,
    would keep each app alive for as long as the process runs.
    """
    app = getattr(sender, "app", None)
    if getattr(app, "promptq_settings", None) is None:
        return
    from .runtime import get_runtime

    get_runtime(app)
    freeze_startup_heap(collect=True)
