"""A batch through the queue from Python: submit a JSONL file, watch the
counters, read the results in the OpenAI Batch output format.

Run: .venv/bin/python examples/batch.py

Uses PROMPTQ_REDIS_URL if set (a worker must consume promptq.mock there),
else starts a private Redis and a worker for the length of the example.
The CLI does the same with `promptq batch submit|wait|results`.
"""

import os
import time
from pathlib import Path

from promptq import Client, Settings, batch_status, iter_results, submit_batch
from promptq.workers.local_stack import LocalStack

SAMPLE = Path(__file__).with_name("sample_batch.jsonl")


def main() -> None:
    with LocalStack() as stack:
        if stack.private_redis:
            stack.add_worker(["mock"], name="example", concurrency=8)
        client = Client(Settings.load(environ={**os.environ, "PROMPTQ_REDIS_URL": stack.redis_url}))
        # Every line goes to the mock; lines of the OpenAI format name their own model.
        # A spend limit stops the batch's jobs from starting once they cost $5
        # (the mock costs nothing; on a paid model this caps the bill).
        submission = submit_batch(client, SAMPLE, targets=["mock:sample-model"], max_cost_usd=5)
        print(f"batch {submission.batch_id}: {submission.submitted} jobs")
        deadline = time.monotonic() + 120
        while not (status := batch_status(client, submission.batch_id))["finished"]:
            if time.monotonic() > deadline:
                raise SystemExit("the batch did not finish in 120 s")
            print(f"  {status['done']}/{status['total']} done", end="\r", flush=True)
            time.sleep(0.2)
        print(f"  {status['succeeded']} succeeded, {status['failed']} failed, {status['total_tokens']} tokens, "
              f"${status['cost_usd']:.4f} of a ${status['max_cost_usd']:.2f} limit")
        for line in iter_results(client, submission.batch_id):
            answer = line["response"]["body"]["choices"][0]["message"]["content"] if line["response"] else line["error"]
            print(f"{line['custom_id']}: {answer}")
        client.close()


if __name__ == "__main__":
    main()
