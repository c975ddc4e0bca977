"""The producer API: submit a job, get its id at once, read or follow it later.

    client = Client(Settings.load())
    handle = client.submit("Summarise ...", to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    handle.id                       # fire-and-forget: this is all you need to keep
    client.result(handle.id, timeout=60).text
    for piece in client.stream(handle.id): ...   # str chunks, and Reset markers

Nothing here calls a provider; a producer needs no API key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import redis

from .app import create_app
from .events import TERMINAL_EVENTS, EventPublisher, decode_event
from .job import JobSpec, JobValidationError
from .keys import TASK_NAME, Keys
from .lanes import route
from .settings import Settings
from .store import JobRecord, JobStore, new_token


class JobNotFound(LookupError):
    """No record for this id (never submitted, or expired after result_ttl_s)."""


class JobIdConflict(JobValidationError):
    """`job_id` names a job that exists and asks something else: refused, not ignored."""

    def __init__(self, job_id: str):
        super().__init__("id", f"{job_id!r} is already the id of a different job")


def same_job(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two specs ask the same thing (a resubmission), whenever they were made."""
    ignored = ("created_at",)
    return {k: v for k, v in a.items() if k not in ignored} == {k: v for k, v in b.items() if k not in ignored}


class JobFailedError(RuntimeError):
    """A followed job failed on every target."""

    def __init__(self, job_id: str, message: str):
        self.job_id = job_id
        super().__init__(f"job {job_id} failed: {message}")


