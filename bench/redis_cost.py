"""Case 8, Redis per job: commands, round trips, Redis CPU and bytes per record.

Counted by Redis itself (`INFO commandstats`, `total_reads_processed`: see
bench.redis_stats), for non-streamed jobs on the zero-latency fake:

1. `Client.submit` of N jobs with no worker running: the producer's part;
2. a worker started on those jobs drains them (its start and the cold
   endpoint's slow start: reported, not the figure);
3. the running worker, idle for a second: its background cost per second
   (heartbeats, the deferral mover, fetch timeouts);
4. N more jobs submitted while it runs, until every one is finished: the
   worker's part per job is that window's count minus the producer's part
   (1), the idle background for the window's length (3) and the driver's
   own polling (counted here). This is the steady state a busy worker is in.

Then `MEMORY USAGE` of every key a finished job left behind (record,
attempts, event numbering, replay stream), for a non-streamed and for a
streamed job. One Redis's job rate by its own arithmetic: 1 s / Redis CPU
per submitted job (producer + worker parts).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

from .harness import TARGET, FakeProcess, log, promptq_client, promptq_worker
from .redis_stats import RedisStats, memory_usage, per
from .report import row

ROUND_TRIPS_TARGET = 6
IDLE_WINDOW_S = 1.0
REDIS_US_TARGET = 250.0
JOBS_PER_S_TARGET = 3000


def _minus(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(a)
    for key in ("commands", "round_trips", "command_usec", "redis_cpu_s"):
        if key in a and key in b:
            out[key] = max(0, a[key] - b[key])
    for key in ("by_command", "usec_by_command"):
        if key in a and key in b:
            out[key] = {name: a[key][name] - b[key].get(name, 0) for name in a[key]}
            out[key] = dict(sorted(((k, v) for k, v in out[key].items() if v > 0), key=lambda kv: -kv[1]))
    return out


def _scaled(stats: Dict[str, Any], factor: float) -> Dict[str, Any]:
    return {key: stats[key] * factor for key in ("commands", "round_trips", "command_usec", "redis_cpu_s")
            if key in stats}


def _drain(client: Any, ids: List[str]) -> int:
    """Wait until every job is finished; returns the commands the polling sent (one round trip each)."""
    polls = 0
    deadline = time.monotonic() + 120
    keys = [client.keys.attempts(i) for i in ids]
    queue = client.keys.queue(TARGET.split(":", 1)[0])
    while True:
        # O(1) checks while work is left (an EXISTS of every key per poll
        # cost Redis ~100 us per job: the harness's, not promptq's), then
        # one EXISTS of all to confirm.
        polls += 2
        if not client.redis.llen(queue) and not client.redis.zcard(client.keys.inflight):
            polls += 1
            if client.redis.exists(*keys) == len(keys):
                return polls
        if time.monotonic() > deadline:
            raise TimeoutError("redis case: jobs did not finish")
        time.sleep(0.02)


def job_bytes(client: Any, job_id: str) -> Dict[str, int]:
    keys = [k.decode() if isinstance(k, bytes) else k for k in client.redis.scan_iter(match=f"*{job_id}*", count=1000)]
    return memory_usage(client.redis, keys)


def run(ctx) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    n = 200 if ctx.quick else 1000
    redis_server = ctx.redis
    client = promptq_client(redis_server.url)
    client.redis.flushall()
    details: Dict[str, Any] = {"jobs": n}
    with FakeProcess(latency_s=0.0) as fake:
        def worker():
            return promptq_worker(redis_server.url, fake.base_url, pool="threads", concurrency=32, name="redis-cost")

        stats = RedisStats(client.redis, redis_server.pid)
        ids = [client.submit(f"hello {i}", to=[TARGET]).id for i in range(n)]
        submit = stats.stop()
        stats = RedisStats(client.redis, redis_server.pid)
        w = worker()
        w.start()
        polls = _drain(client, ids)
        cold = _minus(stats.stop(), {"commands": polls, "round_trips": polls, "command_usec": 0, "redis_cpu_s": 0})
        stats, started = RedisStats(client.redis, redis_server.pid), time.monotonic()
        time.sleep(IDLE_WINDOW_S)  # a measuring window, not a wait for the worker
        idle, idle_s = stats.stop(), time.monotonic() - started
        stats, started = RedisStats(client.redis, redis_server.pid), time.monotonic()
        more = [client.submit(f"hello again {i}", to=[TARGET]).id for i in range(n)]
        polls = _drain(client, more)
        window, window_s = stats.stop(), time.monotonic() - started
        w.stop()
        work = _minus(_minus(_minus(window, submit), _scaled(idle, window_s / idle_s)),
                      {"commands": polls, "round_trips": polls, "command_usec": 0, "redis_cpu_s": 0})
        plain = job_bytes(client, ids[0])
        # One streamed job for its record size (the replay stream is most of it).
        w = worker()
        w.start()
        sid = client.submit("stream " + " ".join(f"w{i:03d}" for i in range(80)), to=[TARGET], stream=True).id
        client.result(sid, timeout=60)
        w.stop()
        streamed = job_bytes(client, sid)
    statuses: Dict[str, int] = {}
    for job_id in ids[:50]:
        s = client.status(job_id).status.value
        statuses[s] = statuses.get(s, 0) + 1
    client.close()
    per_submit, per_worker = per(submit, n), per(work, n)
    redis_us_total = per_submit.get("redis_cpu_us", 0) + per_worker.get("redis_cpu_us", 0)
    per_cold = per(cold, n)
    details.update({"worker_idle_per_s": _scaled(idle, 1 / idle_s), "worker_cold": cold, "submit": submit, "worker": work, "polls": polls,
                    "per_job_submit": per_submit, "per_job_worker": per_worker, "bytes_plain": plain,
                    "bytes_streamed": streamed, "statuses_sample": statuses})
    log(f"redis per job: submit {per_submit}, worker {per_worker}; bytes {sum(plain.values())} plain, "
        f"{sum(streamed.values())} streamed; worker commands {work['by_command']}; "
        f"worker us by command (scripts include what they call) {work['usec_by_command']}")
    jobs_per_s = 1e6 / redis_us_total if redis_us_total else None
    top = ", ".join(f"{k} {v / n:.2f}" for k, v in list(work["by_command"].items())[:10])
    rows = [
        row("8 redis", "round trips per non-streamed job, worker", per_worker["round_trips"], "round trips",
            target=f"<= {ROUND_TRIPS_TARGET}", met=per_worker["round_trips"] <= ROUND_TRIPS_TARGET,
            note=f"{per_worker['commands']} commands per job: {top}"),
        row("8 redis", "round trips per job, Client.submit", per_submit["round_trips"], "round trips",
            note=f"{per_submit['commands']} commands: {submit['by_command']}"),
        row("8 redis", "Redis CPU per worker job", per_worker.get("redis_cpu_us"), "us",
            target=f"<= {REDIS_US_TARGET:g} us", met=(per_worker.get("redis_cpu_us") or 1e9) <= REDIS_US_TARGET,
            note=f"{per_worker['command_us']} us inside commands; submit {per_submit.get('redis_cpu_us')} us"),
        row("8 redis", "Redis CPU per job, a worker's first jobs (its start, a cold endpoint's slow start)",
            per_cold.get("redis_cpu_us"), "us", note=f"{per_cold['round_trips']} round trips per job"),
        row("8 redis", "jobs/s one Redis can take (1 s / Redis CPU per submitted job)",
            round(jobs_per_s) if jobs_per_s else None, "jobs/s", target=f">= {JOBS_PER_S_TARGET:,}",
            met=bool(jobs_per_s) and jobs_per_s >= JOBS_PER_S_TARGET),
        row("8 redis", "bytes per finished record (MEMORY USAGE), non-streamed / streamed 100 chunks",
            sum(plain.values()), "B", note=f"non-streamed {plain}; streamed {sum(streamed.values())} B: {streamed}"),
    ]
    ctx.results["redis"] = details
    return rows, details
