"""The examples in examples/ run as documented, against the mock provider,
with no Redis configured (each starts a private one when it needs it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.worker_process import ROOT


def run_example(name: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTQ_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, str(ROOT / "examples" / name)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


def test_fallback_chain_example():
    out = run_example("fallback_chain.py")
    assert out.returncode == 0, out.stderr
    assert "backup (small-model) says: What is a circuit breaker?" in out.stdout
    assert "primary: degraded" in out.stdout
    assert "all failed: primary: overloaded; broken: server" in out.stdout


def test_streamed_job_example_shows_reset_and_unspliced_answer():
    out = run_example("streamed_job.py")
    assert out.returncode == 0, out.stderr
    assert "discarding its text" in out.stdout
    assert "answered by mock:steady, 2 attempts" in out.stdout


@pytest.mark.parametrize("name", ["batch.py"])
def test_batch_example_answers_every_line(name):
    out = run_example(name)
    assert out.returncode == 0, out.stderr
    sample = (ROOT / "examples" / "sample_batch.jsonl").read_text().splitlines()
    answered = [line for line in out.stdout.splitlines() if ": mock reply to: " in line]
    assert len(answered) == len(sample)
    assert f"{len(sample)} succeeded, 0 failed" in out.stdout and "$0.0000 of a $5.00 limit" in out.stdout


def test_openai_sdk_example():
    out = run_example("openai_sdk.py")
    assert out.returncode == 0, out.stderr
    assert "mock reply to: What does a durable queue buy me?" in out.stdout
    assert "mock reply to: Stream this answer please" in out.stdout and "tokens" in out.stdout
