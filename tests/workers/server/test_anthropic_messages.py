"""The official anthropic SDK (2.x: Authorization: Bearer) against `promptq
serve`: messages.create, messages.stream with Anthropic's event types, errors
in Anthropic's shape, and x-api-key accepted too."""

from __future__ import annotations

import uuid

import anthropic
import httpx
import pytest

from .conftest import API_KEY


def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_create(anthropic_client):
    message = anthropic_client.messages.create(
        model="mock:claude", max_tokens=100, system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": f"hello {tag()}"}]}])
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text.startswith("mock reply to: hello")
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0


def test_stream_events_and_failover(anthropic_client):
    with anthropic_client.messages.stream(
            model="fast", max_tokens=100,
            messages=[{"role": "user", "content": f"[[fault@flaky:auth]] one two three {tag()}"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and "content_block_delta" in kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].text.startswith("mock reply to:") and "one two three" in final.content[0].text
    assert final.stop_reason == "end_turn"


def test_raw_stream_wire_format(server):
    body = {"model": "mock:m", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": f"x y z {tag()}"}]}
    with httpx.stream("POST", f"{server.base}/v1/messages", json=body, headers={"x-api-key": API_KEY}) as response:
        assert response.status_code == 200 and response.headers["x-promptq-job-id"]
        events = [line[7:] for line in response.iter_lines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert set(events[3:-3]) == {"content_block_delta"}
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_failed_stream_raises(anthropic_client):
    with pytest.raises(anthropic.APIStatusError, match="failed"):
        with anthropic_client.messages.stream(
                model="mock:m", max_tokens=10, messages=[{"role": "user", "content": f"[[fault:invalid]] {tag()}"}]
        ) as stream:
            for _ in stream:
                pass


def test_errors_in_anthropic_shape(anthropic_client, server):
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.messages.create(model="mock:m", max_tokens=10, messages=[])
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "messages" in info.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.create(model="nowhere", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    response = httpx.post(f"{server.base}/v1/messages", json={}, headers={"x-api-key": "wrong-key-0000000000000"})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
