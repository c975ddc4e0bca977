"""Case 3, streaming relay: chunk latency and chunks/s through pub/sub.

The fake server (`bench.fake --stamp`) writes each streamed piece as the
wall-clock time it was sent, `[1712345678.123456]`; the worker relays each
piece as a `chunk` event (Lua: INCR + PUBLISH + XADD in one round trip); a
lean subscriber process (`bench.subscriber`) PSUBSCRIBEs to every job's
channel and stamps each message with the time its recv() returned. Latency
= receive time - send time in the text: the whole relay, fake server's
socket -> worker -> Redis -> subscriber's socket. The worker's own event
`ts` splits it into the worker's part and the Redis/subscriber part.

Three loads: *light* (2 streams, about 200 chunks/s: the floor), *moderate* (20 streams of 100 chunks, 10 ms apart: about 2,000
chunks/s offered, a tenth of the saturation target) for latency, and
*saturation* (200 concurrent streams of 100 chunks, no delay) for chunks/s.
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

from .report import row
from .harness import (CPU, TARGET, FakeProcess, log, percentile, promptq_client, promptq_worker, wait_all_exist,
                      window_rate)
from promptq.workers.local_stack import ROOT

STAMP = re.compile(r"\[(\d+\.\d+)\]")
PROMPT = "stream " + " ".join(f"w{i:03d}" for i in range(80))  # > 100 characters: 100 pieces


def run_load(redis_server, *, jobs: int, chunks: int, chunk_delay_s: float, pool: str, concurrency: int,
             label: str, timeout_s: float = 180.0) -> Dict[str, Any]:
    client = promptq_client(redis_server.url)
    client.redis.flushall()
    out = tempfile.mktemp(prefix="bench-sub-", suffix=".json")
    with FakeProcess(chunk_count=chunks, chunk_delay_s=chunk_delay_s, stamp=True) as fake:
        worker = promptq_worker(redis_server.url, fake.base_url, pool=pool, concurrency=concurrency,
                                name=f"stream-{pool}")
        worker.start()
        sub = subprocess.Popen(
            [sys.executable, "-m", "bench.subscriber", redis_server.host, str(redis_server.port),
             f"{client.keys.prefix}:events:*", out],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert sub.stdout.readline().strip() == b"ready"
            cpu = CPU({"worker": worker.proc.pid, "fake": fake.pid, "redis": redis_server.pid, "subscriber": sub.pid})
            tag = uuid.uuid4().hex[:6]
            ids = [client.submit(f"{PROMPT} {tag}{i}", to=[TARGET], stream=True).id for i in range(jobs)]
            wait_all_exist(client.redis, [client.keys.attempts(i) for i in ids], timeout_s, f"streaming {label}")
            cpu_used = cpu.stop()
            shares = cpu.shares()
            time.sleep(0.3)
        finally:
            sub.stdin.close()
            sub.wait(60)
            worker.stop()
    statuses: Dict[str, int] = {}
    for job_id in ids:
        record = client.status(job_id)
        statuses[record.status.value] = statuses.get(record.status.value, 0) + 1
    client.close()
    with open(out) as fh:
        events = json.load(fh)
    os.unlink(out)
    chunk_events = [e for e in events if e["type"] == "chunk"]
    total_ms, worker_ms, relay_ms, pieces = [], [], [], 0
    for e in chunk_events:
        stamps = [float(s) for s in STAMP.findall(e.get("text") or "")]
        pieces += len(stamps)
        for sent in stamps:
            total_ms.append(1000 * (e["recv"] - sent))
            worker_ms.append(1000 * (e["ts"] - sent))
        relay_ms.append(1000 * (e["recv"] - e["ts"]))
    rate = window_rate([e["recv"] for e in chunk_events])
    piece_rate = rate * (pieces / len(chunk_events)) if chunk_events else 0.0
    result = {
        "jobs": jobs, "chunks_per_job": chunks, "chunk_delay_s": chunk_delay_s, "pool": pool,
        "concurrency": concurrency, "statuses": statuses,
        "chunk_events": len(chunk_events), "pieces": pieces, "expected_pieces": jobs * chunks,
        "latency_ms": {"p50": round(percentile(total_ms, 0.5), 3), "p99": round(percentile(total_ms, 0.99), 3),
                       "max": round(max(total_ms), 3) if total_ms else None},
        "send_to_event_ms": {"p50": round(percentile(worker_ms, 0.5), 3), "p99": round(percentile(worker_ms, 0.99), 3)},
        "event_to_recv_ms": {"p50": round(percentile(relay_ms, 0.5), 3), "p99": round(percentile(relay_ms, 0.99), 3)},
        "chunks_per_s": round(piece_rate, 1),
        "events_per_s": round(rate, 1),
        "cpu_s": cpu_used, "cores": shares,
        "worker_chunks_per_cpu_s": round(pieces / cpu_used["worker"], 1) if cpu_used.get("worker") else None,
    }
    log(f"streaming {label} {pool}/{concurrency}: p50 {result['latency_ms']['p50']} ms, "
        f"p99 {result['latency_ms']['p99']} ms, {result['chunks_per_s']:.0f} chunks/s, "
        f"{len(chunk_events)} events for {pieces}/{jobs * chunks} pieces, cores {shares}")
    return result


P99_TARGET_MS = 2.0
RATE_TARGET = 20_000


def pools(ctx) -> List[tuple]:
    return [("gevent", 200)] if ctx.quick else [("gevent", 200), ("threads", 200)]


def run(ctx):
    light_jobs, moderate_jobs, sat_jobs = (2, 5, 40) if ctx.quick else (2, 20, 200)
    details: Dict[str, Any] = {}
    rows = []
    for pool, conc in pools(ctx):
        key = f"{pool}/{conc}"
        light = run_load(ctx.redis, jobs=light_jobs, chunks=100, chunk_delay_s=0.01, pool=pool,
                         concurrency=conc, label="light")
        moderate = run_load(ctx.redis, jobs=moderate_jobs, chunks=100, chunk_delay_s=0.01, pool=pool,
                            concurrency=conc, label="moderate")
        saturated = run_load(ctx.redis, jobs=sat_jobs, chunks=100, chunk_delay_s=0.0, pool=pool,
                             concurrency=conc, label="saturation")
        details[key] = {"light": light, "moderate": moderate, "saturation": saturated}
        offered = moderate_jobs * 100 / (100 * 0.01)
        for name, load in (("light", light), ("moderate", moderate), ("saturation", saturated)):
            complete = load["pieces"] == load["expected_pieces"] and load["statuses"] == {"succeeded": load["jobs"]}
            if not complete:
                load["note"] = f"incomplete: {load['pieces']}/{load['expected_pieces']} pieces, {load['statuses']}"
        rows.append(row("3 streaming", f"p50 / p99 chunk latency, light load ({light_jobs} streams, ~{light_jobs * 100:.0f} "
                        f"chunks/s), {key}", light["latency_ms"]["p99"], "ms (p99)",
                        note=f"p50 {light['latency_ms']['p50']} ms"))
        rows.append(row("3 streaming", f"p50 chunk latency, moderate load (~{offered:.0f} chunks/s offered), {key}",
                        moderate["latency_ms"]["p50"], "ms",
                        note=f"send->worker event p50 {moderate['send_to_event_ms']['p50']} ms, "
                             f"event->subscriber p50 {moderate['event_to_recv_ms']['p50']} ms"))
        rows.append(row("3 streaming", f"p99 chunk latency, moderate load, {key}", moderate["latency_ms"]["p99"], "ms",
                        target=f"<= {P99_TARGET_MS} ms", met=moderate["latency_ms"]["p99"] <= P99_TARGET_MS
                        and "note" not in moderate, note=moderate.get("note", "")))
        rows.append(row("3 streaming", f"p99 chunk latency at saturation, {key}", saturated["latency_ms"]["p99"], "ms",
                        note=f"p50 {saturated['latency_ms']['p50']} ms"))
        rows.append(row("3 streaming", f"chunks/s relayed at saturation ({sat_jobs} streams x 100), {key}",
                        saturated["chunks_per_s"], "chunks/s", target=f">= {RATE_TARGET:,}/host",
                        met=saturated["chunks_per_s"] >= RATE_TARGET and "note" not in saturated,
                        note=(saturated.get("note", "") + f" worker {saturated['cores'].get('worker')} cores, "
                              f"fake {saturated['cores'].get('fake')}, redis {saturated['cores'].get('redis')}, "
                              f"subscriber {saturated['cores'].get('subscriber')}; "
                              f"{saturated['worker_chunks_per_cpu_s']:,.0f} chunks per worker CPU-second").strip()))
    ctx.results["streaming"] = details
    return rows, details
