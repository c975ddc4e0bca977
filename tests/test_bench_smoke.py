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
    """Case 8 against the rate-limited fake, tiny: the rows and the per-run figures are there."""
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
    assert all(r["case"] == "8 ratelimit" and isinstance(r["met"], bool) for r in doc["rows"])
    runs = {k: v for k, v in doc["cases"]["ratelimit"].items() if "/" in k}
    assert set(runs) == {"second/threads-200", "minute/threads-32"}
    for figures in runs.values():
        assert figures["jobs"] == 12 and figures["succeeded"] + figures["failed"] == 12
        assert figures["requests"] >= figures["succeeded"] and figures["wall_s"] > 0
        assert figures["goodput"] >= 0 and 0 <= figures["share_429"] <= 1
