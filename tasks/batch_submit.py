"""Putting a batch on the queue fast: records and messages together, a chunk per round trip.

`Client.submit_spec` is one round trip per job. For a 100,000-line file
that is still a minute of waiting on the network, so a batch goes in
chunks of CHUNK_LINES, one MULTI per chunk: the store's create-many script
(tasks.store_calls: each record, the batch's `queued` counter and, for
each record that is new, its Celery message LPUSHed onto its first
target's queue) for every SCRIPT_LINES lines, plus RPUSH of the new job
ids onto the batch's ordered list and HINCRBY of its `total`. All or
nothing: "in the list", "has a record" and "has a message" never disagree
after a crash, and nothing waits in inflight for a reaper.

The messages are built here, not by `send_task`: headers, properties and
body come from Celery's own `app.amqp.as_task_v2` (protocol 2), wrapped in
the envelope kombu's Redis transport stores (see `Channel.prepare_message`,
`_inplace_augment_message` and `_put` in kombu/transport/redis.py; a test
compares one against a real `send_task` message). A worker cannot tell them
apart. Not reproduced: the `task-sent` event and the publish signals, which
nothing in promptq listens to; Flower shows a job once a worker receives it.

Re-running a submission finds the records an earlier run created (with
their messages) and sends only the lines that never got one. One process
submits a batch at a time (a claim in the batch hash), or two runs could
both append the same missing ids to the ordered list.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from celery.utils.nodenames import anon_nodename

from .batch_input import BatchLine
from .keys import TASK_NAME
from .lanes import lane_of, list_key, priority_of
from .store import new_token

#: Lines per pipeline round: big enough to amortise the round trip, small
#: enough that one MULTI does not stall Redis for other clients.
CHUNK_LINES = 1000
#: Records (with their messages) created per script call within a chunk.
SCRIPT_LINES = 250

# One submitter per batch at a time: two concurrent submissions of the same
# file would both append the ids they saw missing to the ordered list. The
# claim lives in the batch hash and lapses on its own if the submitter dies.
# KEYS: batch ; ARGV: now, owner, until
_CLAIM = """
local owner = redis.call('HGET', KEYS[1], 'submitter')
local untl = tonumber(redis.call('HGET', KEYS[1], 'submitting_until') or '0')
if owner and owner ~= ARGV[2] and untl > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'submitter', ARGV[2], 'submitting_until', ARGV[3])
return 1
"""
# KEYS: batch ; ARGV: owner
_UNCLAIM = """
if redis.call('HGET', KEYS[1], 'submitter') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'submitter', 'submitting_until')
end
"""
CLAIM_TTL_S = 60.0


class BatchBusyError(RuntimeError):
    """Another submission of the same batch id is still running (or died less than a minute ago)."""


class MessageBuilder:
    """Celery protocol-2 `run_job` messages in kombu's Redis envelope, as JSON text."""

    def __init__(self, app: Any):
        self.app = app
        self.amqp = app.amqp
        # What send_task would compute per message; constant for a process.
        self.origin = anon_nodename()
        self.reply_to = app.thread_oid
        self._declared: Set[str] = set()

    def undeclared(self, queues: Iterable[str]) -> Set[str]:
        """The queues `declare` has not bound yet in this builder."""
        return set(queues) - self._declared

    def declare(self, queues: Iterable[str]) -> None:
        """Bind each queue once, as kombu's `maybe_declare` does before a first publish.

        Remembered here: each call would otherwise take a producer from the pool."""
        missing = self.undeclared(queues)
        if not missing:
            return
        with self.app.producer_or_acquire() as producer:
            for name in missing:
                producer.maybe_declare(self.amqp.queues[name])
        self._declared |= missing

    def envelope(self, job_id: str, spec: Dict[str, Any], token: str, queue: str, *,
                 target_index: int = 0, attempt: int = 1, spec_json: Optional[str] = None) -> str:
        """The message for `queue`; LPUSH it onto `lanes.list_key(queue, lane_of(spec))`.

        `spec_json`: `json.dumps(spec)` if the caller has it already (the
        record holds the same text): the body is then spliced around it,
        byte for byte what `json.dumps(body)` would write, without encoding
        the spec a second time."""
        args = (job_id, spec)
        kwargs = {"target_index": target_index, "attempt": attempt, "token": token}
        headers, properties, body, _ = self.amqp.as_task_v2(
            job_id, TASK_NAME, args=args, kwargs=kwargs, origin=self.origin, reply_to=self.reply_to,
            ignore_result=None,
            # Celery's own saferepr costs more than everything else here put
            # together (~70% of a submission). These strings are only shown
            # by Flower; a plain repr cut to the same length serves as well.
            argsrepr=_cut(repr(args), self.amqp.argsrepr_maxsize),
            kwargsrepr=_cut(repr(kwargs), self.amqp.kwargsrepr_maxsize),
        )
        # kombu's json serializer is `json.dumps` with an encoder whose only
        # extra is `default` for non-JSON types; a spec holds none (it was
        # read from JSON), so the stdlib call writes the same bytes, 3x faster.
        if spec_json is None:
            payload = json.dumps(body)
        else:  # body is ((job_id, spec), kwargs, embed)
            payload = f"[[{json.dumps(job_id)}, {spec_json}], {json.dumps(body[1])}, {json.dumps(body[2])}]"
        properties.update(
            delivery_mode=2,  # the default exchange's 'persistent'
            delivery_info={"exchange": "", "routing_key": queue},
            # The lane's priority; kombu keeps each step in its own list
            # (tasks.lanes.list_key), which is where the caller pushes it.
            priority=priority_of(spec),
            body_encoding="base64",
            delivery_tag=str(uuid.uuid4()),
        )
        return json.dumps({
            "body": base64.b64encode(payload.encode("utf-8")).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        })


