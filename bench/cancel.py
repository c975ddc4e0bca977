"""Case 13, cancel latency: from `Client.cancel` returning to the record saying
`cancelled`, for a running job. Baseline, measured in the same run: the same
for a queued job (the store alone, no worker involved).

* streamed: a mock job streaming a chunk every 50 ms; the worker hears the
  cancel by pub/sub and stops at its next chunk (a set lookup per chunk).
* non-streamed: a mock call waiting 30 s before it answers; the worker
  abandons it (providers.abort) instead of waiting it out.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .harness import log, promptq_client
from .report import row

CONFIG = """
[providers.mock]
latency_s = {latency_s}
chunk_delay_s = 0.05
"""
LONG = " ".join(f"w{i}" for i in range(2000))


def _until_cancelled(client: Any, job_id: str, timeout_s: float = 30.0) -> float:
    started = time.monotonic()
    client_cancel = client.cancel(job_id)
    assert client_cancel in ("requested", "cancelled"), client_cancel
    while client.store.status(job_id).value != "cancelled":
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"job {job_id} not cancelled after {timeout_s}s")
        time.sleep(0.002)  # polling the record: the thing measured
    return time.monotonic() - started


def _phase(ctx: Any, latency_s: float, stream: bool, jobs: int) -> List[float]:
    from promptq.workers.local_stack import WorkerProcess, wait_for

    client = promptq_client(ctx.redis.url)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mock.toml"
        config.write_text(CONFIG.format(latency_s=latency_s))
        with WorkerProcess(ctx.redis.url, ["mock"], env={"PROMPTQ_CONFIG": str(config)}, name="bench-cancel"):
            out = []
            for i in range(jobs):
                handle = client.submit(f"{LONG} {uuid.uuid4().hex}", to=["mock:bench"], stream=stream)
                if stream:
                    wait_for(lambda: client.redis.xlen(client.keys.events(handle.id)) >= 3, 30, 0.005, "chunks")
                else:
                    wait_for(lambda: client.store.status(handle.id).value == "running", 30, 0.005, "start")
                    time.sleep(0.05)  # inside the provider call, not before it
                out.append(_until_cancelled(client, handle.id))
    client.close()
    return out


def run(ctx: Any) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    jobs = 5 if ctx.quick else 20
    client = promptq_client(ctx.redis.url)
    client.redis.flushall()
    # Nobody consumes this queue: the cancel meets a queued job.
    queued = [_until_cancelled(client, client.submit("x", to=["openrouter:nobody"]).id) for _ in range(jobs)]
    client.close()
    log(f"  cancel: {jobs} streamed, then {jobs} non-streamed mock jobs")
    streamed = _phase(ctx, 0.0, True, jobs)
    blocking = _phase(ctx, 30.0, False, jobs)
    base = statistics.median(queued) * 1000
    rows = [row("13 cancel", "queued job: cancel -> cancelled (median)", round(base, 2), "ms", note="the store alone")]
    for label, values in (("streamed", streamed), ("non-streamed", blocking)):
        median_ms = statistics.median(values) * 1000
        rows.append(row("13 cancel", f"running {label} job: cancel -> cancelled (median)", round(median_ms, 1), "ms",
                        baseline=round(base, 2), baseline_is="queued job", target="< 1000 ms",
                        met=max(values) < 1.0, note=f"max {max(values) * 1000:.0f} ms over {len(values)}"))
    return rows, {"queued_s": queued, "streamed_s": streamed, "non_streamed_s": blocking}
