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
