"""A quick capacity probe (issue 8): a batch against a token-bucket fake OpenAI.

    .venv/bin/python -m bench.cap_probe --jobs 600 --rpm 600 --burst 1 --threads 200 --workers 2

Prints succeeded, failed, 429s the server sent, wall time and goodput =
(succeeded / rpm * 60 s) / wall. The benchmark suite's `ratelimit` case
(bench/) is the full version (fake in its own process, both burst models,
backlog and spill); this is the developer's loop while tuning the limiter.
"""

from __future__ import annotations

import argparse
import json
import time

from promptq.tasks.batch import batch_status, submit_batch
from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from promptq.workers.local_stack import WorkerProcess
from tests.fakes.bucket_openai import BucketOpenAI
from tests.redis_server import RedisServer

KEY = "sk-bench-capacity-0123456789"


def probe(jobs: int, rpm: float, burst_s: float, threads: int, workers: int) -> dict:
    with RedisServer() as redis_server, BucketOpenAI(api_key=KEY, rpm=rpm, burst_s=burst_s) as server:
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
        client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
        procs = [WorkerProcess(redis_server.url, ["openai"], env=env, concurrency=threads, name=f"probe{i}")
                 for i in range(workers)]
        for proc in procs:
            proc.start()
        try:
            lines = [json.dumps({"custom_id": f"l{i}", "prompt": f"line {i}"}) for i in range(jobs)]
            started = time.monotonic()
            batch = submit_batch(client, lines, targets=["openai:gpt-4o-mini"]).batch_id
            while not (status := batch_status(client, batch))["finished"]:
                if time.monotonic() - started > jobs / rpm * 60 * 5 + 120:
                    raise TimeoutError(status)
                time.sleep(0.1)  # polling a counter
            wall = time.monotonic() - started
        finally:
            for proc in procs:
                proc.stop()
            client.close()
        return {
            "jobs": jobs, "rpm": rpm, "burst_s": burst_s, "threads": threads, "workers": workers,
            "succeeded": status["succeeded"], "failed": status["failed"], "429s": server.rejected,
            "requests": server.admitted + server.rejected, "wall_s": round(wall, 1),
            "goodput": round(status["succeeded"] / rpm * 60 / wall, 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--rpm", type=float, default=600)
    parser.add_argument("--burst", type=float, nargs="+", default=[1.0, 60.0],
                        help="bucket size in seconds of quota (one run per value)")
    parser.add_argument("--threads", type=int, nargs="+", default=[200])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print("| burst s | threads | succeeded | failed | 429s (of requests) | wall s | goodput |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for burst in args.burst:
        for threads in args.threads:
            r = probe(args.jobs, args.rpm, burst, threads, args.workers)
            print(f"| {burst:g} | {threads} | {r['succeeded']} | {r['failed']} | {r['429s']} ({r['requests']}) "
                  f"| {r['wall_s']} | {r['goodput']} |", flush=True)


if __name__ == "__main__":
    main()
