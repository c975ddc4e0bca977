"""Case 14, gateway: what `promptq serve` adds over the queue path itself.

One `promptq worker --providers mock` (threads/32) and one `promptq serve`
process (no keys, loopback), on the bench's private Redis. Figures:

- non-streamed latency, one request at a time: `POST /v1/chat/completions`
  through the front (httpx, keep-alive) vs `Client.submit` + `Client.result`
  on the same worker (the queue path itself), interleaved request by request
  so load drift hits both; added p50 and p99 in ms.
- time to first token, streamed: the front's first content chunk vs the
  mock provider's own first chunk (called in this process) and vs the queue
  path's (`Client.stream`).
- requests/s one serve process sustains, CONC clients at once, vs the queue
  path driven by `AsyncClient` at the same concurrency.
LiteLLM's proxy is compared when `litellm` is importable (never a dependency).
"""

from __future__ import annotations

import asyncio
import importlib.util
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

from promptq.workers.local_stack import WorkerProcess
from promptq.workers.serve_process import ServeProcess

from .harness import log, percentile
from .report import row

ADDED_P50_TARGET_MS = 5.0
TTFT_TARGET_MS = 10.0
CONC = 32


def _serve(redis_url: str) -> ServeProcess:
    """The front with no client keys (loopback only), files in a temporary directory."""
    return ServeProcess(redis_url, Path(tempfile.mkdtemp(prefix="promptq-bench-files-")),
                        env={"PROMPTQ_API_KEYS": None})


def _cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _body(text: str, stream: bool = False) -> Dict[str, Any]:
    body: Dict[str, Any] = {"model": "mock:bench", "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return body


def _latency(serve: Serve, client: Any, n: int) -> Tuple[List[float], List[float]]:
    import httpx

    front, queue = [], []
    with httpx.Client(base_url=serve.base, timeout=30) as http:
        for i in range(n + 5):
            t0 = time.perf_counter()
            response = http.post("/v1/chat/completions", json=_body(f"lat {i} {uuid.uuid4().hex[:6]}"))
            t1 = time.perf_counter()
            assert response.status_code == 200, response.text
            handle = client.submit(f"lat {i} {uuid.uuid4().hex[:6]}", to=["mock:bench"])
            client.result(handle.id, timeout=30)
            t2 = time.perf_counter()
            if i >= 5:  # warm-up: connections, script loads, queue declarations
                front.append((t1 - t0) * 1000)
                queue.append((t2 - t1) * 1000)
    return front, queue


def _ttft(serve: Serve, client: Any, n: int) -> Tuple[List[float], List[float], List[float]]:
    import httpx

    from promptq.providers import create_provider

    provider = create_provider("mock", {})
    front, queue, direct = [], [], []
    with httpx.Client(base_url=serve.base, timeout=30) as http:
        for i in range(n + 3):
            text = f"one two three four {i} {uuid.uuid4().hex[:6]}"
            t0 = time.perf_counter()
            with http.stream("POST", "/v1/chat/completions", json=_body(text, stream=True)) as response:
                for line in response.iter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        break
            t1 = time.perf_counter()
            handle = client.submit(text + " q", to=["mock:bench"], stream=True)
            for piece in client.stream(handle.id, timeout=30):
                if isinstance(piece, str) and piece:
                    break
            t2 = time.perf_counter()
            stream = provider.stream(model="bench", prompt=text)
            next(iter(stream))
            t3 = time.perf_counter()
            stream.close()
            if i >= 3:
                front.append((t1 - t0) * 1000)
                queue.append((t2 - t1) * 1000)
                direct.append((t3 - t2) * 1000)
    return front, queue, direct


async def _throughput(serve: Serve, redis_url: str, n: int) -> Tuple[float, float]:
    import httpx

    from promptq.tasks.async_client import AsyncClient
    from promptq.tasks.settings import Settings

    async def front_one(http: Any, i: int) -> None:
        response = await http.post("/v1/chat/completions", json=_body(f"rps {i} {uuid.uuid4().hex[:6]}"))
        assert response.status_code == 200, response.text

    async def queue_one(client: Any, i: int) -> None:
        handle = await client.submit(f"rps {i} {uuid.uuid4().hex[:6]}", to=["mock:bench"])
        await client.result(handle.id, timeout=60)

    async def drive(one: Any, target: Any) -> float:
        todo = iter(range(n))

        async def lane() -> None:
            for i in todo:
                await one(target, i)

        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(CONC)))
        return n / (time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=CONC, max_keepalive_connections=CONC)
    async with httpx.AsyncClient(base_url=serve.base, timeout=60, limits=limits) as http:
        await drive(front_one, http)  # warm-up
        front_rate = await drive(front_one, http)
    async with AsyncClient(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_url})) as client:
        queue_rate = await drive(queue_one, client)
    return front_rate, queue_rate


