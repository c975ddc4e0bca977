"""The README's first command: `promptq demo` on a machine with no Redis
configured runs the whole job and stops everything it started."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import redis

from tests.worker_process import ROOT


def test_demo_runs_batch_and_stream_then_cleans_up(tmp_path):
    out = tmp_path / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTQ_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "promptq.workers.cli.main", "demo", "--out", str(out)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stderr
    assert "Started a private Redis" in log
    assert "succeeded 24/24, rate-limited 3 (waited, not retried), retried 0, failed over 3" in log
    # The streamed job: the first attempt's text was marked discarded, then the full answer.
    assert "text above discarded" in log
    assert "answered by promptq's mock provider." in proc.stdout

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    sample = [json.loads(line) for line in (ROOT / "workers" / "cli" / "demo_batch.jsonl").read_text().splitlines()]
    assert sorted(l["custom_id"] for l in lines) == sorted(s["custom_id"] for s in sample)
    assert all(l["response"]["status_code"] == 200 for l in lines)

    # The private Redis is gone.
    url = re.search(r"private Redis at (redis://\S+)", log).group(1)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        alive = True
    except redis.ConnectionError:
        alive = False
    assert not alive, "the demo left its Redis running"