class BulkSubmitter:
    """Submits the valid lines of one batch, chunk by chunk."""

    def __init__(self, client: Any, batch_id: str, *, chunk_lines: int = CHUNK_LINES,
                 line_defaults: Optional[Dict[str, Any]] = None):
        self.client = client
        self.redis = client.redis
        self.store = client.store
        self.keys = client.keys
        self.batch_id = batch_id
        self.batch_key = self.keys.batch(batch_id)
        self.list_key = self.keys.batch_jobs(batch_id)
        self.chunk_lines = chunk_lines
        self.line_defaults = dict(line_defaults or {})
        self.messages = MessageBuilder(client.app)
        self.owner = new_token()
        self._claim = self.redis.register_script(_CLAIM)
        self._unclaim = self.redis.register_script(_UNCLAIM)

    def claim(self) -> None:
        now = time.time()
        if not self._claim(keys=[self.batch_key], args=[now, self.owner, now + CLAIM_TTL_S]):
            raise BatchBusyError(
                f"batch {self.batch_id} is being submitted by another process "
                f"(if that one died, its claim lapses within {CLAIM_TTL_S:.0f}s)"
            )

    def unclaim(self) -> None:
        """Give the claim up, if it is still ours (a lapsed one may be another submitter's now)."""
        self._unclaim(keys=[self.batch_key], args=[self.owner])

    def listed_ids(self) -> Set[str]:
        """Job ids an earlier run of this submission already put on the ordered list."""
        ids: Set[str] = set()
        step = 10_000
        for start in range(0, self.redis.llen(self.list_key), step):
            ids.update(i.decode() for i in self.redis.lrange(self.list_key, start, start + step - 1))
        return ids

    def run(
        self, lines: Iterable[BatchLine], *, job_id: Callable[[str], str],
        on_chunk: Optional[Callable[[int, int], None]] = None,
    ) -> Tuple[int, int]:
        """Submit every line; returns (sent, already existing). `on_chunk(lines, sent)` reports progress."""
        self.claim()
        listed = self.listed_ids()
        sent = existing = 0
        for chunk in _chunks(lines, self.chunk_lines):
            self.claim()  # refresh: a slow run must not lose its claim
            new, old = self._submit_chunk(chunk, job_id, listed)
            sent += new
            existing += old
            if on_chunk:
                on_chunk(len(chunk), new)
        return sent, existing

    def _submit_chunk(self, chunk: List[BatchLine], job_id: Callable[[str], str], listed: Set[str]) -> Tuple[int, int]:
        """Create the chunk's records, each new one with its message; returns (new, existing)."""
        now = time.time()
        specs, tokens = [], []
        for line in chunk:
            spec = line.spec  # each line's spec is fresh from parsing: fill it in place
            spec.update(self.line_defaults)
            spec.update(id=job_id(line.custom_id), batch_id=self.batch_id, created_at=now)
            specs.append(spec)
            tokens.append(new_token())
        # Each spec is encoded once, for its record and its message alike.
        # Every line passed JobSpec.validate (tasks.batch), and so did the
        # defaults added to it: no second check_json walk.
        encoded = [json.dumps(spec, allow_nan=False) for spec in specs]
        queues = [self.keys.queue(spec["targets"][0].split(":", 1)[0]) for spec in specs]
        self.messages.declare(queues)
        # Built for every line, though the script sends only those whose
        # record is new: a line with a record (a resumed submission) is rare.
        messages = [(list_key(queue, lane_of(spec)), self.messages.envelope(spec["id"], spec, token, queue,
                                                                            spec_json=text))
                    for spec, token, text, queue in zip(specs, tokens, encoded, queues)]
        pipe = self.redis.pipeline(transaction=True)
        # Records in calls of SCRIPT_LINES: one script call per line cost more
        # in packing and Lua set-up than the records themselves (bench batch),
        # and a call per thousands would hold Redis up for others too long.
        calls = range(0, len(specs), SCRIPT_LINES)
        for at in calls:
            part = slice(at, at + SCRIPT_LINES)
            self.store.create_many(specs[part], tokens[part], self.batch_id, pipe, messages[part], encoded[part])
        unlisted = [s["id"] for s in specs if s["id"] not in listed]
        if unlisted:
            pipe.rpush(self.list_key, *unlisted)
            pipe.hincrby(self.batch_key, "total", len(unlisted))
        replies = pipe.execute()
        created = sum(ok for reply in replies[:len(calls)] for ok in reply)  # one 1/0 per line
        listed.update(unlisted)
        return created, len(specs) - created


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chunks(items: Iterable[BatchLine], size: int) -> Iterator[List[BatchLine]]:
    chunk: List[BatchLine] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
