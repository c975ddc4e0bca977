"""Backlog probe (issue 8): many queued jobs against a slow (low-rpm) provider.

    .venv/bin/python -m bench.cap_backlog --jobs 20000 --rpm 60 --seconds 90

Prints, every 15 s, the worker's RSS, Redis's used memory, how many jobs
wait in the deferred set, how many succeeded, and the 429s the server sent:
the worker's memory must not grow with the backlog (jobs wait in Redis, not
as ETA messages in the worker).
"""

from __future__ import annotations

import argparse
import json
import time

import psutil

from promptq.tasks.batch import batch_status, submit_batch
from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from promptq.workers.local_stack import WorkerProcess
from tests.fakes.bucket_openai import BucketOpenAI
from tests.redis_server import RedisServer

KEY = "sk-bench-backlog-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rpm", type=float, default=60)
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--threads", type=int, default=200)
    args = parser.parse_args()
    with RedisServer() as redis_server, BucketOpenAI(api_key=KEY, rpm=args.rpm, burst_s=1.0) as server:
        client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
        with WorkerProcess(redis_server.url, ["openai"], env=env, concurrency=args.threads, name="backlog") as worker:
            proc = psutil.Process(worker.proc.pid)
            lines = [json.dumps({"custom_id": f"l{i}", "prompt": f"line {i}"}) for i in range(args.jobs)]
            started = time.monotonic()
            batch = submit_batch(client, lines, targets=["openai:gpt-4o-mini"]).batch_id
            print(f"submitted {args.jobs} jobs in {time.monotonic() - started:.1f}s")
            print("| t s | worker RSS MB | Redis MB | deferred | queued | succeeded | failed | 429s |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            while (t := time.monotonic() - started) < args.seconds:
                time.sleep(15)
                status = batch_status(client, batch)
                rss = proc.memory_info().rss / 2**20
                used = client.redis.info("memory")["used_memory"] / 2**20
                print(f"| {t + 15:.0f} | {rss:.0f} | {used:.0f} | {client.redis.zcard('promptq:deferred')} "
                      f"| {client.redis.llen('promptq.openai')} | {status['succeeded']} | {status['failed']} "
                      f"| {server.rejected} |", flush=True)
        client.close()


if __name__ == "__main__":
    main()