@dataclass(frozen=True)
class Reset:
    """In a text stream: the attempt that sent the text so far failed; discard it."""

    attempt: int
    provider: Optional[str]
    reason: str


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
        self.keys = Keys(self.settings.key_prefix)
        self.app = app or create_app(self.settings)
        self.redis = redis.Redis.from_url(self.settings.redis_url, socket_keepalive=True)
        self.store = JobStore(self.redis, self.keys, self.settings.result_ttl_s)
        self.publisher = EventPublisher(
            self.redis, self.keys, maxlen=self.settings.stream_maxlen, ttl_s=self.settings.stream_ttl_s
        )

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
        workers take only when no interactive job of their queues waits.

        `batch_id` is refused: a job joins a batch only through the batch
        API (`submit_batch`, `promptq batch submit`), or anyone could move a
        batch's counters or call a phantom batch into being.
        """
        _refuse_batch_id(batch_id)
        spec = JobSpec.create(
            targets=to, prompt=prompt, messages=messages, system_prompt=system_prompt,
            parameters=parameters, stream=stream, custom_id=custom_id, batch_id=batch_id,
            metadata=metadata, max_retries=max_retries, job_id=job_id,
            max_prompt_chars=self.settings.max_prompt_chars,
            rate_limit_deadline_s=rate_limit_deadline_s, spill=spill, lane=priority,
        )
        return self.submit_spec(spec)

    def submit_spec(self, spec: JobSpec) -> JobHandle:
        """Enqueue an already validated job (not part of a batch). Submitting the same id twice runs it once."""
        _refuse_batch_id(spec.batch_id)
        data = spec.to_dict()
        token = new_token()
        # The record (with the token) exists before the message does, so a
        # fast worker never sees a message it cannot match.
        if not self.store.create(data, token, send_deadline_s=self.settings.lease_ttl_s):
            existing = self.store.get(spec.id)
            if existing is not None and not same_job(existing.spec, data):
                raise JobIdConflict(spec.id)
            return JobHandle(spec.id, self, created=False)
        self.send(spec.id, data, target_index=0, attempt=1, token=token)
        self.store.release(spec.id, token)
        return JobHandle(spec.id, self)

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
        return self.store.get(job_id)

    def result(self, job_id: str, timeout: Optional[float] = None) -> JobRecord:
        """Wait until the job succeeded, failed or was cancelled; TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for _ in self.events(job_id, timeout=remaining):
                    pass
            except TimeoutError:
                record = self.store.get(job_id)
                status = record.status.value if record else "unknown"
                raise TimeoutError(f"job {job_id} still {status} after {timeout}s") from None
            record = self.store.get(job_id)
            if record is None:
                raise JobNotFound(job_id)
            # A terminal event can precede its record write by a moment, or
            # belong to a run before a requeue: the record has the last word.
            if record.status.terminal:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout}s")
            time.sleep(0.05)

    def cancel(self, job_id: str) -> str:
        """'cancelled' (it will not run), 'requested' (running: it stops within a second), or its final status."""
        record = self.store.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        outcome = self.store.cancel(job_id, record.spec.get("batch_id"))
        if outcome == "requested":
            # Running: its worker process hears this and abandons the call (tasks.cancel).
            self.redis.publish(self.keys.cancels, job_id)
        elif outcome == "cancelled":
            self.publisher.publish(job_id, "cancelled", attempt=record.attempt, store=bool(record.spec.get("stream")))
        return outcome

    def events(self, job_id: str, timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Every event of the job in order, live, ending with the terminal one.

        Subscribes first, then replays the stored events, then follows
        pub/sub, dropping anything already seen by sequence number; a gap in
        the numbers is filled from the replay stream. Jobs that do not stream
        keep no replay, so their end is read from the record.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.channel(job_id))
        try:
            last = 0
            for event in self._replay(job_id, after=0):
                last = event["seq"]
                yield event
                if event["type"] in TERMINAL_EVENTS:
                    return
            while True:
                wait_s = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
                message = pubsub.get_message(timeout=wait_s)
                if message and message.get("type") == "message":
                    event = decode_event(message["data"])
                    if event["seq"] <= last:
                        continue
                    pending = [event]
                    if event["seq"] > last + 1:
                        pending = self._replay(job_id, after=last) or pending
                    for item in pending:
                        if item["seq"] <= last:
                            continue
                        last = item["seq"]
                        yield item
                        if item["type"] in TERMINAL_EVENTS:
                            return
                    continue
                # Quiet for a second: the job may have ended before we
                # subscribed (and kept no replay), or may not exist at all.
                record = self.store.get(job_id)
                if record is None:
                    raise JobNotFound(job_id)
                if record.status.terminal:
                    missed = [e for e in self._replay(job_id, after=last)]
                    for item in missed:
                        last = item["seq"]
                        yield item
                        if item["type"] in TERMINAL_EVENTS:
                            return
                    yield _terminal_from_record(record)
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout}s")
        finally:
            pubsub.close()

    def stream(self, job_id: str, timeout: Optional[float] = None) -> Iterator[Any]:
        """The job's text as it arrives: `str` chunks, and a `Reset` where an attempt's text must be discarded."""
        for event in self.events(job_id, timeout=timeout):
            kind = event["type"]
            if kind == "chunk":
                yield event["text"]
            elif kind == "reset":
                yield Reset(event.get("attempt", 0), event.get("provider"), event.get("reason", ""))
            elif kind == "error":
                raise JobFailedError(job_id, (event.get("error") or {}).get("message", "job failed"))

    def _replay(self, job_id: str, after: int) -> List[Dict[str, Any]]:
        entries = self.redis.xrange(self.keys.events(job_id), "-", "+")
        events = [decode_event(fields[b"e"]) for _, fields in entries]
        return [e for e in events if e["seq"] > after]

    def close(self) -> None:
        self.redis.close()


def _refuse_batch_id(batch_id: Optional[str]) -> None:
    if batch_id is not None:
        raise JobValidationError(
            "batch_id", "a job joins a batch only through the batch API (submit_batch / `promptq batch submit`)"
        )


def _terminal_from_record(record: JobRecord) -> Dict[str, Any]:
    kind = {"succeeded": "done", "failed": "error", "cancelled": "cancelled"}[record.status.value]
    event: Dict[str, Any] = {"seq": 0, "type": kind, "job_id": record.id, "attempt": record.attempt, "from_record": True}
    if record.result:
        event.update(usage=record.result.get("usage"), provider=record.result.get("provider"), model=record.result.get("model"))
    if record.error:
        event["error"] = record.error
    return event
