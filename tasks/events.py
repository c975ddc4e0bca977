"""A job's live events: JSON on its pub/sub channel, kept in a Redis stream.

Pub/sub is at-most-once and a subscriber that joins late hears nothing, so
every event of a streamed job is also appended (capped, expiring) to a Redis
stream; a follower subscribes first, replays the stream, and drops anything
it has already seen by sequence number. One Lua call numbers, publishes and
stores an event, so numbering can never race.

A streamed job's `chunk` events are sent by the thread reading the
provider's answer, one event per socket read (tasks.chunk_relay, same
script, same numbering). `publish_soon` (a per-process sender thread that
puts every event queued meanwhile, from every job, into one pipelined round
trip; `wait_sent` holds the job until they are in Redis) is kept for
callers that cannot wait for a round trip per event.

Event types:
    chunk     {"text"}                       the next text: the pieces read together, joined
    retry     {"error", "delay_s"}           this attempt failed; same provider again later
    failover  {"error", "to"}                this target failed; the next one takes over
    reset     {"reason"}                     an attempt that had streamed text failed:
                                             discard what it sent
    done      {"usage", "provider", "model", "finish_reason"}
    error     {"error"}                      no target left; the job failed
    cancelled {}
Every event also carries seq, type, job_id, attempt and ts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import redis

from .keys import Keys

logger = logging.getLogger(__name__)

TERMINAL_EVENTS = frozenset({"done", "error", "cancelled"})

# KEYS: seq, stream, job record ; ARGV: body (an object's JSON without its
#   opening brace), maxlen, ttl, channel, store ('1' keeps it for replay)
#
# Numbering: a job whose events are not kept (a non-streamed job) counts
# them in its record's `seq` field, so it has no key of its own (fewer keys,
# bytes and commands per job); otherwise, and for an event of a job with no
# record, the seq key counts, continuing from the record's count if any.
_PUBLISH = """
local seq
if ARGV[5] ~= '1' and redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
else
  seq = redis.call('INCR', KEYS[1])
  if seq == 1 then
    local counted = tonumber(redis.call('HGET', KEYS[3], 'seq') or '0')
    if counted and counted > 0 then
      seq = counted + 1
      redis.call('SET', KEYS[1], seq)
    end
  end
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local payload = '{"seq":' .. seq .. ',' .. ARGV[1]
redis.call('PUBLISH', ARGV[4], payload)
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', payload)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return seq
"""


class EventPublisher:
    """Numbers, publishes and (for streamed jobs) stores a job's events."""

    def __init__(self, client: Any, keys: Keys, *, maxlen: int = 10_000, ttl_s: float = 86_400.0):
        self.redis = client
        self.keys = keys
        self.maxlen = maxlen
        self.ttl_s = int(ttl_s)
        self._script = client.register_script(_PUBLISH)
        self._sender: Optional[_Sender] = None
        self._sender_lock = threading.Lock()

    def _call(self, job_id: str, event_type: str, attempt: int, store: bool, fields: Dict[str, Any]) -> Tuple[list, list]:
        body = {"type": event_type, "job_id": job_id, "attempt": attempt, "ts": round(time.time(), 6)}
        body.update(fields)
        encoded = json.dumps(body, separators=(",", ":"))
        return ([self.keys.seq(job_id), self.keys.events(job_id), self.keys.job(job_id)],
                [encoded[1:], self.maxlen, self.ttl_s, self.keys.channel(job_id), "1" if store else "0"])

    def publish(
        self,
        job_id: str,
        event_type: str,
        *,
        attempt: int,
        store: bool,
        pipe: Any = None,
        **fields: Any,
    ) -> Optional[int]:
        """Send one event; returns its sequence number (None inside a pipeline).

        Events of the job still queued by `publish_soon` are sent first.
        """
        if self._sender is not None:
            self._sender.wait_sent(job_id)
        keys, args = self._call(job_id, event_type, attempt, store, fields)
        result = self._script(keys=keys, args=args, client=pipe)
        return None if pipe is not None else int(result)

    def publish_soon(
        self,
        job_id: str,
        event_type: str,
        *,
        attempt: int,
        store: bool,
        watch: Optional[Tuple[str, str]] = None,
        **fields: Any,
    ) -> None:
        """Queue one event for the sender thread; returns at once (with back-pressure).

        `watch=(hash key, field)` reads that field in the same round trip;
        `watched(job_id)` is then true once it was found set (how a streaming
        job hears of a cancel without a round trip of its own). Raises the
        error a previous queued event of this job met, if any.
        """
        sender = self._sender
        if sender is None or sender.pid != os.getpid():
            with self._sender_lock:
                if self._sender is None or self._sender.pid != os.getpid():
                    self._sender = _Sender(self.redis, self._script)
                sender = self._sender
        keys, args = self._call(job_id, event_type, attempt, store, fields)
        sender.submit(job_id, keys, args, watch)

    def watched(self, job_id: str) -> bool:
        """True once a `watch` field read for the job was set (until `wait_sent`)."""
        sender = self._sender
        return sender is not None and job_id in sender.flagged

    def wait_sent(self, job_id: str, *, raise_error: bool = True) -> None:
        """Return once every event `publish_soon` queued for the job is in Redis.

        Raises the first error one of them met (unless `raise_error` is False,
        for a caller already handling another exception).
        """
        if self._sender is not None:
            self._sender.wait_sent(job_id, raise_error=raise_error)


