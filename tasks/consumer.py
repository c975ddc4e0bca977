"""The worker's Celery consumer: Celery's, with poison messages set aside
(tasks.poison_consumer) and task events batched (tasks.task_events).
Set by `worker_consumer` in tasks.app.
"""

from __future__ import annotations

from .poison_consumer import PoisonConsumer
from .task_events import CELERY_EVENTS_STEP


class WorkerConsumer(PoisonConsumer):
    class Blueprint(PoisonConsumer.Blueprint):
        default_steps = [added for step in PoisonConsumer.Blueprint.default_steps
                         for added in ([step, f"{__package__}.task_events:BatchedEvents"]
                                       if step == CELERY_EVENTS_STEP else [step])]
