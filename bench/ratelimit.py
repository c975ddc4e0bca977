"""Case 9, rate limits: a batch against a provider that enforces 600 rpm.

The fake OpenAI server runs in its own process behind OpenAI's rate limiter
(`tests.fakes.ratelimited_server`: rpm and tpm token buckets, x-ratelimit-*
headers, 429 `rate_limit_exceeded` with retry-after-ms / Retry-After), in
both burst models: a bucket of one second of quota, and a bucket of the
whole minute. 1,200 short jobs are submitted as a batch, then two worker
processes (threads/200, then threads/32) start; nothing is configured about
the limit, so the workers see only what a new user's would.

Per run: succeeded, failed (anything not succeeded when the batch is done,
or when the run gives up), the 429s the server sent and their share of all
requests, wall time (first job started to last finished, from the records),
and goodput = (succeeded / rpm x 60 s) / wall: 1.0 is the whole quota used.
In the minute model the bucket starts full, so 600 jobs go at once and the
best wall is about half the second model's (goodput up to ~2).
Targets (issue 8): 0 failed, goodput >= 0.95, 429s <= 2 % of requests.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .capacity import kill_all, outcome, start_all, submit_lines, wait_batch, workers_for
from .harness import TARGET, FakeProcess, log, promptq_client
from .report import row

RPM = 600
#: Not the binding limit here (a job is ~10 tokens), but enforced and reported.
TPM = 150_000
LATENCY_S = 0.05
GOODPUT_TARGET = 0.95
MAX_429_SHARE = 0.02


def configs(ctx: Any) -> List[Tuple[str, int]]:
    if ctx.quick:
        return [("second", 200), ("minute", 32)]
    return [("second", 200), ("second", 32), ("minute", 200), ("minute", 32)]


def rpm_for(ctx: Any, burst: str) -> int:
    # --quick: 240 jobs. A 600-rpm minute bucket would hold them all (no
    # rate limit to meet), so the quick minute run is at 120 rpm.
    return 120 if ctx.quick and burst == "minute" else RPM


def run(ctx: Any) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    jobs = ctx.jobs or (240 if ctx.quick else 1200)
    details: Dict[str, Any] = {"jobs": jobs, "rpm": RPM, "tpm": TPM, "workers": 2, "latency_s": LATENCY_S}
    rows: List[Dict[str, Any]] = []
    for burst in ("second", "minute"):
        plans = [c for b, c in configs(ctx) if b == burst]
        if not plans:
            continue
        rpm = rpm_for(ctx, burst)
        with FakeProcess(latency_s=LATENCY_S, rpm=rpm, tpm=TPM, burst=burst) as fake:
            for conc in plans:
                d = measure(ctx, fake, burst, conc, jobs, rpm)
                details[f"{burst}/threads-{conc}"] = d
                rows += rows_for(d)
    ctx.results["ratelimit"] = details
    return rows, details


def measure(ctx: Any, fake: FakeProcess, burst: str, conc: int, jobs: int, rpm: int) -> Dict[str, Any]:
    client = promptq_client(ctx.redis.url)
    try:
        client.redis.flushall()
        fake.reset()
        batch = submit_lines(client, jobs, f"rl-{burst}-{conc}", [TARGET])
        workers = workers_for(ctx.redis.url, {"openai": fake}, count=2, concurrency=conc, name=f"rl-{conc}")
        start_all(workers)
        try:
            ideal_s = jobs / rpm * 60
            status = wait_batch(client, batch["batch_id"], timeout_s=3 * ideal_s + 120)
        finally:
            kill_all(workers)
        stats = fake.stats()
        result = outcome(client, batch["ids"])
    finally:
        client.close()
    succeeded = result["succeeded"]
    wall = result["wall_s"]
    goodput = (succeeded / rpm * 60) / wall if wall and wall == wall and wall > 0 else 0.0
    share = stats["rate_limited"] / stats["requests"] if stats["requests"] else 0.0
    capacity = rpm if burst == "minute" else rpm / 60
    d = {"burst": burst, "rpm": rpm, "pool": f"threads/{conc}", "workers": 2, "jobs": jobs, "succeeded": succeeded,
         "bucket_holds_all": jobs <= capacity,
         "failed": jobs - succeeded, "statuses": result["statuses"], "timed_out": status["timed_out"],
         "requests": stats["requests"], "rate_limited_429": stats["rate_limited"],
         "share_429": round(share, 4), "wall_s": round(wall, 1), "goodput": round(goodput, 3),
         "in_flight_peak": stats["in_flight_peak"], "batch_counters": {k: status.get(k) for k in
                                                                      ("succeeded", "failed", "retried", "failed_over")}}
    log(f"  ratelimit {burst}/threads-{conc}: {succeeded}/{jobs} succeeded, {stats['rate_limited']} 429s of "
        f"{stats['requests']} requests, wall {wall:.1f}s, goodput {goodput:.2f}")
    return d


def rows_for(d: Dict[str, Any]) -> List[Dict[str, Any]]:
    case, where = "9 ratelimit", f"{d['rpm']} rpm, {d['burst']} burst, 2 x {d['pool']}"
    note = (f"{d['succeeded']}/{d['jobs']} succeeded in {d['wall_s']} s; {d['rate_limited_429']} 429s of "
            f"{d['requests']} requests; statuses {d['statuses']}" + ("; GAVE UP waiting" if d["timed_out"] else "")
            + ("; the bucket held every job at once: no limit was met" if d["bucket_holds_all"] else ""))
    return [
        row(case, f"goodput, {where}", d["goodput"], "", baseline=1.0, baseline_is="whole quota",
            target=f">= {GOODPUT_TARGET}", met=d["goodput"] >= GOODPUT_TARGET, note=note),
        row(case, f"failed jobs, {where}", d["failed"], "jobs", target="0", met=d["failed"] == 0),
        row(case, f"429s, % of requests, {where}", round(100 * d["share_429"], 2), "%",
            target=f"<= {100 * MAX_429_SHARE:.0f} %", met=d["share_429"] <= MAX_429_SHARE),
    ]
