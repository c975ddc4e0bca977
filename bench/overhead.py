"""Case 1, overhead: promptq's full path vs a bare Celery task, jobs/s.

promptq: `Client.submit` -> `promptq worker` -> OpenAI provider -> fake
server (zero latency) -> job record, attempt and `done` event in Redis.
Baseline: `bench.bare_app`, a Celery task that POSTs the same request with
`requests` and returns the text into Celery's Redis result backend; same
Redis, same pool and concurrency, its own queue. Both queues are filled
before their worker starts; rates come from the stored completion times
(10th-90th percentile), CPU per job from the same stretch. The two sides
alternate for `--rounds` rounds (2 by default) and the median is kept, so
a load that comes and goes on the machine hits both.
"""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Tuple

from .harness import FakeProcess, log
from .report import row
from .runs import bare_run, promptq_run

TARGET_RATIO = 0.85


def configs(ctx) -> List[Tuple[str, int]]:
    """The current default (threads/32) and the candidate (gevent/200)."""
    return [("threads", 32)] if ctx.quick else [("threads", 32), ("gevent", 200)]


def run(ctx) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    n = ctx.jobs or (150 if ctx.quick else 800)
    rounds = 1 if ctx.quick else (ctx.rounds or 2)
    rows, details = [], {}
    with FakeProcess(latency_s=0.0) as fake:
        for pool, conc in configs(ctx):
            key = f"{pool}/{conc}"
            pq, bare = [], []
            for _ in range(rounds):  # alternate, so drift in the machine's load hits both
                pq.append(promptq_run(ctx.redis.url, fake, ctx.redis.pid, n=n, pool=pool, concurrency=conc))
                bare.append(bare_run(ctx.redis.url, fake, ctx.redis.pid, n=n, pool=pool, concurrency=conc))
            pq_rate = statistics.median(r["jobs_per_s"] for r in pq)
            bare_rate = statistics.median(r["jobs_per_s"] for r in bare)
            ok = all(r["statuses"] == {"succeeded": n} for r in pq) and all(r["statuses"] == {"SUCCESS": n} for r in bare)
            pq_cpu = statistics.median(r["cpu_us_per_job"].get("worker", 0) for r in pq)
            bare_cpu = statistics.median(r["cpu_us_per_job"].get("worker", 0) for r in bare)
            details[key] = {
                "pool": pool, "concurrency": conc, "jobs": n, "rounds": rounds,
                "promptq_jobs_per_s": pq_rate, "bare_jobs_per_s": bare_rate, "ratio": round(pq_rate / bare_rate, 3),
                "promptq_worker_cpu_us_per_job": pq_cpu, "bare_worker_cpu_us_per_job": bare_cpu,
                "promptq_runs": [_strip(r) for r in pq], "bare_runs": [_strip(r) for r in bare], "all_succeeded": ok,
            }
            note = (f"{n} jobs x {rounds} round(s); worker CPU per job {pq_cpu / 1000:.2f} ms promptq vs "
                    f"{bare_cpu / 1000:.2f} ms bare")
            if not ok:
                note += f"; NOT ALL SUCCEEDED: {[r['statuses'] for r in pq + bare]}"
            rows.append(row("1 overhead", f"jobs/s, zero-latency fake, {key}", pq_rate, "jobs/s",
                            baseline=bare_rate, baseline_is="bare Celery task", target=f"ratio >= {TARGET_RATIO}",
                            met=ok and pq_rate / bare_rate >= TARGET_RATIO, note=note))
    ctx.results["overhead"] = details
    return rows, details


def _strip(run: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in run.items() if k not in ("started", "finished")}
