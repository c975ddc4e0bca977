"""Case 5, memory: worker RSS with 500 jobs in flight.

A gevent worker of concurrency 500 (and, for comparison, a threads worker
of 500) against a fake server slow enough (8 s) that every job is still
waiting on its HTTP call when the last one starts. "In flight" is read from
Redis: the `inflight` set holds exactly the jobs a worker has started and
not finished. RSS is psutil's, summed over the worker process and its
children, sampled every 100 ms; the figure is the peak.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Dict, List, Tuple

import psutil

from .harness import TARGET, FakeProcess, log, promptq_client, promptq_worker, wait_all_exist, wait_for
from .report import row

TARGET_MB = 300


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def measure(ctx, pool: str, conc: int, jobs: int, latency_s: float) -> Dict[str, Any]:
    client = promptq_client(ctx.redis.url)
    client.redis.flushall()
    with FakeProcess(latency_s=latency_s) as fake:
        worker = promptq_worker(ctx.redis.url, fake.base_url, pool=pool, concurrency=conc, name=f"mem-{pool}")
        worker.start()
        pid = worker.proc.pid
        try:
            time.sleep(0.5)
            idle = rss_mb(pid)
            peak = [idle]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    try:
                        peak.append(rss_mb(pid))
                    except psutil.Error:
                        return
                    stop.wait(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            tag = uuid.uuid4().hex[:6]
            ids = [client.submit(f"memory {tag} {i}", to=[TARGET]).id for i in range(jobs)]
            inflight_peak = 0
            deadline = time.monotonic() + latency_s + 30
            at_full = None
            while time.monotonic() < deadline:
                count = client.redis.zcard(client.keys.inflight)
                inflight_peak = max(inflight_peak, count)
                if count >= jobs and at_full is None:
                    at_full = rss_mb(pid)
                    break
                time.sleep(0.05)
            time.sleep(0.5)
            at_full_later = rss_mb(pid)
            wait_all_exist(client.redis, [client.keys.attempts(i) for i in ids], latency_s + 120, "memory jobs")
            stop.set()
            sampler.join()
        finally:
            worker.kill()
            worker._close_log()
    statuses: Dict[str, int] = {}
    for job_id in ids:
        s = client.status(job_id).status.value
        statuses[s] = statuses.get(s, 0) + 1
    client.close()
    result = {"pool": pool, "concurrency": conc, "jobs": jobs, "latency_s": latency_s, "idle_rss_mb": round(idle, 1),
              "rss_mb_all_in_flight": round(max(at_full or 0, at_full_later), 1), "peak_rss_mb": round(max(peak), 1),
              "peak_in_flight": inflight_peak, "statuses": statuses,
              "kb_per_job_in_flight": round(1024 * (max(peak) - idle) / jobs, 1)}
    log(f"memory {pool}/{conc}: idle {idle:.0f} MB, peak {max(peak):.0f} MB with {inflight_peak} in flight, {statuses}")
    return result


def run(ctx) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    jobs, latency = (100, 3.0) if ctx.quick else (500, 8.0)
    plans = [("gevent", jobs)] if ctx.quick else [("gevent", jobs), ("threads", jobs)]
    details, rows = {}, []
    for pool, conc in plans:
        d = measure(ctx, pool, conc, jobs, latency)
        details[f"{pool}/{conc}"] = d
        full = d["peak_in_flight"] >= jobs
        is_target = pool == "gevent"
        rows.append(row("5 memory", f"worker peak RSS, {d['peak_in_flight']} jobs in flight, {pool}/{conc}",
                        d["peak_rss_mb"], "MB", baseline=d["idle_rss_mb"], baseline_is="idle worker",
                        target=f"<= {TARGET_MB} MB" if is_target else "(compared)",
                        met=(d["peak_rss_mb"] <= TARGET_MB and full) if is_target else None,
                        note=f"{d['kb_per_job_in_flight']} kB per job in flight"
                             + ("" if full else f"; only {d['peak_in_flight']} of {jobs} were in flight at once")))
    ctx.results["memory"] = details
    return rows, details
