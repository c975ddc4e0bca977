"""A producer's send of one job message: built here, run by either client shell.

The message goes straight onto its lane's list (kombu's Redis publish is
that LPUSH; `tasks.batch_submit.MessageBuilder` writes kombu's envelope),
pipelined with the job's release from inflight: one round trip. Through
Celery's `send_task` it took three with the release and the task-sent event.
`Client` (sync) and `AsyncClient` each only execute `commands` and hand the
replies to `release_again`.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, List

from redis.exceptions import NoScriptError

from .client_core import Send
from .lanes import lane_of, list_key


class JobSender:
    """Envelopes and the send round trip for one Celery app."""

    def __init__(self, app: Any):
        self.app = app
        self._messages: Any = None

    def needs_declare(self, queue: str) -> bool:
        return bool(self._builder().undeclared([queue]))

    def declare(self, queue: str) -> None:
        """kombu binds a queue once per process before its first publish (a blocking call)."""
        self._builder().declare([queue])

    def commands(self, step: Send) -> List[tuple]:
        """LPUSH of the message, then the release as an EVALSHA by hand (a redis-py
        pipeline of Script calls asks SCRIPT EXISTS first): in this order, so a
        job leaves inflight only once the broker holds its message."""
        envelope = self._builder().envelope(step.job_id, step.spec, step.token, step.queue,
                                            target_index=step.target_index, attempt=step.attempt)
        commands: List[tuple] = [("LPUSH", list_key(step.queue, lane_of(step.spec)), envelope)]
        if step.release is not None:
            release = step.release
            commands.append(("EVALSHA", _sha1(release.source), len(release.keys), *release.keys, *release.args))
        return commands

    @staticmethod
    def release_again(replies: List[Any]) -> bool:
        """Raise the send's error, if any; True if the release must run again as a ScriptCall (NOSCRIPT)."""
        pushed, *released = replies
        if isinstance(pushed, Exception):
            raise pushed
        if released and isinstance(released[0], NoScriptError):
            return True
        if released and isinstance(released[0], Exception):
            raise released[0]
        return False

    def _builder(self) -> Any:
        if self._messages is None:
            from .batch_submit import MessageBuilder

            self._messages = MessageBuilder(self.app)
        return self._messages


@functools.lru_cache(maxsize=32)
def _sha1(source: str) -> str:
    return hashlib.sha1(source.encode("utf-8")).hexdigest()
