"""The benchmark command runs end to end (`python -m bench --quick --only
overhead`, tiny counts) and writes the JSON the README describes. Only the
shape and that the figures are positive are checked: timings are the
report's business, never a test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("psutil")


def test_bench_overhead_quick_writes_positive_figures(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "overhead", "--jobs", "30", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 overhead" in proc.stdout  # the table was printed

    doc = json.loads(out.read_text())
    assert {"generated_at", "command", "quick", "cases_run", "environment", "rows", "cases"} <= set(doc)
    assert doc["cases_run"] == ["overhead"]
    (row,) = doc["rows"]
    assert {"case", "measure", "value", "unit", "baseline", "baseline_is", "ratio", "target", "met", "note"} <= set(row)
    assert row["case"] == "1 overhead" and row["unit"] == "jobs/s"
    assert row["value"] > 0 and row["baseline"] > 0 and row["ratio"] > 0
    assert isinstance(row["met"], bool)

    case = doc["cases"]["overhead"]["threads/32"]
    assert case["all_succeeded"] is True
    for key in ("promptq_jobs_per_s", "bare_jobs_per_s", "ratio", "promptq_worker_cpu_us_per_job",
                "bare_worker_cpu_us_per_job"):
        assert case[key] > 0, key


def test_bench_ratelimit_quick_reports_each_run(tmp_path):
    """Case 9 against the rate-limited fake, tiny: the rows and the per-run figures are there."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "ratelimit", "--jobs", "12", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["cases_run"] == ["ratelimit"]
    measures = [r["measure"].split(",")[0] for r in doc["rows"]]
    assert measures == ["goodput", "failed jobs", "429s"] * 2
    assert all(r["case"] == "9 ratelimit" and isinstance(r["met"], bool) for r in doc["rows"])
    runs = {k: v for k, v in doc["cases"]["ratelimit"].items() if "/" in k}
    assert set(runs) == {"second/threads-200", "minute/threads-32"}
    for figures in runs.values():
        assert figures["jobs"] == 12 and figures["succeeded"] + figures["failed"] == 12
        assert figures["requests"] >= figures["succeeded"] and figures["wall_s"] > 0
        assert figures["goodput"] >= 0 and 0 <= figures["share_429"] <= 1


@pytest.mark.parametrize("merge", [False, True])
def test_the_minimal_relay_relays_every_piece_as_promptq_events(redis_server, redis_client, merge):
    """bench.relay, the streaming case's yardstick, really does the work it is
    compared with: every piece of every stream, numbered and kept by the same
    script, in events shaped like promptq's."""
    from bench.harness import FakeProcess
    from promptq.tasks.events import decode_event

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with FakeProcess(chunk_count=20, stamp=True) as fake:
        relay = subprocess.Popen(
            [sys.executable, "-m", "bench.relay", redis_server.host, str(redis_server.port), fake.base_url,
             "promptq", "3", "stream " + " ".join(f"w{i:02d}" for i in range(30))] + (["--merge"] if merge else []),
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        try:
            assert relay.stdout.readline().strip() == b"ready"
            relay.stdin.write(b"go\n")
            relay.stdin.flush()
            summary = json.loads(relay.stdout.readline())
        finally:
            relay.stdin.close()
            relay.wait(30)
    assert summary["pieces"] == 60
    assert summary["events"] == 60 if not merge else 3 <= summary["events"] <= 60
    texts = []
    for i in range(3):
        events = [decode_event(f[b"e"]) for _, f in redis_client.xrange(f"promptq:replay:relay-{i}", "-", "+")]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert {e["type"] for e in events} == {"chunk"} and events[0]["job_id"] == f"relay-{i}"
        texts.append("".join(e["text"] for e in events))
    assert all(t.count("[") == 20 for t in texts)  # 20 stamped pieces per stream
