"""What the capacity cases (ratelimit, backlog, spill, interactive) share.

A batch file written to a temp dir, submitted with `submit_batch` (the
batch lane, as a user's batch would be); worker processes started side by
side; and a wait on the batch's own counters. Figures come from the job
records the workers wrote (`started_at`, `finished_at`, status) and from
the rate-limited fake's `/__fake__/stats`, never from how fast this driver
polls.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from promptq.tasks.batch import batch_status, job_id_for, submit_batch
from promptq.workers.local_stack import WorkerProcess

from .fake import KEY
from .harness import WORKER_ENV, log, promptq_finish_times

#: Provider -> the environment variables pointing it at a fake server.
PROVIDER_ENV = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "openrouter": ("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
}


def write_batch(n: int, tag: str) -> Path:
    """n short prompts as a plain-form JSONL file (custom_id line-<i>)."""
    fd, name = tempfile.mkstemp(prefix=f"bench-{tag}-", suffix=".jsonl")
    with os.fdopen(fd, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"line-{i}", "prompt": f"{tag} {i}: say ok"}) + "\n")
    return Path(name)


def submit_lines(client: Any, n: int, tag: str, targets: Sequence[str], **options: Any) -> Dict[str, Any]:
    """Submit an n-line batch; returns {batch_id, ids, submit_s}."""
    path = write_batch(n, tag)
    try:
        t0 = time.monotonic()
        sub = submit_batch(client, path, targets=list(targets), batch_id=f"{tag}-{int(time.time())}", **options)
        submit_s = time.monotonic() - t0
    finally:
        path.unlink()
    ids = [job_id_for(sub.batch_id, f"line-{i}") for i in range(n)]
    log(f"  {tag}: {sub.submitted} jobs submitted in {submit_s:.1f}s")
    return {"batch_id": sub.batch_id, "ids": ids, "submit_s": submit_s}


def workers_for(redis_url: str, fakes: Dict[str, Any], *, count: int, concurrency: int, name: str,
                env: Optional[Dict[str, str]] = None) -> List[WorkerProcess]:
    """`count` threads workers consuming the queues of `fakes` (provider -> FakeProcess)."""
    provider_env: Dict[str, str] = {}
    for provider, fake in fakes.items():
        key_var, url_var = PROVIDER_ENV[provider]
        provider_env.update({key_var: KEY, url_var: fake.base_url})
    return [WorkerProcess(redis_url, list(fakes), pool="threads", concurrency=concurrency, name=f"{name}-{i}",
                          env={**WORKER_ENV, **provider_env, "PROMPTQ_CONCURRENCY": str(concurrency),
                               "PROMPTQ_POOL": "threads", **(env or {})})
            for i in range(count)]


def start_all(workers: Sequence[WorkerProcess]) -> None:
    """Start side by side (each start waits for readiness), so neither gets a head start."""
    errors: List[BaseException] = []

    def start(worker: WorkerProcess) -> None:
        try:
            worker.start()
        except BaseException as exc:  # reported below, in this thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        kill_all(workers)
        raise errors[0]


def kill_all(workers: Sequence[WorkerProcess]) -> None:
    """Bench jobs need no warm shutdown; SIGKILL our own children by PID."""
    for worker in workers:
        worker.kill()
        worker._close_log()


def wait_batch(client: Any, batch_id: str, timeout_s: float) -> Dict[str, Any]:
    """Poll the batch's counters until every job is done, or give up (then `timed_out`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = batch_status(client, batch_id)
        if status["finished"]:
            return {**status, "timed_out": False}
        if time.monotonic() > deadline:
            log(f"  batch {batch_id} unfinished after {timeout_s:.0f}s: {status['done']}/{status['total']}")
            return {**status, "timed_out": True}
        time.sleep(0.25)


def outcome(client: Any, ids: Sequence[str]) -> Dict[str, Any]:
    """Statuses, and the wall time from the first job started to the last one finished."""
    times = promptq_finish_times(client.redis, client.keys.prefix, ids)
    wall = (max(times["finished"]) - min(times["started"])) if times["finished"] and times["started"] else float("nan")
    return {"statuses": times["statuses"], "wall_s": wall, "succeeded": times["statuses"].get("succeeded", 0)}


def rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20
