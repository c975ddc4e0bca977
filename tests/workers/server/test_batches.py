"""OpenAI Files + Batches and Anthropic Message Batches through the official
SDKs against `promptq serve`: every output line validates with the SDK's own
types; a failover and a rate-limit retry happen inside the batch."""

from __future__ import annotations

import io
import json
import time
import uuid

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.worker_process import wait_for


def tag() -> str:
    return uuid.uuid4().hex[:8]


def batch_file(lines) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())


def chat_line(custom_id, content, model="mock:m", **body):
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], **body}}


def test_openai_batch_round_trip(openai_client):
    t = tag()
    lines = [chat_line(f"r{i}", f"line {i} {t}", max_tokens=20) for i in range(6)]
    lines.append(chat_line("failover", f"[[fault@flaky:auth]] fo {t}", model="fast"))
    lines.append(chat_line("retry", f"[[fault:rate_limit:0.2:once]] rl {t}"))
    lines.append(chat_line("broken", f"[[fault:invalid]] bad {t}"))
    uploaded = openai_client.files.create(file=("in.jsonl", batch_file(lines)), purpose="batch")
    assert openai_client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    batch = openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                         completion_window="24h", metadata={"run": t})
    assert batch.status in ("validating", "in_progress")
    batch = wait_for(lambda: (b := openai_client.batches.retrieve(batch.id)).status in ("completed", "failed") and b,
                     60, 0.2, "batch to complete")
    assert batch.status == "completed", batch.errors
    assert batch.request_counts.total == 9 and batch.request_counts.completed == 8 and batch.request_counts.failed == 1
    assert batch.metadata == {"run": t}
    output = [json.loads(line) for line in openai_client.files.content(batch.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == [f"r{i}" for i in range(6)] + ["failover", "retry"]
    for line in output:
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.choices[0].finish_reason == "stop"
        assert completion.choices[0].message.content.startswith("mock reply to:")
    assert output[6]["promptq"]["model"] == "good"
    errors = [json.loads(line) for line in openai_client.files.content(batch.error_file_id).text.splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("broken", "invalid")]
    assert batch.id in [b.id for b in openai_client.batches.list(limit=100)]


def test_openai_batch_with_a_bad_line_fails_whole(openai_client):
    lines = [chat_line("ok", f"fine {tag()}"), chat_line("bad", "x", model="nowhere"),
             {"custom_id": "worse", "method": "GET", "url": "/v1/chat/completions", "body": {}}]
    uploaded = openai_client.files.create(file=("in.jsonl", batch_file(lines)), purpose="batch")
    batch = openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                         completion_window="24h")
    batch = wait_for(lambda: (b := openai_client.batches.retrieve(batch.id)).status != "validating" and b, 30, 0.1,
                     "validation")
    assert batch.status == "failed"
    assert [(e.line, e.param) for e in batch.errors.data] == [(2, "body.model"), (3, "method")]


def test_openai_batch_cancel(openai_client):
    t = tag()
    # Slow lines: most are still queued when the cancel arrives.
    lines = [chat_line(f"s{i}", f"[[fault:rate_limit:5:once]] slow {i} {t}") for i in range(20)]
    uploaded = openai_client.files.create(file=("in.jsonl", batch_file(lines)), purpose="batch")
    batch = openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                         completion_window="24h")
    wait_for(lambda: openai_client.batches.retrieve(batch.id).status == "in_progress", 30, 0.1, "in progress")
    assert openai_client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    batch = wait_for(lambda: (b := openai_client.batches.retrieve(batch.id)).status == "cancelled" and b, 60, 0.2,
                     "cancelled")
    assert batch.request_counts.failed > 0


