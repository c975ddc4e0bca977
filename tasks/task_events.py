"""Celery's task events (what Flower shows of each job), sent in batches.

Celery publishes task-received, task-started and task-succeeded as one
Redis PUBLISH each, or, with its event loop, one batch per loop turn: at a
busy worker's pace that is still more than one round trip per job
(bench/redis_cost.py counted 1.2-1.4), and under gevent/eventlet it does not
batch at all (its own "XXX" in celery/worker/consumer/events.py). Here every
pool batches them: a flusher sends what a process gathered at most
`EVENT_FLUSH_S` after the first of them (or at once when `EVENT_BUFFER_LIMIT`
pile up), one `task.multi` message that Flower and `celery events` read
as the separate events. A monitor sees a job at most that much later;
worker heartbeats (worker health) are not batched.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List

from celery import bootsteps
from celery.worker.consumer.events import Events

logger = logging.getLogger(__name__)

#: The longest a task event waits in the worker before it is published.
EVENT_FLUSH_S = 0.1
#: A batch this large goes out at once, without waiting for the flusher.
EVENT_BUFFER_LIMIT = 200
#: Celery's step; BatchedEvents goes right after it in the worker's consumer.
CELERY_EVENTS_STEP = "celery.worker.consumer.events:Events"


class EventFlusher:
    """One thread (a greenlet under gevent) that flushes a dispatcher's task events.

    `wake` is all a sending thread does: set a flag. The flusher waits for
    it, lets `EVENT_FLUSH_S` of events gather, then publishes them together.
    """

    def __init__(self, consumer: Any):
        self.consumer = consumer
        self.due = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="promptq-task-events", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self.due.set()

    def _run(self) -> None:
        while not self.stopped:
            self.due.wait()
            if self.stopped:
                return
            # Cleared before the flush: an event sent during it wakes the next round.
            self.due.clear()
            time.sleep(EVENT_FLUSH_S)
            self.flush()

    def flush(self) -> None:
        dispatcher = self.consumer.event_dispatcher
        if dispatcher is None:
            return
        try:
            dispatcher.flush(errors=False, groups=True)
        except Exception as exc:  # noqa: BLE001 - monitoring must never stop the worker
            logger.warning("could not publish task events (%s: %s)", type(exc).__name__, str(exc)[:200])

    def stop(self) -> None:
        self.stopped = True
        self.due.set()


class BatchedEvents(bootsteps.StartStopStep):
    """Runs after Celery's Events step: task events buffered under every pool."""

    requires = (Events,)

    def __init__(self, c: Any, **kwargs: Any):
        super().__init__(c, **kwargs)
        self.flusher: Any = None
        self.pending: Dict[str, List[Any]] = {}

    def start(self, c: Any) -> None:
        dispatcher = c.event_dispatcher
        if dispatcher is None:
            return
        if self.flusher is None:
            self.flusher = EventFlusher(c)
        dispatcher.buffer_group = frozenset({"task"})
        dispatcher.buffer_limit = EVENT_BUFFER_LIMIT
        dispatcher.on_send_buffered = self.flusher.wake
        # Events gathered before a reconnect replaced the dispatcher carry over.
        for group, events in self.pending.items():
            dispatcher._group_buffer[group].extend(events)
        if self.pending:
            self.pending = {}
            self.flusher.wake()

    def stop(self, c: Any) -> None:
        # A reconnect: Celery's step builds a new dispatcher and drops the old
        # one's buffers; keep what it held for the new one.
        dispatcher = c.event_dispatcher
        if dispatcher is not None:
            for group, events in dispatcher._group_buffer.items():
                self.pending.setdefault(group, []).extend(events)
                events.clear()

    def shutdown(self, c: Any) -> None:
        # What is still buffered goes out before the dispatcher closes.
        if self.flusher is not None:
            self.flusher.stop()
            self.flusher.flush()
