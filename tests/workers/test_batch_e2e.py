"""Batches end to end through the real CLI: a JSONL file in, a worker process
consuming the hand-built messages, fake OpenAI and Anthropic servers over
HTTP plus the mock provider, and a results file out. Covers a failover and
a retry inside a batch, resumed submissions that never call a provider
twice, status counters that add up, and cancelling a batch nobody runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from openai.types.chat import ChatCompletion

from promptq.tasks.pricing import NANO, Pricing
from tests.worker_process import ROOT, WorkerProcess, wait_for

from .conftest import provider_env

OPENAI = "openai:gpt-4o-mini"
CLAUDE = "claude:claude-3-5-haiku-latest"
STATES = ("queued", "running", "waiting", "succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def worker(redis_server, fakes):
    """One worker for the module, on the fakes' queues and the mock's."""
    openai, anthropic = fakes
    with WorkerProcess(redis_server.url, ["openai", "claude", "mock"], env=provider_env(openai, anthropic),
                       name="batch") as proc:
        yield proc


pytestmark = pytest.mark.usefixtures("worker")


def promptq(redis_server, *args, timeout=120):
    env = {**os.environ, "PROMPTQ_REDIS_URL": redis_server.url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "promptq.workers.cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def write_jsonl(path, objects):
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return str(path)


def openai_line(custom_id, text):
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "temperature": 0}}


def read_results(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def status_json(redis_server, batch_id):
    out = promptq(redis_server, "batch", "status", batch_id, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def calls_with(fake, text):
    """Requests a fake server got whose last message is exactly `text`."""
    return [r for r in fake.requests if r.body and (r.body.get("messages") or [{}])[-1].get("content") == text]


def submit(redis_server, path, *args):
    out = promptq(redis_server, "batch", "submit", path, *args)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1, out.stdout  # the batch id alone
    return out.stdout.strip(), out.stderr


def test_a_batch_with_failover_retry_and_a_failure_end_to_end(redis_server, fakes, tmp_path):
    openai, anthropic = fakes
    tag = uuid.uuid4().hex[:8]
    plain = [{"custom_id": f"plain-{i}", "prompt": f"plain question {i} #{tag}"} for i in range(4)]
    chat = [openai_line(f"chat-{i}", f"chat question {i} #{tag}") for i in range(4)]
    # The mock fails these on its "flaky" model only: auth is not retryable, so they fail over.
    failover = [{"custom_id": f"failover-{i}", "prompt": f"fail over {i} #{tag} [[fault@flaky:auth]]",
                 "targets": ["mock:flaky", "mock:good"]} for i in range(2)]
    retry = {"custom_id": "retry", "prompt": f"retry me #{tag} [[fail_times:1]]", "targets": ["mock:good"]}
    doomed = {"custom_id": "doomed", "prompt": f"refused everywhere #{tag} [[fault:invalid]]", "targets": [CLAUDE]}
    lines = [plain[0], chat[0], failover[0], plain[1], retry, chat[1], doomed, plain[2], chat[2], failover[1],
             plain[3], chat[3]]
    path = write_jsonl(tmp_path / "in.jsonl", lines)

    batch_id, err = submit(redis_server, path, "--to", OPENAI, "--to", CLAUDE)
    assert f"--batch-id {batch_id}" in err  # the resume hint
    out = promptq(redis_server, "batch", "wait", batch_id, "--timeout", "90")
    assert out.returncode == 0, out.stderr  # finished, though one line failed
    assert "11 succeeded, 1 failed" in out.stderr

    out = promptq(redis_server, "batch", "results", batch_id, "-o", str(tmp_path / "out.jsonl"))
    assert out.returncode == 0, out.stderr
    results = read_results(tmp_path / "out.jsonl")
    # Every input line answered exactly once, in input order.
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    by_id = {r["custom_id"]: r for r in results}

    costs = []
    for line in plain + chat:
        text = line.get("prompt") or line["body"]["messages"][-1]["content"]
        result = by_id[line["custom_id"]]
        body = result["response"]["body"]
        assert result["error"] is None and result["response"]["status_code"] == 200
        assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {
            "role": "assistant", "content": f"echo: {text}", "refusal": None}
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0
        cost = Pricing().cost_nano("openai", OPENAI.partition(":")[2], {
            "input_tokens": body["usage"]["prompt_tokens"], "output_tokens": body["usage"]["completion_tokens"]})
        assert cost > 0
        assert result["promptq"] == {"provider": "openai", "model": body["model"], "attempts": 1, "status": "succeeded",
                                     "finish_reason": "stop", "cost_usd": cost / NANO}
        costs.append(cost)
        assert len(calls_with(openai, text)) == 1 and not calls_with(anthropic, text)

    for line in failover:
        result = by_id[line["custom_id"]]
        assert result["promptq"] == {"provider": "mock", "model": "good", "attempts": 2, "status": "succeeded",
                                     "finish_reason": "stop", "cost_usd": 0}
        assert result["response"]["body"]["choices"][0]["message"]["content"] == (
            "mock reply to: " + line["prompt"].replace(" [[fault@flaky:auth]]", ""))
    assert by_id["retry"]["promptq"]["attempts"] == 2 and by_id["retry"]["response"]["status_code"] == 200

    failed = by_id["doomed"]
    assert failed["response"] is None and failed["error"]["code"] == "invalid"
    assert "all 1 target(s) failed" in failed["error"]["message"]
    assert failed["promptq"]["provider"] == "claude" and failed["promptq"]["status"] == "failed"

    status = status_json(redis_server, batch_id)
    assert sum(status[s] for s in STATES) == status["total"] == len(lines)
    assert (status["succeeded"], status["failed"], status["failed_over"], status["retried"]) == (11, 1, 2, 1)
    assert status["finished"] and status["input_tokens"] > 0 and status["output_tokens"] > 0
    assert status["input"] == path and status["targets"] == [OPENAI, CLAUDE]
    assert status["cost_usd"] == sum(costs) / NANO  # the mock's answers cost nothing


def test_every_output_line_is_a_chat_completion_the_openai_sdk_accepts(redis_server, fakes, tmp_path):
    """Claude answers in its own words (end_turn, refusal); the output speaks OpenAI's."""
    tag = uuid.uuid4().hex[:8]
    lines = [
        {"custom_id": "claude", "prompt": f"from claude #{tag}", "targets": [CLAUDE]},
        {"custom_id": "claude-refuses", "prompt": f"no #{tag} [[fault:refusal]]", "targets": [CLAUDE]},
        {"custom_id": "openai-refuses", "prompt": f"no #{tag} [[fault:refusal]]", "targets": [OPENAI, CLAUDE]},
        {"custom_id": "openai", "prompt": f"from openai #{tag}", "targets": [OPENAI]},
    ]
    batch_id, _ = submit(redis_server, write_jsonl(tmp_path / "in.jsonl", lines))
    assert promptq(redis_server, "batch", "wait", batch_id, "--timeout", "60").returncode == 0
    out = promptq(redis_server, "batch", "results", batch_id, "-o", str(tmp_path / "out.jsonl"))
    assert out.returncode == 0, out.stderr
    by_id = {r["custom_id"]: r for r in read_results(tmp_path / "out.jsonl")}
    choices = {}
    for custom_id, line in by_id.items():
        assert line["error"] is None, line
        choices[custom_id] = ChatCompletion.model_validate(line["response"]["body"]).choices[0]
    assert (choices["claude"].finish_reason, by_id["claude"]["promptq"]["finish_reason"]) == ("stop", "end_turn")
    assert choices["claude"].message.content == f"echo: from claude #{tag}"
    # A refusal is an answer: kept, not failed over (the chain's Claude is never asked).
    refused = choices["openai-refuses"]
    assert refused.finish_reason == "content_filter" and refused.message.refusal and refused.message.content is None
    assert by_id["openai-refuses"]["promptq"]["provider"] == "openai"
    assert by_id["openai-refuses"]["promptq"]["attempts"] == 1
    assert choices["claude-refuses"].finish_reason == "content_filter"
    assert by_id["claude-refuses"]["promptq"]["finish_reason"] == "refusal"
    assert choices["openai"].finish_reason == "stop" and choices["openai"].message.refusal is None


