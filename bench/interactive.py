"""Case 12, interactive latency: a job submitted while a batch saturates its provider.

A 20,000-line batch (the batch lane) runs against a 600 rpm server
(one-second burst) through two workers (threads/200). Once the batch has
been running for a while (its first 100 jobs done, or 20 s), an
interactive job (the default lane) is submitted every 3 s, five times, to
the same provider and model. Time to start = the record's `started_at`
minus its `created_at` (one host, one clock); time to answer =
`finished_at` minus `created_at`. The batch is not waited for.

Target (issue 8): every interactive job starts within 5 s (and is
answered: a start that only met an open circuit is not a start). --quick: a
2,000-line batch and three probes.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

from promptq.tasks.batch import batch_status

from .capacity import kill_all, start_all, submit_lines, workers_for
from .harness import TARGET, FakeProcess, log, percentile, promptq_client
from .report import row

RPM = 600
START_TARGET_S = 5.0


def run(ctx: Any) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    lines, probes = (2_000, 3) if ctx.quick else (20_000, 5)
    lines = ctx.jobs or lines
    client = promptq_client(ctx.redis.url)
    measured: List[Dict[str, Any]] = []
    try:
        client.redis.flushall()
        with FakeProcess(latency_s=0.05, rpm=RPM) as fake:
            batch = submit_lines(client, lines, "interactive-bg", [TARGET])
            workers = workers_for(ctx.redis.url, {"openai": fake}, count=2, concurrency=200, name="inter")
            start_all(workers)
            try:
                warm_until = time.monotonic() + 20
                while batch_status(client, batch["batch_id"])["done"] < min(100, lines // 2) \
                        and time.monotonic() < warm_until:
                    time.sleep(0.2)
                before, t_probes = batch_status(client, batch["batch_id"])["done"], time.monotonic()
                for i in range(probes):
                    handle = client.submit(f"interactive probe {i}: are you there?", to=[TARGET])
                    try:
                        record = client.result(handle.id, timeout=120)
                    except TimeoutError:
                        record = client.status(handle.id)
                    measured.append(_latency(record))
                    log(f"  interactive probe {i}: started after {measured[-1]['start_s']} s, "
                        f"answered after {measured[-1]['answer_s']} s ({measured[-1]['status']})")
                    time.sleep(3)
                background = batch_status(client, batch["batch_id"])
                batch_rpm = (background["done"] - before) / (time.monotonic() - t_probes) * 60
                stats = fake.stats()
            finally:
                kill_all(workers)
    finally:
        client.close()
    starts = [m["start_s"] for m in measured if m["start_s"] is not None]
    answers = [m["answer_s"] for m in measured if m["answer_s"] is not None]
    worst = max(starts) if len(starts) == len(measured) else float("inf")
    details = {"batch_lines": lines, "rpm": RPM, "probes": measured, "worst_start_s": worst,
               "median_answer_s": round(percentile(answers, 0.5), 2) if answers else None,
               "batch_done_meanwhile": background["done"], "batch_succeeded": background["succeeded"],
               "batch_rpm_during_probes": round(batch_rpm, 1),
               "requests": stats["requests"], "rate_limited_429": stats["rate_limited"]}
    note = (f"starts {starts} s, answers {answers} s; the batch ran at {batch_rpm:.0f} rpm meanwhile and had "
            f"{background['done']} of {lines} done; "
            f"{stats['rate_limited']} 429s of {stats['requests']} requests")
    rows = [
        row("12 interactive", f"worst time to start, {probes} interactive jobs behind a {lines:,}-line batch",
            round(worst, 2), "s", target=f"<= {START_TARGET_S:.0f} s, and answered",
            met=worst <= START_TARGET_S and len(answers) == len(measured), note=note),
        row("12 interactive", "median time to answer, same jobs", details["median_answer_s"], "s",
            target="(compared)"),
    ]
    return rows, details


def _latency(record: Any) -> Dict[str, Any]:
    if record is None:
        return {"status": "missing", "start_s": None, "answer_s": None}
    created = record.created_at or 0.0
    return {"status": record.status.value,
            "start_s": round(record.started_at - created, 3) if record.started_at else None,
            "answer_s": round(record.finished_at - created, 3) if record.finished_at and
            record.status.value == "succeeded" else None}
