"""What dead-worker detection costs Redis at 50 workers.

    .venv/bin/python -m bench.heartbeat_cost [--workers 50] [--seconds 10]
    ./scripts/bench --only heartbeat_cost          # the same, as case 14 of the suite

Two parts, each measured as Redis commands per second (INFO's
total_commands_processed, before and after) on a private redis-server:

1. Leases: `--workers` real LeaseKeepers (tasks.leases), each holding 8
   running jobs, beating and reaping on their own threads, with the default
   heartbeat (2 s) and, as the baseline in the same run, the old one (5 s).
2. Idle fetch: one real, idle `promptq worker` (reliable fetch's scan and
   BLMOVE cycle on kombu's 4 priority lists, plus its own heartbeat and
   Celery's events), scaled by `--workers`.

A report, not a test: it prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

from promptq.tasks.app import create_app
from promptq.tasks.keys import Keys
from promptq.tasks.leases import LeaseKeeper
from promptq.tasks.settings import Settings
from promptq.tasks.store import JobStore
from promptq.workers.embedded_redis import RedisServer
from promptq.workers.local_stack import WorkerProcess


def commands(client) -> int:
    return int(client.info("stats")["total_commands_processed"])


def leases_cost(server: RedisServer, workers: int, seconds: float, heartbeat_s: float, lease_s: float) -> float:
    settings = Settings.load(environ={"PROMPTQ_REDIS_URL": server.url, "PROMPTQ_HEARTBEAT_S": str(heartbeat_s),
                                      "PROMPTQ_LEASE_TTL_S": str(lease_s)})
    app = create_app(settings)
    client = server.client()
    keys = Keys()
    keepers = []
    for w in range(workers):
        rt = SimpleNamespace(settings=settings, keys=keys, app=app, worker_name=f"bench:{w}", leases=None,
                             store=JobStore(server.client(), keys, settings.result_ttl_s))
        keeper = LeaseKeeper(rt)
        for j in range(8):
            job = f"w{w}j{j}"
            client.zadd(keys.inflight, {job: time.time() + 3600})
            keeper.add(job)
        keepers.append(keeper)
    for keeper in keepers:
        keeper.start()
    time.sleep(lease_s + heartbeat_s)  # past the start-up guard: every keeper now also reaps
    before, t0 = commands(client), time.monotonic()
    time.sleep(seconds)  # the measurement window
    rate = (commands(client) - before) / (time.monotonic() - t0)
    for keeper in keepers:
        keeper.stop()
    client.flushall()
    return rate


def idle_fetch_cost(server: RedisServer, seconds: float, env: dict) -> float:
    client = server.client()
    with WorkerProcess(server.url, ["mock"], env=env, name="idle"):
        time.sleep(2)  # settle after start-up
        before, t0 = commands(client), time.monotonic()
        time.sleep(seconds)  # the measurement window
        rate = (commands(client) - before) / (time.monotonic() - t0)
    client.flushall()
    return rate


def measure(server: RedisServer, workers: int, seconds: float) -> dict:
    new = leases_cost(server, workers, seconds, 2.0, 6.0)
    old = leases_cost(server, workers, seconds, 5.0, 30.0)
    fetch = idle_fetch_cost(server, seconds, {})
    return {
        "workers": workers,
        "leases_cmds_per_s": round(new, 1), "leases_cmds_per_s_old_defaults": round(old, 1),
        "idle_fetch_cmds_per_s_per_worker": round(fetch, 1),
        "total_cmds_per_s_at_workers": round(new + fetch * workers, 1),
    }


def run(ctx) -> tuple:
    """Case 13 of `python -m bench`."""
    from .report import row

    figures = measure(ctx.redis, 50, 3.0 if ctx.quick else 10.0)
    case = "14 heartbeat_cost"
    rows = [
        row(case, "Redis cmds/s, leases of 50 workers (heartbeat 2 s, lease 6 s)", figures["leases_cmds_per_s"],
            "cmds/s", baseline=figures["leases_cmds_per_s_old_defaults"],
            baseline_is="old defaults: heartbeat 5 s, lease 30 s", note="8 running jobs per worker"),
        row(case, "Redis cmds/s, one idle worker (reliable fetch + beats + Celery events)",
            figures["idle_fetch_cmds_per_s_per_worker"], "cmds/s"),
        row(case, "Redis cmds/s, 50 idle workers in all", figures["total_cmds_per_s_at_workers"], "cmds/s",
            note="leases + 50 x one idle worker"),
    ]
    return rows, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with RedisServer() as server:
        figures = measure(server, args.workers, args.seconds)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