def test_file_errors(openai_client, server):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="assistants")
    assert info.value.param == "purpose"
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve("file-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        openai_client.batches.retrieve("batch_nope")


def test_anthropic_message_batch(anthropic_client):
    t = tag()
    requests = [{"custom_id": f"m{i}", "params": {"model": "mock:c", "max_tokens": 20,
                                                   "messages": [{"role": "user", "content": f"msg {i} {t}"}]}}
                for i in range(4)]
    requests.append({"custom_id": "fo", "params": {"model": "fast", "max_tokens": 20, "system": "s",
                                                    "messages": [{"role": "user", "content": f"[[fault@flaky:auth]] {t}"}]}})
    requests.append({"custom_id": "bad", "params": {"model": "mock:c", "max_tokens": 20,
                                                     "messages": [{"role": "user", "content": f"[[fault:invalid]] {t}"}]}})
    batch = anthropic_client.messages.batches.create(requests=requests)
    assert batch.type == "message_batch" and batch.processing_status == "in_progress"
    batch = wait_for(lambda: (b := anthropic_client.messages.batches.retrieve(batch.id)).processing_status == "ended"
                     and b, 60, 0.2, "message batch to end")
    assert batch.request_counts.succeeded == 5 and batch.request_counts.errored == 1
    results = list(anthropic_client.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == ["m0", "m1", "m2", "m3", "fo", "bad"]
    for result in results[:5]:
        assert result.result.type == "succeeded"
        assert result.result.message.content[0].text.startswith("mock reply to:")
        assert result.result.message.stop_reason == "end_turn"
    assert results[5].result.type == "errored"
    assert batch.id in [b.id for b in anthropic_client.messages.batches.list()]


def test_anthropic_batch_refuses_a_bad_request(anthropic_client):
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.messages.batches.create(requests=[
            {"custom_id": "a", "params": {"model": "mock:c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}},
            {"custom_id": "b", "params": {"model": "mock:c", "max_tokens": 5, "messages": []}}])
    assert "requests[1].params.messages" in info.value.body["error"]["message"]


def test_anthropic_batch_cancel(anthropic_client):
    t = tag()
    requests = [{"custom_id": f"c{i}", "params": {"model": "mock:c", "max_tokens": 5, "messages": [
        {"role": "user", "content": f"[[fault:rate_limit:5:once]] {i} {t}"}]}} for i in range(10)]
    batch = anthropic_client.messages.batches.create(requests=requests)
    assert anthropic_client.messages.batches.cancel(batch.id).processing_status in ("canceling", "ended")
    batch = wait_for(lambda: (b := anthropic_client.messages.batches.retrieve(batch.id)).processing_status == "ended"
                     and b, 60, 0.2, "cancelled batch to end")
    assert batch.request_counts.canceled > 0
    kinds = {r.result.type for r in anthropic_client.messages.batches.results(batch.id)}
    assert "canceled" in kinds


def test_a_batch_left_validating_by_a_dead_server_is_resumed(openai_client, server):
    # What a server that died right after `POST /v1/batches` leaves behind:
    # the batch's description, still `validating`, and no submission running.
    uploaded = openai_client.files.create(file=("in.jsonl", batch_file([chat_line("z", f"orphan {tag()}")])),
                                          purpose="batch")
    batch_id = f"batch_orphan{tag()}"
    created = int(time.time()) - 120
    (server.files_dir / "batches").mkdir(exist_ok=True)
    (server.files_dir / "batches" / f"{batch_id}.json").write_text(json.dumps({
        "id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
        "input_file_id": uploaded.id, "completion_window": "24h", "status": "validating", "output_file_id": None,
        "error_file_id": None, "created_at": created, "in_progress_at": None, "expires_at": None,
        "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
        "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": None}))
    batch = wait_for(lambda: (b := openai_client.batches.retrieve(batch_id)).status == "completed" and b, 60, 0.2,
                     "the orphaned batch to be resumed and completed")
    assert batch.request_counts.completed == 1


def test_openai_batch_metadata_sets_a_spend_limit(openai_client, redis_server):
    from promptq import Client, Settings, batch_status

    uploaded = openai_client.files.create(file=("in.jsonl", batch_file([chat_line("a", f"cap me {tag()}")])),
                                          purpose="batch")
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                     completion_window="24h", metadata={"promptq_max_cost_usd": "lots"})
    assert info.value.param == "metadata.promptq_max_cost_usd"
    batch = openai_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                         completion_window="24h", metadata={"promptq_max_cost_usd": "2.5"})
    batch = wait_for(lambda: (b := openai_client.batches.retrieve(batch.id)).status in ("completed", "failed") and b,
                     60, 0.2, "batch to complete")
    assert batch.status == "completed", batch.errors
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    try:
        status = batch_status(client, batch.id)
    finally:
        client.close()
    assert (status["max_cost_usd"], status["cost_usd"], status["succeeded"]) == (2.5, 0, 1)
