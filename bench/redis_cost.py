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

The same four steps run for the baseline, in the same run and on the same
Redis: a bare Celery task making the same HTTP call (`bench.bare_app`, with
Celery's Redis result backend and task events, threads/32), sent with
`apply_async`, drained by its result keys. Its worker part per task is the
floor a Celery worker's own machinery costs Redis here.

Then `MEMORY USAGE` of every key a finished job left behind (record,
attempts, event numbering, replay stream), for a non-streamed and for a
streamed job. One Redis's job rate by its own arithmetic: 1 s / Redis CPU
per submitted job (producer + worker parts).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Tuple

import redis

from .harness import (BARE_QUEUE, TARGET, BareWorker, FakeProcess, bare_client, log, promptq_client,
                      promptq_worker, send_bare)
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


def _drain(r: redis.Redis, keys: List[str], busy: Callable[[], Any], what: str) -> int:
    """Wait until every key exists; returns the commands the polling sent (one round trip each).

    O(1) checks while work is left (`busy`: two commands, the queue's length
    and what is in flight; an EXISTS of every key per poll cost Redis ~100 us
    per job: the harness's, not the queue's), then one EXISTS of all to confirm."""
    polls = 0
    deadline = time.monotonic() + 120
    while True:
        polls += 2
        if not busy():
            polls += 1
            if r.exists(*keys) == len(keys):
                return polls
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis case: {what} did not finish")
        time.sleep(0.02)


def _drain_jobs(client: Any, ids: List[str]) -> int:
    """promptq's jobs: queue and inflight empty, then every attempts key."""
    queue = client.keys.queue(TARGET.split(":", 1)[0])
    r = client.redis
    return _drain(r, [client.keys.attempts(i) for i in ids],
                  lambda: r.llen(queue) or r.zcard(client.keys.inflight), "jobs")


def _drain_bare(r: redis.Redis, ids: List[str]) -> int:
    """Bare Celery tasks: queue and kombu's unacked hash empty, then every result key."""
    return _drain(r, [f"celery-task-meta-{i}" for i in ids], lambda: r.llen(BARE_QUEUE) or r.hlen("unacked"),
                  "bare tasks")


def steady_state(stats_client: Any, redis_pid: int, n: int, submit: Callable[[str], List[str]],
                 drain: Callable[[List[str]], int], worker: Any) -> Dict[str, Any]:
    """Steps 1-4 of the module's docstring, for one kind of producer and worker.

    `submit(tag)` sends n jobs and returns their ids; `drain(ids)` waits for
    them and returns the commands its polling sent; `worker` is started here
    and left running (the caller stops it).
    """
    stats = RedisStats(stats_client, redis_pid)
    first = submit("first")
    submitted = stats.stop()
    stats = RedisStats(stats_client, redis_pid)
    worker.start()
    polls = drain(first)
    cold = _minus(stats.stop(), {"commands": polls, "round_trips": polls, "command_usec": 0, "redis_cpu_s": 0})
    stats, started = RedisStats(stats_client, redis_pid), time.monotonic()
    time.sleep(IDLE_WINDOW_S)  # a measuring window, not a wait for the worker
    idle, idle_s = stats.stop(), time.monotonic() - started
    stats, started = RedisStats(stats_client, redis_pid), time.monotonic()
    polls = drain(submit("again"))
    window, window_s = stats.stop(), time.monotonic() - started
    work = _minus(_minus(_minus(window, submitted), _scaled(idle, window_s / idle_s)),
                  {"commands": polls, "round_trips": polls, "command_usec": 0, "redis_cpu_s": 0})
    per_submit, per_worker = per(submitted, n), per(work, n)
    total_us = per_submit.get("redis_cpu_us", 0) + per_worker.get("redis_cpu_us", 0)
    return {"ids": first, "submit": submitted, "cold": cold, "worker_idle_per_s": _scaled(idle, 1 / idle_s),
            "worker": work, "polls": polls, "per_job_submit": per_submit, "per_job_worker": per_worker,
            "per_job_cold": per(cold, n), "jobs_per_s": 1e6 / total_us if total_us else None}


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

        def submit(tag: str) -> List[str]:
            return [client.submit(f"hello {tag} {i}", to=[TARGET]).id for i in range(n)]

        w = worker()
        pq = steady_state(client.redis, redis_server.pid, n, submit, lambda ids: _drain_jobs(client, ids), w)
        w.stop()
        plain = job_bytes(client, pq["ids"][0])
        # One streamed job for its record size (the replay stream is most of it).
        w = worker()
        w.start()
        sid = client.submit("stream " + " ".join(f"w{i:03d}" for i in range(80)), to=[TARGET], stream=True).id
        client.result(sid, timeout=60)
        w.stop()
        streamed = job_bytes(client, sid)
        statuses: Dict[str, int] = {}
        for job_id in pq["ids"][:50]:
            s = client.status(job_id).status.value
            statuses[s] = statuses.get(s, 0) + 1
        # The baseline: a bare Celery task, same Redis, same pool, same steps.
        client.redis.flushall()
        app = bare_client(redis_server.url)
        bare_w = BareWorker(redis_server.url, fake.base_url, pool="threads", concurrency=32)
        try:
            bare = steady_state(client.redis, redis_server.pid, n,
                                lambda tag: send_bare(app, (f"hello {tag} {i}" for i in range(n))),
                                lambda ids: _drain_bare(client.redis, ids), bare_w)
        finally:
            bare_w.stop()
            app.close()
    client.close()
    per_submit, per_worker, per_cold = pq["per_job_submit"], pq["per_job_worker"], pq["per_job_cold"]
    bare_worker = bare["per_job_worker"]
    jobs_per_s = pq["jobs_per_s"]
    for part in (pq, bare):
        part.pop("ids")
    details.update({"promptq": pq, "bare_celery": bare, "bytes_plain": plain, "bytes_streamed": streamed,
                    "statuses_sample": statuses})
    work = pq["worker"]
    log(f"redis per job: submit {per_submit}, worker {per_worker}; bare Celery: submit {bare['per_job_submit']}, "
        f"worker {bare_worker}; bytes {sum(plain.values())} plain, {sum(streamed.values())} streamed; worker "
        f"commands {work['by_command']}; bare worker commands {bare['worker']['by_command']}; worker us by command "
        f"(scripts include what they call) {work['usec_by_command']}")
    top = ", ".join(f"{k} {v / n:.2f}" for k, v in list(work["by_command"].items())[:10])
    bare_top = ", ".join(f"{k} {v / n:.2f}" for k, v in list(bare["worker"]["by_command"].items())[:6])
    rows = [
        row("8 redis", "round trips per non-streamed job, worker", per_worker["round_trips"], "round trips",
            baseline=bare_worker["round_trips"], baseline_is="bare Celery task",
            target=f"<= {ROUND_TRIPS_TARGET}", met=per_worker["round_trips"] <= ROUND_TRIPS_TARGET,
            note=f"{per_worker['commands']} commands per job: {top}; bare Celery {bare_worker['commands']}: {bare_top}"),
        row("8 redis", "round trips per job, Client.submit", per_submit["round_trips"], "round trips",
            baseline=bare["per_job_submit"]["round_trips"], baseline_is="apply_async",
            note=f"{per_submit['commands']} commands: {pq['submit']['by_command']}"),
        row("8 redis", "Redis CPU per worker job", per_worker.get("redis_cpu_us"), "us",
            baseline=bare_worker.get("redis_cpu_us"), baseline_is="bare Celery task",
            target=f"<= {REDIS_US_TARGET:g} us", met=(per_worker.get("redis_cpu_us") or 1e9) <= REDIS_US_TARGET,
            note=f"{per_worker['command_us']} us inside commands; submit {per_submit.get('redis_cpu_us')} us, "
                 f"apply_async {bare['per_job_submit'].get('redis_cpu_us')} us"),
        row("8 redis", "Redis CPU per job, a worker's first jobs (its start, a cold endpoint's slow start)",
            per_cold.get("redis_cpu_us"), "us", note=f"{per_cold['round_trips']} round trips per job"),
        row("8 redis", "jobs/s one Redis can take (1 s / Redis CPU per submitted job)",
            round(jobs_per_s) if jobs_per_s else None, "jobs/s",
            baseline=round(bare["jobs_per_s"]) if bare["jobs_per_s"] else None, baseline_is="bare Celery task",
            target=f">= {JOBS_PER_S_TARGET:,}", met=bool(jobs_per_s) and jobs_per_s >= JOBS_PER_S_TARGET),
        row("8 redis", "bytes per finished record (MEMORY USAGE), non-streamed / streamed 100 chunks",
            sum(plain.values()), "B", note=f"non-streamed {plain}; streamed {sum(streamed.values())} B: {streamed}"),
    ]
    ctx.results["redis"] = details
    return rows, details
