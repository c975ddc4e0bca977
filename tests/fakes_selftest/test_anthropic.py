"""Anthropic Messages API wire details."""

from __future__ import annotations

import requests

from tests.fakes_selftest.vendors import VENDORS, parse_sse

ANTHROPIC = VENDORS["anthropic"]


def test_base_url_is_the_root(fake_anthropic) -> None:
    assert fake_anthropic.base_url == fake_anthropic.url


def test_non_stream_message_object(fake_anthropic) -> None:
    body = ANTHROPIC.post(fake_anthropic, "hi there", stream=False).json()
    assert body["type"] == "message" and body["role"] == "assistant" and body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "echo: hi there"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"]["input_tokens"] == 2 and body["usage"]["output_tokens"] == 3


def test_stream_event_sequence(fake_anthropic) -> None:
    frames = parse_sse(ANTHROPIC.post(fake_anthropic, "a b", stream=True).content)
    events = [f.event for f in frames]
    assert events == ["message_start", "content_block_start", "ping", "content_block_delta",
                      "content_block_delta", "content_block_delta", "content_block_stop",
                      "message_delta", "message_stop"]
    assert all(f.json["type"] == f.event for f in frames)        # event name matches data.type
    start = frames[0].json["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 2
    delta = frames[-2].json
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": 3}                 # cumulative: "echo: a b"
    assert frames[3].json["delta"] == {"type": "text_delta", "text": "echo:"}


def test_auth_and_version_headers_are_checked(fake_anthropic) -> None:
    url = fake_anthropic.url + "/v1/messages"
    body = ANTHROPIC.body("x", False)
    wrong = requests.post(url, json=body, headers={"x-api-key": "nope", "anthropic-version": "2023-06-01"},
                          timeout=5)
    assert wrong.status_code == 401
    assert wrong.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    no_version = requests.post(url, json=body, headers={"x-api-key": "sk-ant-test"}, timeout=5)
    assert no_version.status_code == 400
    assert no_version.json()["error"]["message"] == "anthropic-version: header is required"


def test_max_tokens_is_required(fake_anthropic) -> None:
    body = ANTHROPIC.body("x", False)
    del body["max_tokens"]
    resp = requests.post(fake_anthropic.url + "/v1/messages", json=body, headers=ANTHROPIC.headers, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_request_id_header_matches_body(fake_anthropic) -> None:
    fake_anthropic.push("overloaded")
    resp = ANTHROPIC.post(fake_anthropic, "x", stream=False)
    assert resp.status_code == 529
    assert resp.headers["request-id"] == resp.json()["request_id"]
