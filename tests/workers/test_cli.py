"""The `promptq` command line as a script would use it: real processes, stdout
for data, stderr for diagnostics, exit codes that tell outcomes apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.worker_process import ROOT

pytestmark = pytest.mark.usefixtures("worker")


def promptq(redis_server, *args, timeout=60, stdin=None):
    env = {**os.environ, "PROMPTQ_REDIS_URL": redis_server.url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "promptq.workers.cli.main", *args], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=timeout, input=stdin,
    )


def test_submit_prints_only_the_id_and_result_prints_the_text(redis_server):
    prompt = f"cli hello #{uuid.uuid4().hex[:6]}"
    out = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", "--to", "claude:claude-3-5-haiku-latest", prompt)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert len(out.stdout.splitlines()) == 1 and len(job_id) == 32
    out = promptq(redis_server, "result", job_id, "--wait", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"echo: {prompt}\n"
    out = promptq(redis_server, "result", job_id, "--json")
    record = json.loads(out.stdout)
    assert record["status"] == "succeeded" and record["provider"] == "openai"
    assert record["usage"]["total_tokens"] > 0 and len(record["attempts"]) == 1
    assert promptq(redis_server, "status", job_id).stdout.strip() == "succeeded"


def test_prompt_from_stdin_and_stream_prints_text_live(redis_server):
    prompt = f"streamed from stdin #{uuid.uuid4().hex[:6]}"
    out = promptq(redis_server, "submit", "--stream", "--to", "claude:claude-3-5-haiku-latest", "-", stdin=prompt)
    job_id = out.stdout.strip()
    out = promptq(redis_server, "stream", job_id, "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"echo: {prompt}"


def test_submit_spill_is_kept_in_the_job_record(redis_server, client):
    # `--spill` as in `batch submit --spill` and Client.submit(spill=True).
    targets = ["--to", "openai:gpt-4o-mini", "--to", "claude:claude-3-5-haiku-latest"]
    out = promptq(redis_server, "submit", "--spill", *targets, f"may spill #{uuid.uuid4().hex[:6]}")
    assert out.returncode == 0, out.stderr
    spilling = out.stdout.strip()
    assert client.store.get(spilling).spec.get("spill") is True
    out = promptq(redis_server, "submit", *targets, f"stays put #{uuid.uuid4().hex[:6]}")
    assert out.returncode == 0, out.stderr
    staying = out.stdout.strip()
    assert not client.store.get(staying).spec.get("spill")  # opt-in
    # Both run as usual (and are done before the next test scripts the fakes).
    for job_id in (spilling, staying):
        assert promptq(redis_server, "result", job_id, "--wait", "--timeout", "30").returncode == 0


def test_exit_codes_for_failure_timeout_not_found_and_refusal(redis_server, fakes):
    openai, anthropic = fakes
    openai.push("invalid")
    out = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", f"bad #{uuid.uuid4().hex[:6]}")
    failed_id = out.stdout.strip()
    out = promptq(redis_server, "result", failed_id, "--wait", "--timeout", "30")
    assert out.returncode == 1 and "failed" in out.stderr

    # Nobody consumes openrouter in this module: the wait times out.
    out = promptq(redis_server, "submit", "--to", "openrouter:x/y", "waits forever")
    waiting_id = out.stdout.strip()
    out = promptq(redis_server, "result", waiting_id, "--wait", "--timeout", "1.5")
    assert out.returncode == 3 and "after 1.5s" in out.stderr
    assert promptq(redis_server, "cancel", waiting_id).stdout.strip() == "cancelled"
    out = promptq(redis_server, "result", waiting_id)
    assert out.returncode == 5

    out = promptq(redis_server, "result", "no-such-job")
    assert out.returncode == 4 and "no job no-such-job" in out.stderr

    out = promptq(redis_server, "submit", "--to", "gpt-4o-mini", "missing provider")
    assert out.returncode == 2 and "targets[0]" in out.stderr and out.stdout == ""
    out = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", "--param", "temperature=0.2",
                  "--metadata", "{not json", "x")
    assert out.returncode == 2 and "--metadata" in out.stderr


def test_health_shows_provider_state(redis_server, fakes):
    openai, _ = fakes
    openai.push("server", times=10)
    promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", "--max-retries", "0", "x")
    out = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", "--max-retries", "0", "y")
    promptq(redis_server, "result", out.stdout.strip(), "--wait", "--timeout", "30")
    out = promptq(redis_server, "health", "--json")
    assert out.returncode == 0, out.stderr
    health = json.loads(out.stdout)
    # Health is per provider:model (issue 8), with its capacity beside it.
    assert health["openai:gpt-4o-mini"]["errors_by_category"].get("server", 0) >= 1
    assert health["openai:gpt-4o-mini"]["state"] in ("degraded", "unhealthy")
    assert health["openai:gpt-4o-mini"]["capacity"]["waiting"] == 0
    table = promptq(redis_server, "health").stdout
    assert "openai:gpt-4o-mini" in table and "server" in table and "429s" in table


def test_unreachable_redis_is_one_clear_line(tmp_path):
    env = {**os.environ, "PROMPTQ_REDIS_URL": "redis://127.0.0.1:1/0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "promptq.workers.cli.main", "status", "abc"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 6 and "cannot reach Redis" in out.stderr and "Traceback" not in out.stderr
