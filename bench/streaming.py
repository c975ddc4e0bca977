"""Case 3, streaming relay: chunk latency, chunks/s and CPU per chunk, as
ratios to a minimal relay measured in the same run.

The fake server (`bench.fake --stamp`) writes each streamed piece as the
wall-clock time it was sent, `[1712345678.123456]`; the worker relays the
pieces as `chunk` events (tasks.chunk_relay: the pieces of one socket read
become one event, one Lua call: number, PUBLISH, XADD); a lean subscriber
process (`bench.subscriber`) PSUBSCRIBEs to every job's channel and stamps
each message with the time its recv() returned. Latency = receive time -
send time of every piece in the text: the whole relay, fake server's socket
-> worker -> Redis -> subscriber's socket. The worker's own event `ts`
splits it into the worker's part and the Redis/subscriber part.

The yardstick, "limit": `bench.relay`, a single-threaded selectors relay on
raw sockets running the same Lua script against the same fake server and
subscriber, piece by piece and merged per read. Each promptq figure is
shown as a ratio to it.

Loads: *light* (2 streams, ~200 chunks/s), *moderate* (20 streams of 100
chunks 10 ms apart, ~2,000 chunks/s offered) for latency, *saturation* (200
concurrent streams of 100 chunks, no delay) for chunks/s and CPU per chunk,
and the same with 400-chunk streams: the extra CPU per extra chunk is the
chunk path alone, the per-job cost cancelled out. Saturation runs once more
through two worker processes of half the slots each: a host runs one worker
process per core (one process is GIL-bound to one), and the issue's target is
per host. Before each measured load
the worker serves the same load once unmeasured (pools filled, as in a
running worker). Redis's own counts (`INFO commandstats`) give commands and
round trips per chunk.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List

from .redis_stats import RedisStats, per
from .report import row
from .harness import (CPU, TARGET, FakeProcess, log, percentile, promptq_client, promptq_worker, wait_all_exist,
                      window_rate)
from promptq.workers.local_stack import ROOT

STAMP = re.compile(r"\[(\d+\.\d+)\]")
PROMPT = "stream " + " ".join(f"w{i:03d}" for i in range(80))  # > 100 characters: 100 pieces


def run_load(redis_server, *, jobs: int, chunks: int, chunk_delay_s: float, pool: str, concurrency: int,
             label: str, timeout_s: float = 180.0, processes: int = 1) -> Dict[str, Any]:
    """One load through `processes` workers of `concurrency` slots each (CPU figures are their sum)."""
    client = promptq_client(redis_server.url)
    client.redis.flushall()
    out = tempfile.mktemp(prefix="bench-sub-", suffix=".json")
    with FakeProcess(chunk_count=chunks, chunk_delay_s=chunk_delay_s, stamp=True) as fake:
        workers = [promptq_worker(redis_server.url, fake.base_url, pool=pool, concurrency=concurrency,
                                  name=f"stream-{pool}-{n}") for n in range(processes)]
        for worker in workers:
            worker.start()
        # Warm-up: the same number of streams once, unmeasured, so the worker's
        # Redis, broker and HTTP pools hold as many connections as the load
        # needs (a running worker's state; the minimal relay, too, opens its
        # connections before it is timed). Opening hundreds at once costs a
        # fresh gevent worker about 1 ms each (resolver thread hand-offs).
        tag = uuid.uuid4().hex[:6]
        warm = [client.submit(f"{PROMPT} warm{tag}{i}", to=[TARGET], stream=True).id for i in range(jobs)]
        wait_all_exist(client.redis, [client.keys.attempts(i) for i in warm], timeout_s, f"streaming {label} warm-up")
        sub = subprocess.Popen(
            [sys.executable, "-m", "bench.subscriber", redis_server.host, str(redis_server.port),
             f"{client.keys.prefix}:events:*", out],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert sub.stdout.readline().strip() == b"ready"
            redis_stats = RedisStats(client.redis, redis_server.pid)
            cpu = CPU({"fake": fake.pid, "redis": redis_server.pid, "subscriber": sub.pid,
                       **{f"worker_{n}": w.proc.pid for n, w in enumerate(workers)}})
            tag = uuid.uuid4().hex[:6]
            ids = [client.submit(f"{PROMPT} {tag}{i}", to=[TARGET], stream=True).id for i in range(jobs)]
            wait_all_exist(client.redis, [client.keys.attempts(i) for i in ids], timeout_s, f"streaming {label}")
            cpu_used, shares = _workers_summed(cpu.stop()), _workers_summed(cpu.shares())
            redis_stats = redis_stats.stop()
            time.sleep(0.3)
        finally:
            sub.stdin.close()
            sub.wait(60)
            for worker in workers:
                worker.stop()
    statuses: Dict[str, int] = {}
    for job_id in ids:
        record = client.status(job_id)
        statuses[record.status.value] = statuses.get(record.status.value, 0) + 1
    client.close()
    with open(out) as fh:
        events = json.load(fh)
    os.unlink(out)
    result = summarise(events, jobs=jobs, chunks=chunks, chunk_delay_s=chunk_delay_s, cpu_used=cpu_used, shares=shares,
                       worker="worker", redis_stats=redis_stats)
    result.update({"pool": pool, "concurrency": concurrency, "processes": processes, "statuses": statuses})
    if result["pieces"] != result["expected_pieces"] or statuses != {"succeeded": jobs}:
        result["note"] = f"incomplete: {result['pieces']}/{result['expected_pieces']} pieces, {statuses}"
    _log(f"{label} {pool}/{concurrency}" + (f" x {processes} processes" if processes > 1 else ""), result)
    return result


def _workers_summed(figures: Dict[str, float]) -> Dict[str, float]:
    """`worker_0`, `worker_1`, ... folded into one `worker` figure (their sum)."""
    out = {k: v for k, v in figures.items() if not k.startswith("worker_")}
    out["worker"] = round(sum(v for k, v in figures.items() if k.startswith("worker_")), 4)
    return out


def _log(what: str, result: Dict[str, Any]) -> None:
    log(f"streaming {what}: p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms "
        f"(after each stream's first 5 events {result['steady_p99_ms']} ms), "
        f"{result['chunks_per_s']:.0f} chunks/s, {result['chunk_events']} events for "
        f"{result['pieces']}/{result['expected_pieces']} pieces, {result['us_per_chunk']} us CPU/chunk, cores {result['cores']}")


def summarise(events: List[Dict[str, Any]], *, jobs: int, chunks: int, chunk_delay_s: float, cpu_used: Dict[str, float],
              shares: Dict[str, float], worker: str, redis_stats: Dict[str, Any]) -> Dict[str, Any]:
    """Latency, rate and costs of one load from the subscriber's events."""
    chunk_events = [e for e in events if e["type"] == "chunk"]
    total_ms, worker_ms, relay_ms, pieces = [], [], [], 0
    steady_ms = []  # leaving out each stream's first 5 events: its start-up
    for e in chunk_events:
        stamps = [float(s) for s in STAMP.findall(e.get("text") or "")]
        pieces += len(stamps)
        for sent in stamps:
            total_ms.append(1000 * (e["recv"] - sent))
            if (e.get("seq") or 0) > 5:
                steady_ms.append(total_ms[-1])
            worker_ms.append(1000 * (e["ts"] - sent))
        relay_ms.append(1000 * (e["recv"] - e["ts"]))
    rate = window_rate([e["recv"] for e in chunk_events])
    piece_rate = rate * (pieces / len(chunk_events)) if chunk_events else 0.0
    worker_cpu = cpu_used.get(worker)
    return {
        "jobs": jobs, "chunks_per_job": chunks, "chunk_delay_s": chunk_delay_s,
        "chunk_events": len(chunk_events), "pieces": pieces, "expected_pieces": jobs * chunks,
        "latency_ms": {"p50": round(percentile(total_ms, 0.5), 3), "p99": round(percentile(total_ms, 0.99), 3),
                       "max": round(max(total_ms), 3) if total_ms else None},
        "steady_p99_ms": round(percentile(steady_ms, 0.99), 3),
        "send_to_event_ms": {"p50": round(percentile(worker_ms, 0.5), 3), "p99": round(percentile(worker_ms, 0.99), 3)},
        "event_to_recv_ms": {"p50": round(percentile(relay_ms, 0.5), 3), "p99": round(percentile(relay_ms, 0.99), 3)},
        "chunks_per_s": round(piece_rate, 1),
        "events_per_s": round(rate, 1),
        "cpu_s": cpu_used, "cores": shares,
        "us_per_chunk": round(1e6 * worker_cpu / pieces, 1) if worker_cpu and pieces else None,
        "worker_chunks_per_cpu_s": round(pieces / worker_cpu, 1) if worker_cpu else None,
        "redis": redis_stats, "redis_per_chunk": per(redis_stats, pieces),
        "redis_per_job": per(redis_stats, jobs),
    }


