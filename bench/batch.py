"""Case 4, batch submit: lines/s of `tasks.batch.submit_batch` vs a naive loop.

The input is a JSONL file in the plain line form (`{"custom_id", "prompt"}`).
`submit_batch` validates the whole file, then sends it in pipelined chunks
(records, ordered list, counters, then the Celery messages). The baseline
is what a user without the batch API would write: read each line, build
the job spec, `run_job.apply_async(...)` -- one Celery publish per line, no
job records at all. `Client.submit` per line (records and all, four round
trips) is shown too. No worker runs: this measures getting work onto the
queue. The naive loops run on the first N lines only (their rate per line
is flat), so the whole case stays within the time budget. The two alternate
for three rounds and the medians are compared; the target holds only if
every round's ratio meets it.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
import uuid
from typing import Any, Dict, List, Tuple

from .harness import MODEL, TARGET, log, promptq_client
from .report import row

TARGET_RATIO = 5.0


def write_file(path: str, lines: int) -> None:
    with open(path, "w") as fh:
        for i in range(lines):
            fh.write(json.dumps({"custom_id": f"line-{i}", "prompt": f"Summarise item {i} of the benchmark batch."}))
            fh.write("\n")


def run(ctx) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    lines, naive_lines = (5_000, 1_000) if ctx.quick else (100_000, 10_000)
    try:
        from promptq.tasks.batch import submit_batch
    except Exception as exc:  # being written by another helper: report, do not crash the run
        rows = [row("4 batch", "lines/s, promptq batch submit", "skipped", note=f"promptq.tasks.batch not importable: {exc}")]
        return rows, {"skipped": str(exc)}
    from promptq.tasks.job import JobSpec
    from promptq.tasks.keys import TASK_NAME

    path = tempfile.mktemp(prefix="bench-batch-", suffix=".jsonl")
    write_file(path, lines)
    client = promptq_client(ctx.redis.url)
    queue = client.keys.queue("openai")
    from promptq.tasks.lanes import queue_lists

    def queued() -> int:
        # Batch lines go to the batch lane's list, single jobs to the interactive one.
        return sum(client.redis.llen(key) for key in queue_lists(queue).values())

    details: Dict[str, Any] = {"lines": lines, "naive_lines": naive_lines}
    rounds = 3
    details["rounds"] = rounds
    batch_runs: List[Dict[str, Any]] = []
    naive_runs: List[Dict[str, Any]] = []
    try:
        # Alternate the two for `rounds` rounds and keep medians: a load that
        # comes and goes on the machine then hits both sides alike.
        for _ in range(rounds):
            client.redis.flushall()
            marks: Dict[str, float] = {}
            t0 = time.monotonic()
            sub = submit_batch(client, path, targets=[TARGET],
                               on_validated=lambda *_: marks.setdefault("v", time.monotonic()))
            elapsed = time.monotonic() - t0
            in_queue = queued()
            batch_runs.append({"seconds": round(elapsed, 2), "lines_per_s": round(lines / elapsed, 1),
                               "validate_s": round(marks.get("v", t0) - t0, 2), "submitted": sub.submitted,
                               "queued_messages": in_queue})
            log(f"batch: submit_batch {lines} lines in {elapsed:.1f}s ({lines / elapsed:.0f}/s), {in_queue} queued")
            del sub  # each round starts from the same heap: nothing of the last one kept
            gc.collect()

            # The naive loop: parse, build the spec, apply_async. Same file, first lines.
            client.redis.flushall()
            task = client.app.tasks[TASK_NAME]
            t0 = time.monotonic()
            with open(path) as fh, client.app.producer_or_acquire() as producer:
                for i, text in zip(range(naive_lines), fh):
                    obj = json.loads(text)
                    spec = JobSpec.create(targets=[TARGET], prompt=obj["prompt"], custom_id=obj["custom_id"]).to_dict()
                    task.apply_async(args=(spec["id"], spec), kwargs={"target_index": 0, "attempt": 1, "token": ""},
                                     queue=queue, task_id=spec["id"], producer=producer)
            naive_s = time.monotonic() - t0
            naive_runs.append({"lines": naive_lines, "seconds": round(naive_s, 2),
                               "lines_per_s": round(naive_lines / naive_s, 1),
                               "queued_messages": queued()})
            log(f"batch: naive apply_async {naive_lines} lines in {naive_s:.1f}s ({naive_lines / naive_s:.0f}/s)")
        ratios = [b["lines_per_s"] / n["lines_per_s"] for b, n in zip(batch_runs, naive_runs)]
        median_batch = statistics.median(r["lines_per_s"] for r in batch_runs)
        naive_rate = statistics.median(r["lines_per_s"] for r in naive_runs)
        details["submit_batch"] = dict(min(batch_runs, key=lambda r: abs(r["lines_per_s"] - median_batch)),
                                       lines_per_s=median_batch)
        details["submit_batch_runs"] = batch_runs
        details["naive_apply_async"] = {"lines": naive_lines, "lines_per_s": naive_rate, "runs": naive_runs}
        details["ratios"] = [round(r, 2) for r in ratios]

        client.redis.flushall()
        submit_lines = max(200, naive_lines // 5)
        t0 = time.monotonic()
        with open(path) as fh:
            for i, text in zip(range(submit_lines), fh):
                obj = json.loads(text)
                client.submit(obj["prompt"], to=[TARGET], custom_id=obj["custom_id"])
        submit_s = time.monotonic() - t0
        details["client_submit_loop"] = {"lines": submit_lines, "seconds": round(submit_s, 2),
                                         "lines_per_s": round(submit_lines / submit_s, 1)}
        client.redis.flushall()
    finally:
        client.close()
        os.unlink(path)
    rate = details["submit_batch"]["lines_per_s"]
    ok = all(r["queued_messages"] == lines for r in batch_runs)
    rows = [
        row("4 batch", f"lines/s, submit_batch of {lines:,} lines (median of {rounds} alternating rounds)", rate,
            "lines/s", baseline=naive_rate, baseline_is="naive apply_async loop",
            ratio=statistics.median(ratios), target=f"ratio >= {TARGET_RATIO:g} in every round",
            met=ok and min(ratios) >= TARGET_RATIO,
            note=(f"ratio per round {details['ratios']}; "
                  f"{details['submit_batch']['validate_s']} s of {details['submit_batch']['seconds']} s validating; "
                  f"naive loop timed on the first {naive_lines:,} lines"
                  + ("" if ok else f"; not all messages queued: {[r['queued_messages'] for r in batch_runs]}"))),
        row("4 batch", f"lines/s, Client.submit loop ({submit_lines:,} lines)", details["client_submit_loop"]["lines_per_s"],
            "lines/s", baseline=naive_rate, baseline_is="naive apply_async loop"),
    ]
    ctx.results["batch"] = details
    return rows, details
