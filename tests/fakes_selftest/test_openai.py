"""OpenAI-specific wire details."""

from __future__ import annotations

import requests

from tests.fakes import FakeOpenAI
from tests.fakes_selftest.vendors import VENDORS, parse_sse

OPENAI = VENDORS["openai"]


def test_non_stream_completion_object(fake_openai) -> None:
    body = OPENAI.post(fake_openai, "hi there", stream=False).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == 3  # "echo: hi there"


def test_stream_without_include_usage_has_no_usage_key(fake_openai) -> None:
    frames = parse_sse(OPENAI.post(fake_openai, "hi", stream=True).content)
    data = [f.json for f in frames if f.json is not None]
    assert all("usage" not in chunk for chunk in data)
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert data[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert {chunk["object"] for chunk in data} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in data}) == 1
    assert frames[-1].raw == "[DONE]"


def test_stream_with_include_usage_ends_with_a_usage_chunk(fake_openai) -> None:
    resp = OPENAI.post(fake_openai, "hi", stream=True, stream_options={"include_usage": True})
    frames = parse_sse(resp.content)
    data = [f.json for f in frames if f.json is not None]
    usage_chunk = data[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 2
    assert all(chunk["usage"] is None for chunk in data[:-1])
    assert frames[-1].raw == "[DONE]"


def test_missing_and_wrong_keys_get_openai_401s(fake_openai) -> None:
    url = fake_openai.base_url + "/chat/completions"
    missing = requests.post(url, json=OPENAI.body("x", False), timeout=5)
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key.")
    wrong = requests.post(url, json=OPENAI.body("x", False), timeout=5,
                          headers={"Authorization": "Bearer sk-wrong-key-123456"})
    assert wrong.status_code == 401
    error = wrong.json()["error"]
    assert error["code"] == "invalid_api_key" and "sk-wrong-key-123456" not in error["message"]
    assert error["message"].startswith("Incorrect API key provided: sk-")


def test_models_list_requires_auth(fake_openai) -> None:
    assert requests.get(fake_openai.base_url + "/models", timeout=5).status_code == 401
    listing = requests.get(fake_openai.base_url + "/models", headers=OPENAI.headers, timeout=5).json()
    assert listing["object"] == "list" and listing["data"][0]["object"] == "model"


def test_known_models_reject_others_with_model_not_found() -> None:
    with FakeOpenAI(models=["gpt-4o"]) as server:
        resp = requests.post(server.base_url + "/chat/completions", headers=OPENAI.headers, timeout=5,
                             json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == "The model `gpt-9` does not exist or you do not have access to it."


def test_missing_messages_is_a_400_and_keeps_the_queued_fault(fake_openai) -> None:
    fake_openai.push("server")
    resp = requests.post(fake_openai.base_url + "/chat/completions", headers=OPENAI.headers, timeout=5,
                         json={"model": "gpt-4o"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages"
    assert OPENAI.post(fake_openai, "x", stream=False).status_code == 500


def test_api_key_none_disables_auth() -> None:
    with FakeOpenAI(api_key=None) as server:
        resp = requests.post(server.base_url + "/chat/completions", json=OPENAI.body("x", False), timeout=5)
    assert resp.status_code == 200