def test_resubmitting_sends_only_missing_lines_and_calls_each_once(redis_server, fakes, tmp_path):
    openai, _ = fakes
    tag = uuid.uuid4().hex[:8]
    lines = [{"custom_id": f"r{i}", "prompt": f"resume line {i} #{tag}"} for i in range(8)]
    batch_id = f"resume-{tag}"
    # The first run "dies" after five lines; the same id then resumes the whole file.
    first = write_jsonl(tmp_path / "first.jsonl", lines[:5])
    full = write_jsonl(tmp_path / "full.jsonl", lines)
    _, err = submit(redis_server, first, "--to", OPENAI, "--batch-id", batch_id)
    assert "5 job(s) sent, 0 already queued" in err
    _, err = submit(redis_server, full, "--to", OPENAI, "--batch-id", batch_id)
    assert "3 job(s) sent, 5 already queued" in err
    out = promptq(redis_server, "batch", "wait", batch_id, "--timeout", "60")
    assert out.returncode == 0, out.stderr
    _, err = submit(redis_server, full, "--to", OPENAI, "--batch-id", batch_id)
    assert "0 job(s) sent, 8 already queued" in err

    out = promptq(redis_server, "batch", "results", batch_id, "-o", str(tmp_path / "out.jsonl"))
    assert out.returncode == 0, out.stderr
    results = read_results(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in results] == [line["custom_id"] for line in lines]
    assert all(r["response"]["status_code"] == 200 for r in results)
    for line in lines:
        assert len(calls_with(openai, line["prompt"])) == 1, line
    status = status_json(redis_server, batch_id)
    assert (status["total"], status["succeeded"]) == (8, 8)


