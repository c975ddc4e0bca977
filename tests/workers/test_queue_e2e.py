"""The queue end to end: a real worker process, real Redis, real HTTP to fake
OpenAI and Anthropic servers. Each test drives one scenario of the design:
success, retry after Retry-After, failover, dead letter, streaming resets,
late subscribers, duplicate deliveries, open circuits, refusals."""

from __future__ import annotations

import email.utils
import time
import uuid

import pytest

from promptq.providers.health_redis import RedisHealthStore
from promptq.providers.error_handling import ProviderError, ErrorCategory
from promptq.tasks.client import Reset
from promptq.tasks.job import JobValidationError
from tests.worker_process import wait_for

from .conftest import ANTHROPIC_KEY, OPENAI_KEY

pytestmark = pytest.mark.usefixtures("worker")


def unique(text: str) -> str:
    return f"{text} #{uuid.uuid4().hex[:8]}"


def attempt_start(attempt: dict) -> float:
    return attempt["finished_at"] - attempt["elapsed_s"]


def test_success_records_provider_model_and_usage(client, fakes):
    openai, _ = fakes
    prompt = unique("say hello")
    handle = client.submit(prompt, to=["openai:gpt-4o-mini"])
    record = client.result(handle.id, timeout=30)
    assert record.status.value == "succeeded"
    assert record.text == f"echo: {prompt}"
    assert record.result["provider"] == "openai"
    assert record.result["target"] == "openai:gpt-4o-mini"
    assert record.result["usage"]["input_tokens"] > 0 and record.result["usage"]["output_tokens"] > 0
    assert [a["outcome"] for a in record.attempts] == ["succeeded"]
    sent = [r for r in openai.requests if r.body and r.body.get("messages", [{}])[-1].get("content") == prompt]
    assert len(sent) == 1
    assert sent[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent[0].body["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("fault", ["rate_limit:2", "rate_limit_date:3"])
def test_rate_limit_retries_no_earlier_than_retry_after(client, fakes, fault):
    openai, _ = fakes
    openai.push(fault)
    prompt = unique("rate limited")
    handle = client.submit(prompt, to=["openai:gpt-4o-mini"])
    record = client.result(handle.id, timeout=40)
    assert record.status.value == "succeeded", record.to_dict()
    assert record.id == handle.id
    first, second = record.attempts
    assert first["error"]["category"] == "rate_limit"
    asked_s = first["error"]["retry_after_s"]
    assert asked_s is not None and asked_s >= 1.0
    # The retry waited at least as long as the provider asked.
    gap_s = attempt_start(second) - first["finished_at"]
    assert gap_s >= asked_s - 0.01, (gap_s, asked_s)
    assert second["attempt"] == 2 and second["provider"] == "openai"


def test_auth_error_fails_over_to_next_queue_with_same_id(client, fakes):
    openai, anthropic = fakes
    openai.push("auth")
    prompt = unique("fail over please")
    handle = client.submit(prompt, to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    record = client.result(handle.id, timeout=30)
    assert record.status.value == "succeeded"
    assert record.result["provider"] == "claude"
    assert record.result["model"].startswith("claude-3-5-haiku")
    assert [a["provider"] for a in record.attempts] == ["openai", "claude"]
    assert record.attempts[0]["error"]["category"] == "auth"
    assert record.attempts[0]["error"]["status_code"] == 401
    claude_calls = [r for r in anthropic.requests if r.path.endswith("/messages")]
    assert len(claude_calls) == 1 and claude_calls[0].headers["x-api-key"] == ANTHROPIC_KEY


def test_all_targets_fail_then_dead_letter_and_requeue(client, fakes, redis_server):
    openai, anthropic = fakes
    openai.push("auth")
    anthropic.push("quota")
    prompt = unique("doomed")
    handle = client.submit(prompt, to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    record = client.result(handle.id, timeout=30)
    assert record.status.value == "failed"
    assert [a["error"]["category"] for a in record.attempts] == ["auth", "quota"]
    assert "all 2 target(s) failed" in record.error["message"]
    assert handle.id in client.store.dead_letters()

    from click.testing import CliRunner

    from promptq.workers.cli.main import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["--redis-url", redis_server.url, "dlq", "list"])
    assert out.exit_code == 0 and handle.id in out.output
    out = runner.invoke(cli, ["--redis-url", redis_server.url, "dlq", "requeue", handle.id])
    assert out.exit_code == 0, out.output
    record = client.result(handle.id, timeout=30)
    assert record.status.value == "succeeded"
    assert handle.id not in client.store.dead_letters()
    assert len(record.attempts) == 3  # history is kept across the requeue


def test_mid_stream_drop_resets_then_succeeds_elsewhere_without_splicing(client, fakes):
    openai, _ = fakes
    openai.push("drop:2")
    prompt = unique("one two three four five six seven")
    handle = client.submit(
        prompt, to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"], stream=True, max_retries=0
    )
    pieces = list(client.stream(handle.id, timeout=30))
    resets = [i for i, p in enumerate(pieces) if isinstance(p, Reset)]
    assert len(resets) == 1, pieces
    before, after = pieces[: resets[0]], pieces[resets[0] + 1 :]
    assert before, "the failed attempt had streamed text"
    record = client.result(handle.id, timeout=5)
    assert record.status.value == "succeeded" and record.result["provider"] == "claude"
    # What survives the reset is exactly the stored answer: nothing spliced.
    assert "".join(after) == record.text == f"echo: {prompt}"


def test_late_subscriber_replays_every_chunk(client):
    # Pieces 20 ms apart, so each arrives on its own read (pieces read
    # together are merged into one event: tests/tasks/test_chunk_relay.py).
    prompt = unique("alpha beta gamma delta epsilon zeta eta theta [[fault:slow_stream:0.02]]")
    handle = client.submit(prompt, to=["claude:claude-3-5-haiku-latest"], stream=True)
    record = client.result(handle.id, timeout=30)
    assert record.status.value == "succeeded"
    events = list(client.events(handle.id, timeout=10))  # joined after the end
    chunks = [e for e in events if e["type"] == "chunk"]
    assert len(chunks) > 3
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert len({e["seq"] for e in events}) == len(events)
    assert events[-1]["type"] == "done" and events[-1]["usage"]["output_tokens"] > 0
    assert "".join(c["text"] for c in chunks) == record.text


def test_redelivered_finished_job_is_not_sent_to_provider_again(client, fakes, worker):
    openai, _ = fakes
    prompt = unique("only once")
    handle = client.submit(prompt, to=["openai:gpt-4o-mini"])
    record = client.result(handle.id, timeout=30)
    assert record.status.value == "succeeded"
    calls = len(openai.requests)
    # A copy of the message, as Redis would restore after a visibility timeout.
    client.send(handle.id, record.spec, target_index=0, attempt=1, token="stale-token")
    wait_for(lambda: f"job {handle.id}: delivery dropped (terminal)" in worker.log(), 20,
             message="the worker to drop the duplicate")
    assert len(openai.requests) == calls


def test_open_circuit_skips_provider_and_fails_over(client, fakes, redis_server):
    openai, _ = fakes
    health = RedisHealthStore(redis_server.client(), "promptq:health")
    # Circuits are per provider:model (issue 8, fix 5).
    for _ in range(health.policy.failure_threshold):
        health.record_failure("openai:gpt-4o-mini", ProviderError("boom", category=ErrorCategory.SERVER_ERROR, provider="openai"))
    assert not health.allow_request("openai:gpt-4o-mini")
    prompt = unique("circuit")
    handle = client.submit(prompt, to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    record = client.result(handle.id, timeout=30)
    assert record.result["provider"] == "claude"
    assert record.attempts[0]["error"]["error_type"] == "circuit_open"
    assert not any(r.body and prompt in str(r.body) for r in openai.requests)
    # Another model behind the same provider is not held back by that circuit.
    sibling = client.submit(unique("sibling"), to=["openai:gpt-4o", "claude:claude-3-5-haiku-latest"])
    record = client.result(sibling.id, timeout=30)
    assert record.result["provider"] == "openai" and record.result["target"] == "openai:gpt-4o"


def test_failing_model_opens_only_its_own_circuit(client, fakes, redis_server):
    openai, _ = fakes
    # Server errors on one model, through the worker, until its circuit opens.
    threshold = RedisHealthStore(redis_server.client(), "promptq:health").policy.failure_threshold
    for _ in range(threshold):
        handle = client.submit(unique("broken [[fault:server]]"), to=["openai:broken-model"], max_retries=0)
        assert client.result(handle.id, timeout=30).status.value == "failed"
    health = RedisHealthStore(redis_server.client(), "promptq:health")
    assert health.snapshot("openai:broken-model").circuit.value == "open"
    assert health.snapshot("openai:gpt-4o-mini").circuit.value == "closed"
    record = client.result(client.submit(unique("fine"), to=["openai:gpt-4o-mini"]).id, timeout=30)
    assert record.status.value == "succeeded" and record.result["provider"] == "openai"


def test_bad_job_is_refused_with_the_field_named(client, redis_server):
    depth = client.redis.llen("promptq.openai")
    with pytest.raises(JobValidationError) as info:
        client.submit("hi", to=["openai:gpt-4o-mini", "nowhere:model"])
    assert info.value.field == "targets[1]" and "unknown provider 'nowhere'" in str(info.value)
    with pytest.raises(JobValidationError) as info:
        client.submit("hi", to=["openai:gpt-4o-mini"], parameters={"api_key": "sk-leak"})
    assert info.value.field == "parameters.api_key"
    assert client.redis.llen("promptq.openai") == depth


def test_cancel_before_start_means_it_never_runs(client, redis_server):
    # No worker consumes openrouter here, so the job waits in its queue.
    handle = client.submit(unique("never"), to=["openrouter:some/model"])
    assert client.cancel(handle.id) == "cancelled"
    record = client.result(handle.id, timeout=5)
    assert record.status.value == "cancelled"
    assert client.cancel(handle.id) == "cancelled"  # idempotent: reports final state


def test_keys_never_reach_redis_or_logs(client, fakes, redis_server, worker):
    openai, _ = fakes
    openai.push("auth")
    handle = client.submit(unique("leak check"), to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    client.result(handle.id, timeout=30)
    raw = redis_server.client()
    blob = []
    for key in raw.scan_iter(count=1000):
        kind = raw.type(key)
        if kind == b"string":
            blob.append(raw.get(key) or b"")
        elif kind == b"hash":
            blob.extend(v for kv in raw.hgetall(key).items() for v in kv)
        elif kind == b"list":
            blob.extend(raw.lrange(key, 0, -1))
        elif kind == b"stream":
            blob.extend(v for _, fields in raw.xrange(key) for kv in fields.items() for v in kv)
    text = b"\n".join(blob).decode("utf-8", "replace") + worker.log()
    assert len(text) > 1000  # we really looked at something
    assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text
