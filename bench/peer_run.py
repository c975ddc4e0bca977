"""One side of the peer comparison, in its own process so imports and CPU are its own.

    python -m bench.peer_run litellm|promptq BASE_URL CALLS CONCURRENCY

Runs CALLS chat completions from CONCURRENCY threads against the fake
server, through either `litellm.Router` (two deployments of the same model,
`fallbacks` from the first to the second) or promptq's in-process
equivalent, `providers.FallbackChain` over two `OpenAIProvider`s. Prints
one JSON line: calls/s, this process's CPU per call, latency percentiles.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

KEY = "sk-bench-0123456789abcdef"


def make_litellm(base_url: str):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    params = {"model": "openai/gpt-4o-mini", "api_base": base_url, "api_key": KEY}
    router = litellm.Router(
        model_list=[{"model_name": "primary", "litellm_params": dict(params)},
                    {"model_name": "backup", "litellm_params": dict(params)}],
        fallbacks=[{"primary": ["backup"]}], num_retries=0,
    )

    def call(prompt: str) -> str:
        response = router.completion(model="primary", messages=[{"role": "user", "content": prompt}])
        return response.choices[0].message.content

    return call, getattr(litellm, "__version__", None) or _version("litellm")


def make_promptq(base_url: str, concurrency: int):
    from promptq.providers import create_provider
    from promptq.providers.fallback_manager import FallbackChain

    config = {"api_key": KEY, "base_url": base_url, "pool_size": concurrency}
    chain = FallbackChain([("openai", create_provider("openai", dict(config)), "gpt-4o-mini"),
                           ("openai-backup", create_provider("openai", dict(config)), "gpt-4o-mini")])

    def call(prompt: str) -> str:
        return chain.complete(None, prompt).text

    return call, None


def _version(name: str):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None) -> int:
    side, base_url, calls, concurrency = (argv or sys.argv[1:])[:4]
    calls, concurrency = int(calls), int(concurrency)
    call, version = make_litellm(base_url) if side == "litellm" else make_promptq(base_url, concurrency)
    for i in range(min(20, calls)):  # warm up: connections, lazy imports
        call(f"warm {i}")
    latencies, errors = [], []
    counter = iter(range(calls))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                text = call(f"peer {i}")
                assert text.startswith("echo: peer"), text
            except Exception as exc:  # counted, reported
                errors.append(repr(exc)[:200])
            latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    latencies.sort()
    print(json.dumps({
        "side": side, "version": version, "calls": calls, "concurrency": concurrency, "errors": len(errors),
        "first_errors": errors[:3], "calls_per_s": round(calls / wall, 1), "cpu_us_per_call": round(1e6 * cpu / calls, 1),
        "latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 2),
        "latency_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
