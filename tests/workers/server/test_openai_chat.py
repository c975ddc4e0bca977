"""The official openai SDK against `promptq serve`: chat completions, streamed
and not, with a failover and a rate-limit retry inside, errors in OpenAI's
shape, and the job id in a header."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from promptq.tasks.client import Client
from promptq.tasks.settings import Settings

from .conftest import API_KEY


def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_models_lists_routes_and_targets(openai_client):
    ids = [m.id for m in openai_client.models.list()]
    assert ids[:2] == ["fast", "solo"]
    assert {"mock:flaky", "mock:good", "mock:solo"} <= set(ids)
    assert openai_client.models.retrieve("fast").model_extra["targets"] == ["mock:flaky", "mock:good"]
    assert openai_client.models.retrieve("ollama:llama3.2:1b").owned_by == "ollama"
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("nothing")


def test_chat_completion(openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="mock:m", messages=[{"role": "user", "content": f"hello {tag()}"}], temperature=0.1)
    completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content.startswith("mock reply to: hello")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens > 0
    job_id = raw.headers["x-promptq-job-id"]
    assert completion.id == f"chatcmpl-{job_id}"
    # What it cost rides beside OpenAI's fields; the mock costs nothing (tasks.pricing).
    assert completion.model_extra["promptq"]["cost_usd"] == 0


def test_route_fails_over_and_the_job_is_readable_later(openai_client, redis_server):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": f"[[fault@flaky:auth]] hi {tag()}"}])
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("mock reply to:")
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    try:
        record = client.result(raw.headers["x-promptq-job-id"], timeout=10)
    finally:
        client.close()
    assert record.result["target"] == "mock:good"
    assert [a["outcome"] for a in record.attempts] == ["error", "succeeded"]


def test_rate_limit_is_retried_inside_one_request(openai_client):
    completion = openai_client.chat.completions.create(
        model="mock:m", messages=[{"role": "user", "content": f"[[fault:rate_limit:0.2:once]] go {tag()}"}])
    assert completion.choices[0].message.content.startswith("mock reply to:")


def test_stream_with_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model="fast", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": f"[[fault@flaky:server:times=9]] one two three {tag()}"}])
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("mock reply to:") and "one two three" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_stream_reset_ends_with_an_error_the_sdk_raises(openai_client):
    stream = openai_client.chat.completions.create(
        model="fast", stream=True,
        messages=[{"role": "user", "content": f"a b c d e f [[fault@flaky:drop:2]] {tag()}"}])
    pieces = []
    with pytest.raises(openai.APIError, match="failed after sending text"):
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces)  # some text came before the reset, and nothing after it


def test_failed_job_is_an_openai_error_the_sdk_does_not_retry(server):
    # Default retries on: a 5xx about a job that ran must not become a second job.
    with openai.OpenAI(base_url=f"{server.base}/v1", api_key=API_KEY, max_retries=2) as client:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="mock:m",
                                           messages=[{"role": "user", "content": f"[[fault:invalid]] {tag()}"}])
        assert info.value.code == "invalid"
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="mock:m",
                                           messages=[{"role": "user", "content": f"[[fault:auth]] {tag()}"}])
        assert info.value.status_code == 502 and info.value.response.headers["x-should-retry"] == "false"


def test_bad_requests_name_the_field(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="mock:m", messages=[])
    assert info.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="mock:m", messages=[{"role": "user", "content": "x"}],
                                              temperature="hot")
    assert info.value.param == "temperature"
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.chat.completions.create(model="no-such-route", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="mock:m", messages=[{"role": "wizard", "content": "x"}])
    assert info.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="mock:m", messages=[{"role": "user", "content": "x"}],
                                              tools=[{"type": "function", "function": {"name": "f"}}])
    assert info.value.param == "tools"


def test_wrong_or_missing_key_is_401(server):
    with openai.OpenAI(base_url=f"{server.base}/v1", api_key="pq-wrong-key-000000000000", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert httpx.get(f"{server.base}/v1/models").status_code == 401
    assert httpx.get(f"{server.base}/v1/models", headers={"x-api-key": API_KEY}).status_code == 200
    assert API_KEY not in server.log()


def test_refusal_reaches_the_sdk(openai_client):
    messages = [{"role": "user", "content": f"[[fault:refusal]] something bad {tag()}"}]
    completion = openai_client.chat.completions.create(model="openai:gpt-4o-mini", messages=messages)
    assert completion.choices[0].message.refusal and completion.choices[0].finish_reason == "content_filter"
    chunks = list(openai_client.chat.completions.create(model="openai:gpt-4o-mini", stream=True,
                                                        messages=[{**messages[0], "content": messages[0]["content"] + " s"}]))
    refusals = [c.choices[0].delta.refusal for c in chunks if c.choices and c.choices[0].delta.refusal]
    assert refusals and chunks[-1].choices[0].finish_reason == "content_filter"


def test_bad_stream_options_are_refused_before_any_job_is_submitted(openai_client, redis_server):
    import openai

    client = redis_server.client()
    before = set(client.scan_iter(match="promptq:job:*"))
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="fast", stream=True, stream_options="usage please",
                                              messages=[{"role": "user", "content": "hi"}])
    assert "stream_options" in str(info.value)
    assert set(client.scan_iter(match="promptq:job:*")) == before  # nothing ran for a refused request
