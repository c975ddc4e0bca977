"""Case 2, I/O concurrency: 200 ms provider latency, one worker host.

1,000 jobs are queued, then one worker starts; jobs/s (10th-90th percentile
of completions) is compared with the ideal min(concurrency / latency,
case 1's zero-latency rate for the same pool): the first term is what the
slots allow, the second what the worker's CPU allows. If case 1 did not
run in this invocation (`--only concurrency`), the zero-latency rate is
measured here (promptq only).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .harness import FakeProcess, log
from .report import row
from .runs import promptq_run

LATENCY_S = 0.2
TARGET_RATIO = 0.8


def configs(ctx) -> List[Tuple[str, int]]:
    return [("threads", 32), ("gevent", 50)] if ctx.quick else [("threads", 32), ("threads", 200), ("gevent", 200)]


def run(ctx) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    n = ctx.jobs or (100 if ctx.quick else 1000)
    details: Dict[str, Any] = {}
    # The CPU-bound rate of each pool: case 1's zero-latency rate (the
    # concurrency hardly matters once the CPU is the limit).
    caps = {k.split("/")[0]: v["promptq_jobs_per_s"] for k, v in ctx.results.get("overhead", {}).items()}
    missing = sorted({p for p, _ in configs(ctx)} - set(caps))
    if missing:
        with FakeProcess(latency_s=0.0) as fake:
            for pool in missing:
                caps[pool] = promptq_run(ctx.redis.url, fake, ctx.redis.pid, n=max(n, 200), pool=pool,
                                         concurrency=32 if pool == "threads" else 200)["jobs_per_s"]
    with FakeProcess(latency_s=LATENCY_S) as fake:
        for pool, conc in configs(ctx):
            key = f"{pool}/{conc}"
            result = promptq_run(ctx.redis.url, fake, ctx.redis.pid, n=n, pool=pool, concurrency=conc,
                                 timeout_s=max(120.0, 5 * n * LATENCY_S / conc))
            ideal = min(conc / LATENCY_S, caps[pool])
            details[key] = {"pool": pool, "concurrency": conc, "jobs": n, "latency_s": LATENCY_S,
                            "jobs_per_s": result["jobs_per_s"], "ideal": round(ideal, 1),
                            "slots_limit": conc / LATENCY_S, "cpu_limit_from_case1": caps[pool],
                            "ratio": round(result["jobs_per_s"] / ideal, 3), "statuses": result["statuses"],
                            "cpu_us_per_job": result["cpu_us_per_job"], "cores": result["cores"]}
    best = max(details, key=lambda k: details[k]["jobs_per_s"])
    recommended = _recommend(details)
    rows = []
    for key, d in details.items():
        ok = d["statuses"] == {"succeeded": n}
        is_rec = key == recommended
        rows.append(row(
            "2 concurrency", f"jobs/s, 200 ms latency, {n} jobs, {key}" + (" (recommended)" if is_rec else ""),
            d["jobs_per_s"], "jobs/s", baseline=d["ideal"],
            baseline_is=f"ideal=min({d['slots_limit']:.0f}, {d['cpu_limit_from_case1']:.0f})",
            target=f"ratio >= {TARGET_RATIO}" if is_rec else "(compared)",
            met=(ok and d["ratio"] >= TARGET_RATIO) if is_rec else None,
            note="" if ok else f"not all succeeded: {d['statuses']}"))
    details["recommended"] = recommended
    details["fastest"] = best
    ctx.results["concurrency"] = details
    return rows, details


def _recommend(details: Dict[str, Any]) -> str:
    """The configuration with the most jobs/s. Within 10 % of it (this
    machine's run-to-run noise) more slots win -- real LLM calls take
    seconds, not 200 ms, so slots are what a worker runs out of -- and then
    threads, which need no monkey-patching of every library a provider uses."""
    top = max(d["jobs_per_s"] for d in details.values())
    close = [k for k, d in details.items() if d["jobs_per_s"] >= 0.9 * top]
    return max(close, key=lambda k: (details[k]["concurrency"], details[k]["pool"] == "threads"))
