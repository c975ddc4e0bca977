"""One throughput run: queue N jobs, start a worker, time the stored completions.

Jobs are queued *before* the worker starts, so the run measures the worker,
not how fast this driver can submit; the rate is taken between the 10th and
90th percentile completion (start-up and drain left out); CPU is sampled
over that same stretch (when the completed count crosses 10 % and 90 %).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Dict, List, Optional

import redis

from .harness import (CPU, TARGET, BareWorker, bare_client, bare_finish_times, log, promptq_client,
                      promptq_finish_times, promptq_worker, send_bare, window_rate)


class _Starter(threading.Thread):
    """`worker.start()` (which waits for readiness) in a thread, so polling can
    begin as soon as the process exists: a small queue may be drained before
    the worker reports ready."""

    def __init__(self, worker: Any):
        super().__init__(daemon=True)
        self.worker = worker
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self.worker.start()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: Optional[float] = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def _start_in_background(worker: Any) -> _Starter:
    starter = _Starter(worker)
    starter.start()
    deadline = time.monotonic() + 30
    while worker.proc is None:
        if starter.error is not None or time.monotonic() > deadline:
            starter.join(1)
            raise RuntimeError("worker did not start")
        time.sleep(0.005)
    return starter


def _progress(client: redis.Redis, keys: List[str], cpu_pids: Dict[str, int], timeout_s: float) -> Dict[str, Any]:
    """Poll until every key exists; CPU between the 10 % and 90 % crossings."""
    n = len(keys)
    lo, hi = max(1, int(0.1 * n)), max(1, int(0.9 * n))
    cpu: Optional[CPU] = None
    used: Dict[str, float] = {}
    shares: Dict[str, float] = {}
    done_keys: set = set()
    pending = list(keys)
    deadline = time.monotonic() + timeout_s
    while pending:
        pipe = client.pipeline(transaction=False)
        for start in range(0, len(pending), 1000):
            pipe.exists(*pending[start:start + 1000])
        counts = pipe.execute()
        done = n - len(pending) + sum(counts)
        if cpu is None and done >= lo:
            cpu = CPU(cpu_pids)
            cpu_at = done
        if cpu is not None and not used and done >= hi:
            used = cpu.stop()
            shares = cpu.shares()
            cpu_jobs = done - cpu_at
        if done >= n:
            break
        if sum(counts):
            # Narrow the list to what is still missing (one EXISTS per key, rarely).
            pipe = client.pipeline(transaction=False)
            for key in pending:
                pipe.exists(key)
            pending = [k for k, ok in zip(pending, pipe.execute()) if not ok]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {n} jobs not finished after {timeout_s:.0f}s")
        time.sleep(0.02)
    if cpu is not None and not used:
        used, shares, cpu_jobs = cpu.stop(), cpu.shares(), n - cpu_at
    per_job = {name: round(1e6 * sec / cpu_jobs, 1) for name, sec in used.items()} if used and cpu_jobs else {}
    return {"cpu_s": used, "cores": shares, "cpu_us_per_job": per_job}


def promptq_run(redis_url: str, fake: Any, redis_pid: int, *, n: int, pool: str, concurrency: int,
                timeout_s: float = 300.0, env: Optional[Dict[str, str]] = None, prompt: str = "hello bench") -> Dict[str, Any]:
    client = promptq_client(redis_url)
    try:
        client.redis.flushall()
        tag = uuid.uuid4().hex[:8]
        t0 = time.monotonic()
        ids = [client.submit(f"{prompt} {tag} {i}", to=[TARGET]).id for i in range(n)]
        submit_s = time.monotonic() - t0
        worker = promptq_worker(redis_url, fake.base_url, pool=pool, concurrency=concurrency, env=env,
                                name=f"bench-{pool}-{concurrency}")
        starting = _start_in_background(worker)
        try:
            keys = [client.keys.attempts(i) for i in ids]
            cpu = _progress(client.redis, keys, {"worker": worker.proc.pid, "fake": fake.pid, "redis": redis_pid},
                            timeout_s)
            starting.join()
        finally:
            worker.stop()
        times = promptq_finish_times(client.redis, client.keys.prefix, ids)
    finally:
        client.close()
    rate = window_rate(times["finished"])
    log(f"promptq {pool}/{concurrency}: {n} jobs, {rate:.0f} jobs/s, statuses {times['statuses']}, cpu {cpu['cpu_us_per_job']}")
    return {"jobs": n, "jobs_per_s": round(rate, 1), "statuses": times["statuses"], "submit_s": round(submit_s, 2),
            "started": times["started"], "finished": times["finished"], **cpu}


def bare_run(redis_url: str, fake: Any, redis_pid: int, *, n: int, pool: str, concurrency: int,
             timeout_s: float = 300.0, prompt: str = "hello bench") -> Dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    app = bare_client(redis_url)
    try:
        client.flushall()
        tag = uuid.uuid4().hex[:8]
        ids = send_bare(app, (f"{prompt} {tag} {i}" for i in range(n)))
        worker = BareWorker(redis_url, fake.base_url, pool=pool, concurrency=concurrency)
        starting = _start_in_background(worker)
        try:
            keys = [f"celery-task-meta-{i}" for i in ids]
            cpu = _progress(client, keys, {"worker": worker.pid, "fake": fake.pid, "redis": redis_pid}, timeout_s)
            starting.join()
        finally:
            worker.stop()
        times = bare_finish_times(client, ids)
    finally:
        client.close()
        app.close()
    rate = window_rate(times["finished"])
    log(f"bare celery {pool}/{concurrency}: {n} tasks, {rate:.0f} tasks/s, statuses {times['statuses']}, cpu {cpu['cpu_us_per_job']}")
    return {"jobs": n, "jobs_per_s": round(rate, 1), "statuses": times["statuses"], **cpu}
