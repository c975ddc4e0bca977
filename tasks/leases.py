"""Keeping running jobs alive, and giving back the jobs of workers that died.

With a threads or gevent pool the worker process itself runs the jobs, so a
SIGKILL leaves their unacknowledged messages for Redis's visibility timeout
(an hour) to restore. Instead each worker process pushes the deadlines of
its running jobs (and its concurrency leases, tasks.held_leases) forward
every `heartbeat_s`; any worker that finds a
deadline more than `lease_ttl_s` old re-publishes that job under a fresh
token (so the orphaned message, if Redis ever restores it, is dropped as
stale). A job waiting for a retry or for capacity is not here at all: it
waits in Redis's deferred set (tasks.deferral) and leaves `inflight` in the
same step, so neither the reaper nor a late heartbeat ever touches it.
Messages a dead process had fetched but not started are found through its
processing list (tasks.recovery).

A keeper reaps only after it has itself been beating for a full
`lease_ttl_s`: after a Redis outage every deadline has passed, and the jobs
of live workers must get a beat in before anyone calls them dead.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Set

from .keys import TASK_NAME
from .lanes import route
from .recovery import FetchRecovery
from .reliable_fetch import fetchers_key, processing_key

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """A daemon thread per worker process: heartbeat, then reap."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.settings = runtime.settings
        self._running: Set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="promptq-leases", daemon=True)
        self._beating_since: float = 0.0
        self._failures = 0
        self.fetch_recovery = FetchRecovery(runtime)

    def start(self) -> "LeaseKeeper":
        self.runtime.leases = self
        limiter = getattr(self.runtime, "limiter", None)
        if limiter is not None:
            # This beat keeps the process's cap leases alive, so they can be
            # short: a dead worker's slots come back with its jobs.
            limiter.keep_leases_alive(self.settings.lease_ttl_s)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def add(self, job_id: str) -> None:
        with self._lock:
            self._running.add(job_id)

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)

    def running(self) -> list:
        with self._lock:
            return list(self._running)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.beat()
                if time.monotonic() - self._beating_since >= self.settings.lease_ttl_s:
                    self.reap()
                self._failures = 0
            except Exception as exc:  # the keeper must outlive a Redis blip
                self._beating_since = 0.0
                self._failures += 1
                # One line per failed beat, not a traceback each time.
                logger.warning("lease heartbeat failed (%s: %s); retry %d in %.1fs",
                               type(exc).__name__, exc, self._failures, self.settings.heartbeat_s)

    def beat(self) -> None:
        store = self.runtime.store
        now = time.time()
        store.refresh(self.running(), now + self.settings.lease_ttl_s)
        pipe = store.redis.pipeline(transaction=False)
        pipe.hset(self.runtime.keys.workers, self.runtime.worker_name, now)
        pipe.hset(fetchers_key(self.runtime.keys.prefix), processing_key(self.runtime.keys.prefix), now)
        pipe.execute()
        if not self._beating_since:
            self._beating_since = time.monotonic()
        self._keep_cap_leases()

    def _keep_cap_leases(self) -> None:
        held = getattr(getattr(self.runtime, "limiter", None), "held", None)
        if held is None:
            return
        try:
            held.refresh(lambda: {self.runtime.keys.job(job_id) for job_id in self.running()})
        except Exception as exc:  # a lapsed lease lets one call past a cap; it must not stop reaping
            logger.warning("concurrency leases not refreshed (%s: %s)", type(exc).__name__, str(exc)[:200])

    def reap(self) -> int:
        """Re-publish every job whose worker stopped checking in. Returns how many."""
        store = self.runtime.store
        claimed = store.reap(limit=100, redeadline_s=self.settings.lease_ttl_s)
        own = processing_key(self.runtime.keys.prefix)
        claimed += self.fetch_recovery.recover(time.time(), self.settings.lease_ttl_s, own=own)
        claimed += self.fetch_recovery.recover_own(own, self.settings.lease_ttl_s)
        for job in claimed:
            spec = job["spec"]
            targets = spec.get("targets") or []
            index = min(job["target_index"], max(0, len(targets) - 1))
            provider = targets[index].split(":", 1)[0] if targets else "mock"
            logger.warning(
                "job %s: worker stopped checking in while %s; re-queued on %s",
                job["id"], job["status"], provider,
            )
            self.runtime.app.send_task(
                TASK_NAME,
                args=(job["id"], spec),
                kwargs={"target_index": index, "attempt": job["attempt"], "token": job["token"]},
                task_id=job["id"],
                **route(self.runtime.keys, spec, index),  # its queue, in its own lane
            )
            store.release(job["id"], job["token"])
        return len(claimed)