class _Sender:
    """One daemon thread (a greenlet under gevent) per process: sends queued
    events of all jobs, whatever has piled up since the last round trip, as
    one pipeline of EVALSHA calls, in the order they were queued. One round
    trip at a time, so a job's events never overtake each other. (Sending in
    the caller's thread when idle was tried: no latency gain measured.)"""

    #: A job with this many events not yet sent waits: memory stays bounded
    #: when Redis is slow.
    MAX_UNSENT_PER_JOB = 1000

    def __init__(self, client: Any, script: Any):
        self.redis = client
        self.script = script
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._sent = threading.Condition(self._lock)
        self._queue: List[Tuple[str, list, list, Optional[Tuple[str, str]]]] = []
        self._unsent: Dict[str, int] = {}
        self.flagged: set = set()
        self._errors: Dict[str, BaseException] = {}
        self._waiting = 0
        self._thread = threading.Thread(target=self._loop, name="promptq-events", daemon=True)
        self._thread.start()

    def submit(self, job_id: str, keys: list, args: list, watch: Optional[Tuple[str, str]] = None) -> None:
        with self._lock:
            error = self._errors.pop(job_id, None)
            if error is not None:
                raise error
            while self._unsent.get(job_id, 0) >= self.MAX_UNSENT_PER_JOB:
                self._waiting += 1
                self._sent.wait()
                self._waiting -= 1
            self._queue.append((job_id, keys, args, watch))
            self._unsent[job_id] = self._unsent.get(job_id, 0) + 1
            if len(self._queue) == 1:
                self._work.notify()

    def wait_sent(self, job_id: str, *, raise_error: bool = True) -> None:
        with self._lock:
            if job_id not in self._unsent and job_id not in self._errors:
                self.flagged.discard(job_id)
                return
            while self._unsent.get(job_id):
                self._waiting += 1
                self._sent.wait()
                self._waiting -= 1
            self._unsent.pop(job_id, None)
            self.flagged.discard(job_id)
            error = self._errors.pop(job_id, None)
        if error is not None and raise_error:
            raise error

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._work.wait()
                batch, self._queue = self._queue, []
            failures: Dict[str, BaseException] = {}
            try:
                failures = self._send(batch)
            finally:
                with self._lock:
                    for job_id, _, _, _ in batch:
                        left = self._unsent.get(job_id, 1) - 1
                        if left > 0:
                            self._unsent[job_id] = left
                        else:
                            self._unsent.pop(job_id, None)
                    for job_id, error in failures.items():
                        self._errors.setdefault(job_id, error)
                    if self._waiting:
                        self._sent.notify_all()

    def _send(self, batch: list) -> Dict[str, BaseException]:
        """Send a batch; returns the first error of each job that had one."""
        failures: Dict[str, BaseException] = {}
        try:
            results = self._pipeline(batch)
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                # Redis restarted or its scripts were flushed: load, then resend
                # what was refused (the whole batch: no call of it ran).
                self.redis.script_load(self.script.script)
                results = self._pipeline(batch)
            replies = iter(results)
            for job_id, _, _, watch in batch:
                result = next(replies)
                if isinstance(result, Exception):
                    failures.setdefault(job_id, result)
                if watch is not None and next(replies) not in (None, b"", b"0"):
                    self.flagged.add(job_id)
        except Exception as exc:  # connection lost: every job of the batch learns it
            logger.warning("could not send %d stream events: %s", len(batch), exc)
            for job_id, _, _, _ in batch:
                failures.setdefault(job_id, exc)
        return failures

    def _pipeline(self, batch: list) -> list:
        # EVALSHA by hand: a pipeline of Script calls would ask SCRIPT EXISTS
        # first, one more round trip per batch.
        pipe = self.redis.pipeline(transaction=False)
        sha = self.script.sha
        for _, keys, args, watch in batch:
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            if watch is not None:
                pipe.execute_command("HGET", *watch)
        return pipe.execute(raise_on_error=False)


def decode_event(raw: Any) -> Dict[str, Any]:
    """An event from pub/sub or the replay stream, as a dict."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw)
