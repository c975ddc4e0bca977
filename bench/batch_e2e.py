"""Case 7, batch end to end: submit a 10,000-line JSONL batch and wait until
every line is answered, through one worker on the mock provider (no HTTP),
threads pool with 8 slots (the mock answers at once, so CPU, not slots,
bounds it). Reported: seconds to submit, seconds to submit and finish, and
lines/s end to end. No target: the issue asks for the figure.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from promptq.tasks.batch import batch_status, iter_results, submit_batch

from .harness import log, promptq_client
from .report import row

LINES = 10_000


def run(ctx: Any) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    from promptq.workers.local_stack import WorkerProcess

    lines = 1_000 if ctx.quick else LINES
    client = promptq_client(ctx.redis.url)
    client.redis.flushall()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.jsonl"
        with open(path, "w") as fh:
            for i in range(lines):
                fh.write(json.dumps({"custom_id": f"line-{i}", "prompt": f"Question {i}: what is {i} plus {i}?"}) + "\n")
        with WorkerProcess(ctx.redis.url, ["mock"], name="bench-batch") as worker:
            log(f"  batch_e2e: {lines} lines through one {worker.pool}/{worker.concurrency} mock worker")
            started = time.monotonic()
            submission = submit_batch(client, path, targets=["mock:bench"])
            submitted_s = time.monotonic() - started
            deadline = started + 600
            while not (status := batch_status(client, submission.batch_id))["finished"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"batch unfinished after 600 s: {status}")
                time.sleep(0.1)  # polling a counter, not waiting for a worker
            finished_s = time.monotonic() - started
        answered = sum(1 for _ in iter_results(client, submission.batch_id))
    client.close()
    note = f"{status['succeeded']} succeeded, {status['failed']} failed, {answered} result lines"
    rows = [
        row("7 batch_e2e", f"seconds to submit {lines:,} lines", round(submitted_s, 2), "s", note=note),
        row("7 batch_e2e", f"seconds to submit and finish {lines:,} lines", round(finished_s, 2), "s",
            note="mock provider, one worker, threads pool"),
        row("7 batch_e2e", "lines/s end to end", round(lines / finished_s, 1), "lines/s"),
    ]
    return rows, {"lines": lines, "submit_s": submitted_s, "finish_s": finished_s, "status": status}
