"""The entry point `celery -A promptq.workers.celery_app ...` loads.

This module is the one place where the app is built from the environment
(and `PROMPTQ_CONFIG`), because Celery's CLI needs a module attribute. It is
imported only by worker and Flower processes; Celery connects lazily, so even
here nothing talks to Redis until the worker starts.
"""

import logging
from typing import Any

from celery.signals import after_setup_logger, celeryd_after_setup, worker_process_init

from promptq.tasks.app import create_app
from promptq.tasks.heap import freeze_startup_heap
from promptq.tasks.job import KNOWN_PROVIDERS
from promptq.tasks.keys import Keys
from promptq.tasks.settings import Settings

from . import quiet_logs
from .metrics import metrics_observer_factory
from .provider_keys import advice, missing_keys

logger = logging.getLogger(__name__)

settings = Settings.load()
app = create_app(settings, observer_factory=metrics_observer_factory(settings))
# While Redis is down: one line per retry, not a traceback each time.
after_setup_logger.connect(quiet_logs.install, weak=False)


@worker_process_init.connect(weak=False)
def _freeze_child(**_: Any) -> None:
    # A prefork child runs the jobs. The parent froze its own heap on
    # worker_ready (tasks.app), which came after the children were forked.
    freeze_startup_heap(collect=False)


@celeryd_after_setup.connect(weak=False)
def _skip_queues_without_keys(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """A worker started by plain Celery for a provider it has no key for stops
    consuming that queue, loudly, instead of taking its jobs only to fail them
    (`promptq worker` refuses to start instead: workers.provider_keys)."""
    if instance is None or instance.app is not app:
        return
    keys = Keys(settings.key_prefix)
    queues = instance.app.amqp.queues
    by_provider = {keys.queue(p): p for p in KNOWN_PROVIDERS}
    consumed = [by_provider[name] for name in list(queues.consume_from) if name in by_provider]
    for provider, variable in missing_keys(settings, consumed):
        queues.deselect(keys.queue(provider))
        logger.error("NOT consuming %s: %s", keys.queue(provider), advice(provider, variable))
    if not queues.consume_from:
        logger.error("this worker consumes no queue at all: every provider it was given lacks its key")
