"""A producer's submit of one job: its record and message in one script, run by either client shell.

The message goes straight onto its lane's list (kombu's Redis publish is
that LPUSH; `tasks.batch_submit.MessageBuilder` writes kombu's envelope),
inside the script that creates the record (`store_calls.create_and_push`):
one round trip, and no moment when either exists without the other.
Through Celery's `send_task` a submit took four round trips: the record,
the message, the release from inflight and the task-sent event.
`Client` (sync) and `AsyncClient` each only declare the queue once and run
`call(step)` as they run any script call (redis-py loads it on NOSCRIPT).
"""

from __future__ import annotations

from typing import Any

from .client_core import Send
from .lanes import lane_of, list_key
from .store_calls import ScriptCall


class JobSender:
    """Envelopes and the submit script call for one Celery app."""

    def __init__(self, app: Any):
        self.app = app
        self._messages: Any = None

    def needs_declare(self, queue: str) -> bool:
        return bool(self._builder().undeclared([queue]))

    def declare(self, queue: str) -> None:
        """kombu binds a queue once per process before its first publish (a blocking call)."""
        self._builder().declare([queue])

    def call(self, step: Send) -> ScriptCall:
        """The script call that creates the record and pushes the message: `step.create`
        with the lane's list and the envelope appended."""
        envelope = self._builder().envelope(step.job_id, step.spec, step.token, step.queue,
                                            target_index=step.target_index, attempt=step.attempt)
        create = step.create
        return ScriptCall(create.source, [*create.keys, list_key(step.queue, lane_of(step.spec))],
                          [*create.args, envelope])

    def _builder(self) -> Any:
        if self._messages is None:
            from .batch_submit import MessageBuilder

            self._messages = MessageBuilder(self.app)
        return self._messages