def run(ctx) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    from .harness import promptq_client

    n = 40 if ctx.quick else 200
    n_rps = 200 if ctx.quick else 1000
    with WorkerProcess(ctx.redis.url, ["mock"], pool="threads", concurrency=CONC, name="bench-gateway") as worker, \
            _serve(ctx.redis.url) as serve:
        client = promptq_client(ctx.redis.url)
        try:
            log(f"gateway: latency, {n} requests each way")
            front, queue = _latency(serve, client, n)
            log(f"gateway: time to first token, {n} streams each way")
            t_front, t_queue, t_direct = _ttft(serve, client, n)
        finally:
            client.close()
        log(f"gateway: requests/s, {n_rps} requests, {CONC} at once")
        cpu_before = _cpu_s(serve.proc.pid)
        front_rps, queue_rps = asyncio.run(_throughput(serve, ctx.redis.url, n_rps))
        # Two front runs (warm-up and measured) of n_rps requests each.
        serve_cpu_ms = (_cpu_s(serve.proc.pid) - cpu_before) * 1000 / (2 * n_rps)
        del worker
    p = {name: {"p50": percentile(v, 0.5), "p99": percentile(v, 0.99)}
         for name, v in (("front", front), ("queue", queue), ("ttft_front", t_front), ("ttft_queue", t_queue),
                         ("ttft_provider", t_direct))}
    added_p50 = p["front"]["p50"] - p["queue"]["p50"]
    added_p99 = p["front"]["p99"] - p["queue"]["p99"]
    ttft_over_provider = p["ttft_front"]["p50"] - p["ttft_provider"]["p50"]
    ttft_over_queue = p["ttft_front"]["p50"] - p["ttft_queue"]["p50"]
    details = {"requests": n, "rps_requests": n_rps, "concurrency": CONC, "percentiles_ms": p,
               "added_p50_ms": added_p50, "added_p99_ms": added_p99, "ttft_over_provider_ms": ttft_over_provider,
               "ttft_over_queue_ms": ttft_over_queue, "front_rps": front_rps, "queue_rps": queue_rps,
               "serve_cpu_ms_per_request": serve_cpu_ms,
               "litellm": "installed but not compared (no proxy config here)" if importlib.util.find_spec("litellm")
               else "not installed: not compared"}
    rows = [
        row("15 gateway", "non-streamed p50 latency via serve", p["front"]["p50"], "ms", baseline=p["queue"]["p50"],
            baseline_is="Client.submit+result, same worker", target=f"added <= {ADDED_P50_TARGET_MS:g} ms",
            met=added_p50 <= ADDED_P50_TARGET_MS, note=f"added {added_p50:.2f} ms; {n} sequential requests"),
        row("15 gateway", "non-streamed p99 latency via serve", p["front"]["p99"], "ms", baseline=p["queue"]["p99"],
            baseline_is="Client.submit+result, same worker", note=f"added {added_p99:.2f} ms"),
        row("15 gateway", "time to first token via serve (p50)", p["ttft_front"]["p50"], "ms",
            baseline=p["ttft_provider"]["p50"], baseline_is="mock provider's own first chunk",
            target=f"<= {TTFT_TARGET_MS:g} ms over the provider's", met=ttft_over_provider <= TTFT_TARGET_MS,
            note=f"{ttft_over_provider:.2f} ms over the provider; {ttft_over_queue:.2f} ms over Client.stream "
                 f"({p['ttft_queue']['p50']:.2f} ms)"),
        row("15 gateway", f"requests/s, one serve process, {CONC} at once", front_rps, "req/s", baseline=queue_rps,
            baseline_is=f"AsyncClient submit+result, {CONC} at once",
            note=f"{n_rps} requests; mock provider; serve CPU {serve_cpu_ms:.2f} ms per request; the driver's "
                 f"HTTP client shares the machine's cores"),
    ]
    ctx.results["gateway"] = details
    return rows, details