def test_cancel_a_batch_nobody_consumes(redis_server, tmp_path):
    tag = uuid.uuid4().hex[:8]
    lines = [openai_line(f"c{i}", f"never runs {i} #{tag}") for i in range(6)]
    path = write_jsonl(tmp_path / "in.jsonl", lines)
    # No worker in this module consumes ollama: the jobs wait in its queue.
    batch_id, _ = submit(redis_server, path, "--to", "ollama:llama3.2")
    try:
        out = promptq(redis_server, "batch", "wait", batch_id, "--timeout", "0.5", "-q")
        assert out.returncode == 3 and "6 of 6 job(s) not finished" in out.stderr
        out = promptq(redis_server, "batch", "results", batch_id)
        assert out.returncode == 3 and "--partial" in out.stderr and out.stdout == ""
        out = promptq(redis_server, "batch", "results", batch_id, "--partial")
        assert out.returncode == 0, out.stderr
        assert [json.loads(l)["error"]["code"] for l in out.stdout.splitlines()] == ["not_finished"] * 6

        out = promptq(redis_server, "batch", "cancel", batch_id, "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"cancelled": 6}
        status = status_json(redis_server, batch_id)
        assert (status["cancelled"], status["queued"], status["total"]) == (6, 0, 6)
        assert sum(status[s] for s in STATES) == 6 and status["finished"]
        assert promptq(redis_server, "batch", "wait", batch_id, "-q").returncode == 0
        out = promptq(redis_server, "batch", "results", batch_id)
        assert [json.loads(l)["error"]["code"] for l in out.stdout.splitlines()] == ["cancelled"] * 6
        out = promptq(redis_server, "batch", "cancel", batch_id, "--json")
        assert json.loads(out.stdout) == {"cancelled": 6}  # idempotent: reports the final state
    finally:
        redis_server.client().delete("promptq.ollama")


def test_unknown_batch_is_exit_4(redis_server):
    for command in ("status", "wait", "results", "cancel"):
        out = promptq(redis_server, "batch", command, "no-such-batch")
        assert out.returncode == 4 and "no batch no-such-batch" in out.stderr, (command, out.stderr)


def test_skip_invalid_results_answer_every_input_line(redis_server, tmp_path):
    tag = uuid.uuid4().hex[:6]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([
        json.dumps({"custom_id": "bad-first", "prompt": "x", "parameters": {"temperature": "hot"}}),
        json.dumps({"custom_id": "ok-1", "prompt": f"first {tag}"}),
        "{not json",
        json.dumps({"custom_id": "ok-2", "prompt": f"second {tag}"}),
        json.dumps({"custom_id": "bad-last", "prompt": ""}),
    ]) + "\n")
    out = promptq(redis_server, "batch", "submit", str(path), "--to", OPENAI, "--skip-invalid", "-q")
    assert out.returncode == 0, out.stderr
    batch_id = out.stdout.strip()
    assert promptq(redis_server, "batch", "wait", batch_id, "--timeout", "60", "-q").returncode == 0
    results = tmp_path / "out.jsonl"
    assert promptq(redis_server, "batch", "results", batch_id, "-o", str(results)).returncode == 0
    lines = read_results(results)
    assert [l["custom_id"] for l in lines] == ["bad-first", "ok-1", None, "ok-2", "bad-last"]
    refused = [lines[0], lines[2], lines[4]]
    assert all(l["error"]["code"] == "invalid_request" and l["response"] is None and l["id"] is None for l in refused)
    assert "invalid parameter 'temperature'" in lines[0]["error"]["message"]
    assert "invalid JSON" in lines[2]["error"]["message"]
    assert "prompt" in lines[4]["error"]["message"]
    assert [l["promptq"]["input_line"] for l in refused] == [1, 3, 5]
    assert lines[1]["response"]["status_code"] == 200 and lines[3]["response"]["status_code"] == 200


def test_batch_cancel_stops_running_jobs_too(redis_server, tmp_path):
    tag = uuid.uuid4().hex[:6]
    path = write_jsonl(tmp_path / "slow.jsonl", [{"custom_id": f"s{i}", "prompt": f"slow {i} {tag} [[fault:slow:30]]"}
                                                 for i in range(2)])
    batch_id = promptq(redis_server, "batch", "submit", path, "--to", OPENAI, "-q").stdout.strip()
    wait_for(lambda: status_json(redis_server, batch_id)["running"] == 2, 30, 0.1, "both jobs running")
    out = promptq(redis_server, "batch", "cancel", batch_id, "--json")
    assert json.loads(out.stdout) == {"running": 2}
    # Abandoned, not waited out: 30 s if the calls ran to the end.
    wait_for(lambda: status_json(redis_server, batch_id)["cancelled"] == 2, 5, 0.1, "both jobs cancelled")