def run_relay(redis_server, *, jobs: int, chunks: int, chunk_delay_s: float, merge: bool, label: str,
              timeout_s: float = 180.0) -> Dict[str, Any]:
    """The same load through `bench.relay` (the minimal relay) instead of a worker."""
    client = promptq_client(redis_server.url)
    client.redis.flushall()
    prefix = client.keys.prefix
    out = tempfile.mktemp(prefix="bench-sub-", suffix=".json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with FakeProcess(chunk_count=chunks, chunk_delay_s=chunk_delay_s, stamp=True) as fake:
        sub = subprocess.Popen([sys.executable, "-m", "bench.subscriber", redis_server.host, str(redis_server.port),
                                f"{prefix}:events:*", out], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        relay = subprocess.Popen([sys.executable, "-m", "bench.relay", redis_server.host, str(redis_server.port),
                                  fake.base_url, prefix, str(jobs), PROMPT] + (["--merge"] if merge else []),
                                 cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            assert sub.stdout.readline().strip() == b"ready"
            assert relay.stdout.readline().strip() == b"ready"
            redis_stats = RedisStats(client.redis, redis_server.pid)
            cpu = CPU({"relay": relay.pid, "fake": fake.pid, "redis": redis_server.pid, "subscriber": sub.pid})
            relay.stdin.write(b"go\n")
            relay.stdin.flush()
            summary = json.loads(relay.stdout.readline() or b"{}")
            cpu_used = cpu.stop()
            shares = cpu.shares()
            redis_stats = redis_stats.stop()
            time.sleep(0.3)
        finally:
            sub.stdin.close()
            sub.wait(60)
            relay.stdin.close()
            try:
                relay.wait(timeout_s)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait(5)
    client.close()
    with open(out) as fh:
        events = json.load(fh)
    os.unlink(out)
    result = summarise(events, jobs=jobs, chunks=chunks, chunk_delay_s=chunk_delay_s, cpu_used=cpu_used, shares=shares,
                       worker="relay", redis_stats=redis_stats)
    result.update({"merge": merge, "relay": summary})
    _log(f"{label} minimal relay{' (merged)' if merge else ''}", result)
    return result



P99_RATIO_TARGET = 2.0
RATE_RATIO_TARGET = 0.5
US_PER_CHUNK_TARGET = 30.0


def pools(ctx) -> List[tuple]:
    return [("gevent", 200)] if ctx.quick else [("gevent", 200), ("threads", 200)]


def run(ctx):
    light_jobs, moderate_jobs, sat_jobs = (2, 10, 100) if ctx.quick else (2, 20, 200)
    details: Dict[str, Any] = {}
    rows = []
    offered = moderate_jobs * 100 / (100 * 0.01)
    # The yardstick first, in the same run: the minimal relay, chunk by chunk
    # and merged, at moderate load and at saturation.
    limit = {}
    for merge in (False, True):
        name = "relay_merged" if merge else "relay"
        limit[name] = {
            "moderate": run_relay(ctx.redis, jobs=moderate_jobs, chunks=100, chunk_delay_s=0.01, merge=merge,
                                  label="moderate"),
            "saturation": run_relay(ctx.redis, jobs=sat_jobs, chunks=100, chunk_delay_s=0.0, merge=merge,
                                    label="saturation"),
        }
    details["limit"] = limit
    base_p99 = limit["relay"]["moderate"]["latency_ms"]["p99"]
    base_rate = limit["relay"]["saturation"]["chunks_per_s"]
    base_us = limit["relay"]["saturation"]["us_per_chunk"]
    merged_rate = limit["relay_merged"]["saturation"]["chunks_per_s"]
    rows.append(row("3 streaming", f"minimal relay: p99 moderate / chunks/s at {sat_jobs} streams / CPU per chunk",
                    base_rate, "chunks/s", note=f"p99 {base_p99} ms, {base_us} us/chunk; merged: "
                    f"{limit['relay_merged']['saturation']['chunks_per_s']:,.0f} chunks/s, "
                    f"p99 {limit['relay_merged']['moderate']['latency_ms']['p99']} ms, "
                    f"{limit['relay_merged']['saturation']['us_per_chunk']} us/chunk"))
    for pool, conc in pools(ctx):
        key = f"{pool}/{conc}"
        light = run_load(ctx.redis, jobs=light_jobs, chunks=100, chunk_delay_s=0.01, pool=pool,
                         concurrency=conc, label="light")
        moderate = run_load(ctx.redis, jobs=moderate_jobs, chunks=100, chunk_delay_s=0.01, pool=pool,
                            concurrency=conc, label="moderate")
        saturated = run_load(ctx.redis, jobs=sat_jobs, chunks=100, chunk_delay_s=0.0, pool=pool,
                             concurrency=conc, label="saturation")
        # The same streams four times as long: the extra CPU per extra chunk
        # is the chunk path alone, without the per-job cost (Celery, HTTP
        # set-up, job scripts) that the 100-chunk figure spreads over chunks.
        long = run_load(ctx.redis, jobs=sat_jobs, chunks=400, chunk_delay_s=0.0, pool=pool,
                        concurrency=conc, label="saturation, 400 chunks")
        marginal = None
        if long["cpu_s"].get("worker") and saturated["cpu_s"].get("worker"):
            marginal = round(1e6 * (long["cpu_s"]["worker"] - saturated["cpu_s"]["worker"])
                             / (long["pieces"] - saturated["pieces"]), 1)
        details[key] = {"light": light, "moderate": moderate, "saturation": saturated, "saturation_400": long,
                        "marginal_us_per_chunk": marginal}
        rows.append(row("3 streaming", f"p99 chunk latency, light load ({light_jobs} streams), {key}",
                        light["latency_ms"]["p99"], "ms", note=f"p50 {light['latency_ms']['p50']} ms"))
        p99 = moderate["latency_ms"]["p99"]
        rows.append(row("3 streaming", f"p99 chunk latency, moderate load (~{offered:.0f} chunks/s offered), {key}",
                        p99, "ms", baseline=base_p99, baseline_is="minimal relay",
                        target=f"ratio <= {P99_RATIO_TARGET:g}",
                        met=bool(base_p99) and p99 / base_p99 <= P99_RATIO_TARGET and "note" not in moderate,
                        note=(moderate.get("note", "") + f" p50 {moderate['latency_ms']['p50']} ms; send->worker event "
                              f"p50 {moderate['send_to_event_ms']['p50']} ms, event->subscriber p50 "
                              f"{moderate['event_to_recv_ms']['p50']} ms").strip()))
        rate = saturated["chunks_per_s"]
        rows.append(row("3 streaming", f"chunks/s at saturation ({sat_jobs} streams x 100), {key}", rate, "chunks/s",
                        baseline=base_rate, baseline_is="minimal relay", target=f"ratio >= {RATE_RATIO_TARGET:g}",
                        met=bool(base_rate) and rate / base_rate >= RATE_RATIO_TARGET and "note" not in saturated,
                        note=(saturated.get("note", "") + f" {rate / merged_rate if merged_rate else 0:.2f}x the relay "
                              f"merging as promptq does ({merged_rate:,.0f} chunks/s); p99 {saturated['latency_ms']['p99']} ms; "
                              f"{saturated['chunk_events']} events for {saturated['pieces']} chunks; cores "
                              f"{saturated['cores']}").strip()))
        us = saturated["us_per_chunk"]
        rows.append(row("3 streaming", f"worker CPU per chunk at saturation, {key}", us, "us", baseline=base_us,
                        baseline_is="minimal relay", target=f"<= {US_PER_CHUNK_TARGET:g} us",
                        met=us is not None and us <= US_PER_CHUNK_TARGET,
                        note=f"per job {us * 100 / 1000 if us else 0:.1f} ms of worker CPU; {long['us_per_chunk']} us/chunk "
                             f"with 400-chunk streams"))
        rows.append(row("3 streaming", f"worker CPU per extra chunk (400- vs 100-chunk streams), {key}", marginal, "us",
                        baseline=base_us, baseline_is="minimal relay, all costs",
                        note="the chunk path alone: per-job costs cancel out"))
        pc = saturated["redis_per_chunk"]
        rows.append(row("3 streaming", f"Redis per chunk at saturation, {key}", pc.get("commands"), "commands",
                        baseline=limit["relay"]["saturation"]["redis_per_chunk"].get("commands"),
                        baseline_is="minimal relay",
                        note=f"{pc.get('round_trips')} round trips (all clients), {pc.get('command_us')} us in commands "
                             f"per chunk; relay: {limit['relay']['saturation']['redis_per_chunk']}"))
    # A host runs one worker process per core (a process is GIL-bound to
    # one): the same saturation through two processes of half the slots.
    for pool, conc in pools(ctx):
        key = f"{pool}/{conc // 2} x 2 processes"
        two = run_load(ctx.redis, jobs=sat_jobs, chunks=100, chunk_delay_s=0.0, pool=pool, concurrency=conc // 2,
                       processes=2, label="saturation")
        details[key] = {"saturation": two}
        rate = two["chunks_per_s"]
        rows.append(row("3 streaming", f"chunks/s at saturation ({sat_jobs} streams x 100), {key}", rate, "chunks/s",
                        baseline=base_rate, baseline_is="minimal relay", target=f"ratio >= {RATE_RATIO_TARGET:g}",
                        met=bool(base_rate) and rate / base_rate >= RATE_RATIO_TARGET and "note" not in two,
                        note=(two.get("note", "") + f" {two['us_per_chunk']} us worker CPU per chunk (both); "
                              f"cores {two['cores']}").strip()))
    ctx.results["streaming"] = details
    return rows, details
