"""Case 10, backlog: 100,000 queued jobs against a 60 rpm provider, for 120 s.

The batch is submitted first (with a 30-day rate-limit deadline, where
promptq has one), then one worker (threads/200, the default)
starts against the rate-limited fake (one-second burst). Every 10 s the
driver samples the worker's RSS (psutil, process and children), Redis's
`used_memory`, the jobs done, the batch lane's queue length and the size
of kombu's `unacked` hash (messages a worker holds: ETA retries among
them). A worker that keeps waiting retries in memory grows with the
backlog; one that leaves them in Redis stays flat.

Targets (issue 8): worker <= 300 MB, and no growth with the backlog: the
last sample within 10 % of the first taken after warm-up (20 s), for the
worker's RSS and for Redis's memory. --quick: 10,000 jobs for 30 s.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Dict, List, Tuple

from promptq.tasks.batch import batch_status, submit_batch
from promptq.tasks.lanes import list_key

from .capacity import kill_all, rss_mb, start_all, submit_lines, workers_for
from .harness import TARGET, FakeProcess, log, promptq_client
from .report import row

RPM = 60
RSS_TARGET_MB = 300
GROWTH_LIMIT = 0.10
WARMUP_S = 20.0


def run(ctx: Any) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    jobs, window_s, every_s = (10_000, 30.0, 5.0) if ctx.quick else (100_000, 120.0, 10.0)
    jobs = ctx.jobs or jobs
    client = promptq_client(ctx.redis.url)
    samples: List[Dict[str, float]] = []
    try:
        client.redis.flushall()
        with FakeProcess(latency_s=0.05, rpm=RPM, burst="second") as fake:
            # 100,000 jobs at 60 rpm take 28 h: give them the longest deadline a
            # job may have, so what is measured is waiting, not failing early.
            long_wait = ({"rate_limit_deadline_s": 30 * 24 * 3600.0}
                         if "rate_limit_deadline_s" in inspect.signature(submit_batch).parameters else {})
            batch = submit_lines(client, jobs, "backlog", [TARGET], **long_wait)
            redis_before = _redis_mb(client)
            (worker,) = workers_for(ctx.redis.url, {"openai": fake}, count=1, concurrency=200, name="backlog")
            start_all([worker])
            t0 = time.monotonic()
            queue = list_key(client.keys.queue("openai"), "batch")
            try:
                while True:
                    status = batch_status(client, batch["batch_id"])
                    samples.append({
                        "t_s": round(time.monotonic() - t0, 1), "worker_rss_mb": round(rss_mb(worker.proc.pid), 1),
                        "redis_mb": round(_redis_mb(client), 2), "done": status["done"],
                        "succeeded": status["succeeded"], "failed": status["failed"],
                        "queued_messages": client.redis.llen(queue), "unacked": client.redis.hlen("unacked"),
                        # Jobs waiting in Redis for capacity (promptq's deferred set, where it has one).
                        "deferred": client.redis.zcard(f"{client.keys.prefix}:deferred"),
                    })
                    if time.monotonic() - t0 >= window_s:
                        break
                    time.sleep(every_s - (time.monotonic() - t0) % every_s)
                stats = fake.stats()
            finally:
                kill_all([worker])
    finally:
        client.close()
    for s in samples:
        log(f"  backlog t={s['t_s']:>5}s rss {s['worker_rss_mb']:.0f} MB, redis {s['redis_mb']:.1f} MB, "
            f"done {s['done']}, queued {s['queued_messages']}, deferred {s['deferred']}, unacked {s['unacked']}")
    warm = next((s for s in samples if s["t_s"] >= WARMUP_S), samples[0])
    last = samples[-1]
    peak = max(s["worker_rss_mb"] for s in samples)
    rss_growth = (last["worker_rss_mb"] - warm["worker_rss_mb"]) / warm["worker_rss_mb"]
    redis_growth = (last["redis_mb"] - warm["redis_mb"]) / warm["redis_mb"]
    details = {"jobs": jobs, "rpm": RPM, "window_s": window_s, "pool": "threads/200", "samples": samples,
               "redis_mb_after_submit": round(redis_before, 2), "peak_worker_rss_mb": peak,
               "worker_rss_growth": round(rss_growth, 3), "redis_growth": round(redis_growth, 3),
               "requests": stats["requests"], "rate_limited_429": stats["rate_limited"]}
    where = f"{jobs:,} queued, {RPM} rpm, {window_s:.0f} s, threads/200"
    done_note = (f"{last['done']} done ({last['succeeded']} succeeded, {last['failed']} failed); "
                 f"{stats['rate_limited']} 429s of {stats['requests']} requests; unacked {last['unacked']}")
    rows = [
        row("10 backlog", f"worker peak RSS, {where}", peak, "MB", baseline=samples[0]["worker_rss_mb"],
            baseline_is="first sample", target=f"<= {RSS_TARGET_MB} MB", met=peak <= RSS_TARGET_MB, note=done_note),
        row("10 backlog", f"worker RSS growth after {WARMUP_S:.0f} s", round(100 * rss_growth, 1), "%",
            baseline=warm["worker_rss_mb"], baseline_is=f"MB at {warm['t_s']} s",
            target=f"<= {100 * GROWTH_LIMIT:.0f} %", met=rss_growth <= GROWTH_LIMIT),
        row("10 backlog", f"Redis memory growth after {WARMUP_S:.0f} s", round(100 * redis_growth, 1), "%",
            baseline=warm["redis_mb"], baseline_is=f"MB at {warm['t_s']} s",
            target=f"<= {100 * GROWTH_LIMIT:.0f} %", met=redis_growth <= GROWTH_LIMIT,
            note=f"{redis_before:.1f} MB right after submitting"),
    ]
    return rows, details


def _redis_mb(client: Any) -> float:
    return client.redis.info("memory")["used_memory"] / 2**20
