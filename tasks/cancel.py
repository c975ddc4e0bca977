"""Stopping a running job within a second: a cancel flag delivered by pub/sub.

    Client.cancel(id)                          worker process (one CancelWatch)
      store.cancel -> 'requested'                subscriber thread on Keys.cancels
      PUBLISH <prefix>:cancels id   ───────────▶  id running here? add to `cancelled`,
                                                  abort its call scope (providers.abort)
    streamed job: `job_id in watch.cancelled` per chunk -- a set lookup, no I/O
    non-streamed: its HTTP connection is shut down, the call fails at once,
                  and the run records `cancelled` instead of an error

A job registers *before* the store lets it start, so a cancel the store
answered with 'requested' (the job was running) is always published after
the registration: it cannot fall between the two. Pub/sub is at-most-once,
so each time the subscriber (re)subscribes it also reads the flag the store
keeps (`cancel_requested`) for every job running here.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Set

from promptq.providers.abort import CallScope, abortable

logger = logging.getLogger(__name__)

#: Seconds between reconnection attempts while Redis is away.
RECONNECT_S = 1.0


class CancelWatch:
    """Per worker process: which running jobs were cancelled, learnt by pub/sub."""

    def __init__(self, redis_client: Any, channel: str, job_key: Any):
        self.redis = redis_client
        self.channel = channel
        self._job_key = job_key  # job id -> its record's key, for the resync read
        #: Ids of jobs running here that were cancelled. Read, never written,
        #: by the job threads (membership in a set is atomic under the GIL).
        self.cancelled: Set[str] = set()
        self._running: Dict[str, Optional[CallScope]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="promptq-cancels", daemon=True)

    def start(self, wait_s: float = 5.0) -> "CancelWatch":
        self._thread.start()
        # Subscribed before the first job runs, or an early cancel is unheard
        # (the resync would still find it, one reconnect later).
        self.ready.wait(wait_s)
        return self

    def stop(self) -> None:
        self._stop.set()

    @contextmanager
    def running(self, job_id: str) -> Iterator[CallScope]:
        """Register the job for the body; provider calls inside it can be abandoned."""
        with abortable() as scope:
            with self._lock:
                self._running[job_id] = scope
            try:
                yield scope
            finally:
                with self._lock:
                    self._running.pop(job_id, None)
                    self.cancelled.discard(job_id)

    def cancel(self, job_id: str) -> bool:
        """Mark a job running here cancelled and abandon its call; False if it is not here."""
        with self._lock:
            if job_id not in self._running:
                return False
            self.cancelled.add(job_id)
            scope = self._running[job_id]
        if scope is not None:
            scope.abort()
        logger.info("job %s: cancelled while running; abandoning its call", job_id)
        return True

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._resync()
                self.ready.set()
                if failures:
                    logger.warning("cancel listener: subscribed again")
                failures = 0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self.cancel(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:  # Redis away: one line per retry, not a traceback
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    logger.warning("cancel listener: %s: %s; retrying every %.0fs", type(exc).__name__, exc, RECONNECT_S)
                self._stop.wait(RECONNECT_S)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass

    def _resync(self) -> None:
        with self._lock:
            ids = list(self._running)
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self._job_key(job_id), "cancel_requested")
        for job_id, flag in zip(ids, pipe.execute()):
            if flag not in (None, b"", b"0"):
                self.cancel(job_id)
