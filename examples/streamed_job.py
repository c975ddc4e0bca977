"""A streamed job through the queue: submit, follow the text live, read the record.

Run: .venv/bin/python examples/streamed_job.py

Uses PROMPTQ_REDIS_URL if set (a worker must consume promptq.mock there),
else starts a private Redis and a worker for the length of the example. The
first target drops the connection after three chunks, so the stream shows a
reset and the answer comes from the second target, never spliced.
"""

import os

from promptq import Client, Reset, Settings
from promptq.workers.local_stack import LocalStack


def main() -> None:
    with LocalStack() as stack:
        if stack.private_redis:
            stack.add_worker(["mock"], name="example", env={"PROMPTQ_MAX_RETRIES": "0"})
        client = Client(Settings.load(environ={**os.environ, "PROMPTQ_REDIS_URL": stack.redis_url}))
        handle = client.submit(
            "[[fault@flaky:drop:3]] Tell me how promptq keeps streamed answers whole",
            to=["mock:flaky", "mock:steady"], stream=True, max_retries=0,
        )
        print(f"job {handle.id}")
        for piece in client.stream(handle.id, timeout=60):
            if isinstance(piece, Reset):
                print(f"\n  [attempt on {piece.provider} failed: {piece.reason}; discarding its text]")
            else:
                print(piece, end="", flush=True)
        record = client.result(handle.id, timeout=10)
        print(f"\nanswered by {record.result['provider']}:{record.result['model']}, "
              f"{len(record.attempts)} attempts, usage {record.result['usage']}")
        client.close()


if __name__ == "__main__":
    main()
