"""Case 6, peer: the same fake server through `litellm.Router` with fallbacks.

Optional: litellm is never installed by promptq (no extra names it); when
it cannot be imported the row says so. Both sides run in-process call loops
at the same concurrency (32 threads) in their own processes
(`bench.peer_run`): litellm's Router with a fallback deployment, and
promptq's `FallbackChain` of two OpenAI providers -- the like-for-like
in-process comparison. promptq's queued path (case 1, worker CPU per job)
is shown beside them when case 1 ran.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

from promptq.workers.local_stack import ROOT

from .harness import FakeProcess, log
from .report import row

CONCURRENCY = 32


def side(name: str, base_url: str, calls: int) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.peer_run", name, base_url, str(calls), str(CONCURRENCY)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)})
    if out.returncode != 0:
        raise RuntimeError(f"peer_run {name} failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"peer {name}: {result}")
    return result


def run(ctx) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    if importlib.util.find_spec("litellm") is None:
        rows = [row("6 peer", "litellm.Router per-call overhead", "skipped (litellm not installed)")]
        return rows, {"skipped": "litellm not installed"}
    calls = 200 if ctx.quick else 2000
    with FakeProcess(latency_s=0.0) as fake:
        lite = side("litellm", fake.base_url, calls)
        ours = side("promptq", fake.base_url, calls)
    details = {"litellm": lite, "promptq_chain": ours}
    rows = [
        row("6 peer", f"CPU per call, litellm {lite['version']} Router+fallbacks, {CONCURRENCY} threads",
            lite["cpu_us_per_call"] / 1000, "ms", baseline=ours["cpu_us_per_call"] / 1000,
            baseline_is="promptq FallbackChain in-process",
            note=f"{lite['calls_per_s']} calls/s vs {ours['calls_per_s']} calls/s; p50 {lite['latency_ms_p50']} ms vs "
                 f"{ours['latency_ms_p50']} ms; errors {lite['errors']} vs {ours['errors']}"),
    ]
    queued = ctx.results.get("overhead", {}).get("threads/32")
    if queued:
        rows.append(row("6 peer", "worker CPU per job, promptq queued path (case 1, threads/32)",
                        queued["promptq_worker_cpu_us_per_job"] / 1000, "ms",
                        baseline=lite["cpu_us_per_call"] / 1000, baseline_is="litellm Router per call"))
        details["promptq_queued_cpu_us_per_job"] = queued["promptq_worker_cpu_us_per_job"]
    ctx.results["peer"] = details
    return rows, details
