"""The entry point `celery -A promptq.workers.celery_app ...` loads.

This module is the one place where the app is built from the environment
(and `PROMPTQ_CONFIG`), because Celery's CLI needs a module attribute. It is
imported only by worker and Flower processes; Celery connects lazily, so even
here nothing talks to Redis until the worker starts.
"""

from promptq.tasks.app import create_app
from promptq.tasks.settings import Settings

from .metrics import metrics_observer_factory

settings = Settings.load()
app = create_app(settings, observer_factory=metrics_observer_factory(settings))
