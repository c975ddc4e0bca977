"""Case 11, spill: one batch, two targets on two rate-limited servers.

Two fake OpenAI-format servers in their own processes, at 600 and 300 rpm
(one-second burst): the first is `openai:gpt-4o-mini`, the second is
reached as `openrouter:gpt-4o-mini` (OpenRouter speaks the same chat
completions format, so the provider is real and only its base URL points
at the fake). 1,200 jobs name both targets and are submitted with spill on
(`submit_batch(..., spill=True)`, when this promptq has it); two workers
(threads/200) consume both queues. Without spill the second target is a
pure fallback and the batch runs at the first one's limit.

Reported: succeeded, failed, requests each server admitted, wall time and
goodput against the summed limit = (succeeded / 900 x 60 s) / wall.
Target (issue 8): goodput >= 0.9 of the summed limit. --quick: 300 jobs.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Tuple

from promptq.tasks.batch import submit_batch

from .capacity import kill_all, outcome, start_all, submit_lines, wait_batch, workers_for
from .harness import FakeProcess, log, promptq_client
from .report import row

RPMS = {"openai": 600, "openrouter": 300}
TARGETS = ["openai:gpt-4o-mini", "openrouter:gpt-4o-mini"]
GOODPUT_TARGET = 0.9


def run(ctx: Any) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    jobs = ctx.jobs or (300 if ctx.quick else 1200)
    total_rpm = sum(RPMS.values())
    spill_supported = "spill" in inspect.signature(submit_batch).parameters
    options = {"spill": True} if spill_supported else {}
    client = promptq_client(ctx.redis.url)
    try:
        client.redis.flushall()
        with FakeProcess(latency_s=0.05, rpm=RPMS["openai"]) as first, \
                FakeProcess(latency_s=0.05, rpm=RPMS["openrouter"]) as second:
            batch = submit_lines(client, jobs, "spill", TARGETS, **options)
            workers = workers_for(ctx.redis.url, {"openai": first, "openrouter": second}, count=2,
                                  concurrency=200, name="spill")
            start_all(workers)
            try:
                status = wait_batch(client, batch["batch_id"], timeout_s=3 * jobs / total_rpm * 60 + 120)
            finally:
                kill_all(workers)
            stats = {"openai": first.stats(), "openrouter": second.stats()}
        result = outcome(client, batch["ids"])
    finally:
        client.close()
    wall = result["wall_s"]
    succeeded = result["succeeded"]
    goodput = (succeeded / total_rpm * 60) / wall if wall and wall == wall and wall > 0 else 0.0
    details = {"jobs": jobs, "rpm": RPMS, "spill": spill_supported, "succeeded": succeeded,
               "failed": jobs - succeeded, "statuses": result["statuses"], "wall_s": round(wall, 1),
               "goodput_of_summed_limit": round(goodput, 3), "timed_out": status["timed_out"],
               "admitted": {k: v["admitted"] for k, v in stats.items()},
               "rate_limited_429": {k: v["rate_limited"] for k, v in stats.items()},
               "spilled": status.get("spilled"), "failed_over": status.get("failed_over")}
    log(f"  spill: {succeeded}/{jobs} succeeded in {wall:.1f}s, goodput {goodput:.2f} of {total_rpm} rpm, "
        f"admitted {details['admitted']}, 429s {details['rate_limited_429']}")
    note = (f"{succeeded}/{jobs} succeeded in {details['wall_s']} s; admitted {details['admitted']}; "
            f"429s {details['rate_limited_429']}"
            + ("" if spill_supported else "; this promptq has no spill: the second target is a fallback only")
            + ("; GAVE UP waiting" if status["timed_out"] else ""))
    rows = [
        row("11 spill", f"goodput of {total_rpm} rpm summed, {jobs:,} jobs, 600 + 300 rpm, 2 x threads/200",
            round(goodput, 3), "", baseline=1.0, baseline_is="both quotas in full",
            target=f">= {GOODPUT_TARGET}", met=goodput >= GOODPUT_TARGET and succeeded == jobs, note=note),
    ]
    return rows, details
