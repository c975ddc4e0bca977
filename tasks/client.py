"""The producer API: submit a job, get its id at once, read or follow it later.

    client = Client(Settings.load())
    handle = client.submit("Summarise ...", to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    handle.id                       # fire-and-forget: this is all you need to keep
    client.result(handle.id, timeout=60).text
    for piece in client.stream(handle.id): ...   # str chunks, and Reset markers

Nothing here calls a provider; a producer needs no API key. What a submit,
a cancel or a follower does is decided in `tasks.client_core`; this is its
blocking shell (redis-py), `tasks.async_client.AsyncClient` its asyncio one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import redis

from .app import create_app
from .client_core import (ClientCore, Commands, Deliver, JobFailedError, JobIdConflict, JobNotFound, Listen,
                          Protocol, Reset, Send, Sleep, Subscribe, same_job, stream_item)
from .events import EventPublisher
from .job import JobSpec
from .keys import TASK_NAME
from .lanes import route
from .message_send import JobSender
from .settings import Settings
from .store import JobRecord, JobStore
from .store_calls import ScriptCall

__all__ = ["Client", "JobFailedError", "JobHandle", "JobIdConflict", "JobNotFound", "Reset", "same_job"]


@dataclass
class JobHandle:
    """What `submit` returns at once."""

    id: str
    client: "Client"
    created: bool = True

    def result(self, timeout: Optional[float] = None) -> JobRecord:
        return self.client.result(self.id, timeout=timeout)

    def status(self) -> Optional[JobRecord]:
        return self.client.status(self.id)

    def stream(self, timeout: Optional[float] = None) -> Iterator[Any]:
        return self.client.stream(self.id, timeout=timeout)

    def cancel(self) -> str:
        return self.client.cancel(self.id)


class Client:
    """Producer-side access to promptq. Thread-safe; share one per process."""

    def __init__(self, settings: Optional[Settings] = None, *, app: Any = None):
        self.settings = settings or Settings.load()
        self.core = ClientCore(self.settings)
        self.keys = self.core.keys
        self.app = app or create_app(self.settings)
        self.redis = redis.Redis.from_url(self.settings.redis_url, socket_keepalive=True)
        self.store = JobStore(self.redis, self.keys, self.settings.result_ttl_s)
        self.publisher = EventPublisher(
            self.redis, self.keys, maxlen=self.settings.stream_maxlen, ttl_s=self.settings.stream_ttl_s
        )
        self._scripts: Dict[str, Any] = {}
        self.sender = JobSender(self.app)

    # --- submitting -----------------------------------------------------------

    def submit(
        self,
        prompt: Optional[str] = None,
        *,
        to: Sequence[str],
        messages: Optional[Sequence[Mapping[str, Any]]] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Mapping[str, Any]] = None,
        stream: bool = False,
        custom_id: Optional[str] = None,
        batch_id: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        max_retries: Optional[int] = None,
        job_id: Optional[str] = None,
        rate_limit_deadline_s: Optional[float] = None,
        spill: bool = False,
        priority: Optional[str] = None,
    ) -> JobHandle:
        """Validate and enqueue a job; raises `JobValidationError` naming the bad field.

        `rate_limit_deadline_s`: how long the job may wait for a rate limit
        (default: the workers' setting, 24 h); `spill=True`: when its target
        has had no capacity for a while, move to the next target.
        `priority` is the lane: "interactive" (default) or "batch", which
        workers take only when no interactive job of their queues waits."""
        spec = self.core.validate(
            targets=to, prompt=prompt, messages=messages, system_prompt=system_prompt,
            parameters=parameters, stream=stream, custom_id=custom_id, batch_id=batch_id,
            metadata=metadata, max_retries=max_retries, job_id=job_id,
            rate_limit_deadline_s=rate_limit_deadline_s, spill=spill, lane=priority,
        )
        return self.submit_spec(spec)

    def submit_spec(self, spec: JobSpec) -> JobHandle:
        """Enqueue an already validated job. Submitting the same id twice runs it once."""
        return JobHandle(spec.id, self, created=self._run(self.core.submit(spec)))

    def send(self, job_id: str, spec: Dict[str, Any], *, target_index: int, attempt: int, token: str) -> None:
        self.app.send_task(
            TASK_NAME,
            args=(job_id, spec),
            kwargs={"target_index": target_index, "attempt": attempt, "token": token},
            task_id=job_id,
            **route(self.keys, spec, target_index),
        )

    # --- reading ----------------------------------------------------------------

    def status(self, job_id: str) -> Optional[JobRecord]:
        return self._run(self.core.status(job_id))

    def result(self, job_id: str, timeout: Optional[float] = None) -> JobRecord:
        """Wait until the job succeeded, failed or was cancelled; TimeoutError after `timeout`."""
        return self._run(self.core.result(job_id, timeout=timeout))

    def cancel(self, job_id: str) -> str:
        """'cancelled' (it will not run), 'requested' (running: it stops within a second), or its final status."""
        return self._run(self.core.cancel(job_id))

    def events(self, job_id: str, timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Every event of the job in order, live, ending with the terminal one (see `ClientCore.events`)."""
        return self._steps(self.core.events(job_id, timeout=timeout))

    def stream(self, job_id: str, timeout: Optional[float] = None) -> Iterator[Any]:
        """The job's text as it arrives: `str` chunks, and a `Reset` where an attempt's text must be discarded."""
        for event in self.events(job_id, timeout=timeout):
            item = stream_item(job_id, event)
            if item is not None:
                yield item

    def close(self) -> None:
        self.redis.close()

    # --- the shell: blocking I/O for the core's steps --------------------------------

    def _run(self, protocol: Protocol) -> Any:
        """Drive an operation to its return value, dropping any events it delivers."""
        steps = self._steps(protocol)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value

    def _steps(self, protocol: Protocol) -> Any:
        """Drive an operation, yielding the events it delivers; returns what it returns."""
        pubsub = None
        reply: Any = None
        error: Optional[BaseException] = None
        try:
            while True:
                try:
                    step = protocol.throw(error) if error is not None else protocol.send(reply)
                except StopIteration as stop:
                    return stop.value
                reply, error = None, None
                if isinstance(step, Deliver):
                    yield step.event
                    continue
                try:
                    if isinstance(step, Subscribe):
                        if pubsub is not None:
                            pubsub.close()
                        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                        pubsub.subscribe(step.channel)
                    elif isinstance(step, Listen):
                        message = pubsub.get_message(timeout=step.timeout_s)
                        reply = message["data"] if message and message.get("type") == "message" else None
                    else:
                        reply = self._io(step)
                except Exception as exc:  # the operation decides what a failed step means
                    error = exc
        finally:
            protocol.close()
            if pubsub is not None:
                pubsub.close()

    def _send(self, step: Send) -> int:
        """Record and message in one round trip (tasks.message_send); 1 if created."""
        if self.sender.needs_declare(step.queue):
            self.sender.declare(step.queue)
        return self._io(self.sender.call(step))

    def _io(self, step: Any) -> Any:
        if isinstance(step, ScriptCall):
            script = self._scripts.get(step.source)
            if script is None:
                script = self._scripts[step.source] = self.redis.register_script(step.source)
            return script(keys=step.keys, args=step.args)
        if isinstance(step, Commands):
            pipe = self.redis.pipeline(transaction=False)
            for command in step.commands:
                pipe.execute_command(*command)
            return pipe.execute()
        if isinstance(step, Send):
            return self._send(step)
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        raise TypeError(f"unknown step {step!r}")
