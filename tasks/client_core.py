"""What a producer decides, with no I/O: the one core of `Client` and `AsyncClient`.

Sans-I/O, in the manner of h11: each operation (submit, status, cancel,
events, result) is a generator that *yields the I/O it needs* as plain data
-- run this script, run these commands in one pipeline, send this message,
subscribe, wait for a pub/sub message, sleep -- and is sent the reply. It
also yields `Deliver(event)` where a follower hands an event to its caller.
A shell drives the generator with real I/O: `Client` with redis-py, blocking;
`AsyncClient` with redis.asyncio. The shells hold no decisions of their own,
so the two cannot drift apart: the order of subscribe and replay, gap
filling by sequence number, reading a quiet job's end from its record, and
timeouts are written once, here.

A failing step is thrown into the generator (`gen.throw`), so an operation
can react to it. A shell running an operation for its return value (not a
follower's events) answers `Deliver` with None and drops the event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Generator, List, Optional, Sequence

from .events import TERMINAL_EVENTS, decode_event, publish_call
from .job import JobSpec, JobValidationError
from .keys import Keys
from .lanes import route
from .record import TERMINAL, JobRecord, new_token, record_from_replies
from .settings import Settings
from .store_calls import ScriptCall, StoreCalls

#: How long a follower listens before it checks the record of a quiet job.
QUIET_CHECK_S = 1.0
#: Pause between record reads while `result` waits for a late record write.
RECORD_POLL_S = 0.05


class JobNotFound(LookupError):
    """No record for this id (never submitted, or expired after result_ttl_s)."""


class JobIdConflict(JobValidationError):
    """`job_id` names a job that exists and asks something else: refused, not ignored."""

    def __init__(self, job_id: str):
        super().__init__("id", f"{job_id!r} is already the id of a different job")


def same_job(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
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


# --- the I/O an operation asks for ----------------------------------------------------


@dataclass(frozen=True)
class Commands:
    """Run these commands (each a tuple for `execute_command`) in one pipeline; reply: their replies."""

    commands: Sequence[tuple]


@dataclass(frozen=True)
class Send:
    """Create the job's record and put its run_job message on `queue`, in one script (reply: 1, or 0
    if a record with this id existed: then nothing was sent).

    `create` is that script without its last key and argument: the lane's
    list and the message, which only a shell holding the Celery app can
    build (`tasks.message_send`).
    """

    job_id: str
    spec: Dict[str, Any]
    queue: str
    target_index: int
    attempt: int
    token: str
    create: ScriptCall


@dataclass(frozen=True)
class Subscribe:
    """Subscribe to a job's channel (closing any earlier subscription of this operation)."""

    channel: str


@dataclass(frozen=True)
class Listen:
    """Wait up to `timeout_s` for a pub/sub message; reply: its data, or None."""

    timeout_s: float


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Deliver:
    """Not I/O: hand this event to the follower's caller (reply: None)."""

    event: Dict[str, Any]


Step = Any  # ScriptCall | Commands | Send | Subscribe | Listen | Sleep | Deliver
Protocol = Generator[Step, Any, Any]


