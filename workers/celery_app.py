"""The entry point `celery -A promptq.workers.celery_app ...` loads.

This module is the one place where the app is built from the environment
(and `PROMPTQ_CONFIG`), because Celery's CLI needs a module attribute. It is
imported only by worker and Flower processes; Celery connects lazily, so even
here nothing talks to Redis until the worker starts.
"""

from celery.signals import after_setup_logger

from promptq.tasks.app import create_app
from promptq.tasks.settings import Settings

from . import quiet_logs
from .metrics import metrics_observer_factory

settings = Settings.load()
app = create_app(settings, observer_factory=metrics_observer_factory(settings))
# While Redis is down: one line per retry, not a traceback each time.
after_setup_logger.connect(quiet_logs.install, weak=False)