class ClientCore:
    """The producer's decisions for one configuration. Holds no connection."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.calls = StoreCalls(self.keys, settings.result_ttl_s)

    # --- submitting -----------------------------------------------------------------

    def validate(self, **fields: Any) -> JobSpec:
        """`JobSpec.create` with this configuration's limits; raises `JobValidationError`."""
        return JobSpec.create(max_prompt_chars=self.settings.max_prompt_chars, **fields)

    def submit(self, spec: JobSpec) -> Protocol:
        """Returns True if the job was created, False if one with this id existed (nothing sent).

        A spec naming a `batch_id` is refused: a job joins a batch only
        through the batch API (`submit_batch`, `promptq batch submit`), or
        anyone could move a batch's counters or call a phantom batch into being.
        """
        if spec.batch_id is not None:
            raise JobValidationError(
                "batch_id", "a job joins a batch only through the batch API (submit_batch / `promptq batch submit`)"
            )
        data = spec.to_dict()
        token = new_token()
        # The record (with the token) and the message appear together: a
        # worker never sees a message it cannot match, and a producer that
        # dies mid-submit leaves either both or neither.
        # The queue of the target, in the job's lane (tasks.lanes): the same
        # routing `Client.send` hands to Celery.
        queue = route(self.keys, data, 0)["queue"]
        created = yield Send(spec.id, data, queue, 0, 1, token, create=self.calls.create_and_push(data, token))
        if not created:
            existing = yield from self.status(spec.id)
            if existing is not None and not same_job(existing.spec, data):
                raise JobIdConflict(spec.id)
            return False
        return True

    # --- reading --------------------------------------------------------------------

    def status(self, job_id: str) -> Protocol:
        """Returns the job's `JobRecord`, or None."""
        fields, attempts = yield Commands((("HGETALL", self.keys.job(job_id)),
                                           ("LRANGE", self.keys.attempts(job_id), 0, -1)))
        return record_from_replies(job_id, fields, attempts)

    def cancel(self, job_id: str) -> Protocol:
        """Returns 'cancelled' (it will not run), 'requested' (it stops at its next chunk), or its final status."""
        record = yield from self.status(job_id)
        if record is None:
            raise JobNotFound(job_id)
        outcome = _text((yield self.calls.cancel(job_id, record.spec.get("batch_id"))))
        if outcome == "requested":
            # Running: its worker process hears this and abandons the call (tasks.cancel).
            yield Commands((("PUBLISH", self.keys.cancels, job_id),))
        elif outcome == "cancelled":
            yield publish_call(self.keys, job_id, "cancelled", attempt=record.attempt,
                               store=bool(record.spec.get("stream")), maxlen=self.settings.stream_maxlen,
                               ttl_s=self.settings.stream_ttl_s, fields={})
        return outcome

    def events(self, job_id: str, timeout: Optional[float] = None) -> Protocol:
        """Every event of the job in order, live, ending with the terminal one.

        Subscribes first, then replays the stored events, then follows
        pub/sub, dropping anything already seen by sequence number; a gap in
        the numbers is filled from the replay stream. Jobs that do not stream
        keep no replay, so their end is read from the record.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        yield Subscribe(self.keys.channel(job_id))
        last = 0
        # With the replay, the job's status in the same round trip: a job that
        # ended before the subscription (a fast one that kept no replay) is
        # read from its record at once, not after a quiet second.
        entries, status = yield Commands((self._replay_command(job_id), ("HGET", self.keys.job(job_id), "status")))
        for event in _decode_replay(entries, after=0):
            last = event["seq"]
            yield Deliver(event)
            if event["type"] in TERMINAL_EVENTS:
                return
        check_record = status is None or _text(status) in TERMINAL
        while True:
            if check_record:
                check_record = False
                data = None
            else:
                wait_s = QUIET_CHECK_S if deadline is None else min(QUIET_CHECK_S, max(0.0, deadline - time.monotonic()))
                data = yield Listen(wait_s)
            if data is not None:
                event = decode_event(data)
                if event["seq"] <= last:
                    continue
                pending = [event]
                if event["seq"] > last + 1:
                    pending = (yield from self._replay(job_id, after=last)) or pending
                for item in pending:
                    if item["seq"] <= last:
                        continue
                    last = item["seq"]
                    yield Deliver(item)
                    if item["type"] in TERMINAL_EVENTS:
                        return
                continue
            # Quiet for a while: the job may have ended before we subscribed
            # (and kept no replay), or may not exist at all.
            record = yield from self.status(job_id)
            if record is None:
                raise JobNotFound(job_id)
            if record.status.terminal:
                for item in (yield from self._replay(job_id, after=last)):
                    last = item["seq"]
                    yield Deliver(item)
                    if item["type"] in TERMINAL_EVENTS:
                        return
                yield Deliver(terminal_from_record(record))
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout}s")

    def result(self, job_id: str, timeout: Optional[float] = None) -> Protocol:
        """Returns the record once the job succeeded, failed or was cancelled; TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                # A shell running `result` drops what the follower delivers.
                yield from self.events(job_id, timeout=remaining)
            except TimeoutError:
                record = yield from self.status(job_id)
                status = record.status.value if record else "unknown"
                raise TimeoutError(f"job {job_id} still {status} after {timeout}s") from None
            record = yield from self.status(job_id)
            if record is None:
                raise JobNotFound(job_id)
            # A terminal event can precede its record write by a moment, or
            # belong to a run before a requeue: the record has the last word.
            if record.status.terminal:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout}s")
            yield Sleep(RECORD_POLL_S)

    def _replay_command(self, job_id: str) -> tuple:
        return ("XRANGE", self.keys.events(job_id), "-", "+")

    def _replay(self, job_id: str, after: int) -> Protocol:
        (entries,) = yield Commands((self._replay_command(job_id),))
        return _decode_replay(entries, after)


def _decode_replay(entries: List[Any], after: int) -> List[Dict[str, Any]]:
    events = [decode_event(fields[b"e"] if b"e" in fields else fields["e"]) for _, fields in entries]
    return [e for e in events if e["seq"] > after]


def stream_item(job_id: str, event: Dict[str, Any]) -> Any:
    """What `stream()` yields for an event: its text, a `Reset`, or None; raises `JobFailedError`."""
    kind = event["type"]
    if kind == "chunk":
        return event["text"]
    if kind == "reset":
        return Reset(event.get("attempt", 0), event.get("provider"), event.get("reason", ""))
    if kind == "error":
        raise JobFailedError(job_id, (event.get("error") or {}).get("message", "job failed"))
    return None


def terminal_from_record(record: JobRecord) -> Dict[str, Any]:
    """The terminal event a record implies, for a follower that missed the real one."""
    kind = {"succeeded": "done", "failed": "error", "cancelled": "cancelled"}[record.status.value]
    event: Dict[str, Any] = {"seq": 0, "type": kind, "job_id": record.id, "attempt": record.attempt, "from_record": True}
    if record.result:
        event.update(usage=record.result.get("usage"), provider=record.result.get("provider"),
                     model=record.result.get("model"))
    if record.error:
        event["error"] = record.error
    return event


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__: List[str] = [
    "ClientCore", "Commands", "Deliver", "JobFailedError", "JobNotFound", "Listen", "Reset", "ScriptCall",
    "Send", "Sleep", "Subscribe", "stream_item", "terminal_from_record",
]
