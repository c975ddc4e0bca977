"""llama-server (llama.cpp) wire details."""

from __future__ import annotations

import requests

from tests.fakes import FakeLlamaServer
from tests.fakes_selftest.vendors import VENDORS, parse_sse

LLAMA = VENDORS["llamacpp"]
TIMINGS = {"prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second",
           "predicted_n", "predicted_ms", "predicted_per_token_ms", "predicted_per_second"}


def test_non_stream_has_timings_and_usage(fake_llamacpp) -> None:
    body = LLAMA.post(fake_llamacpp, "a b", stream=False).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: a b"}
    assert TIMINGS <= set(body["timings"]) and body["timings"]["predicted_n"] == 3
    assert body["usage"]["completion_tokens"] == 3


def test_stream_first_chunk_and_final_timings(fake_llamacpp) -> None:
    frames = parse_sse(LLAMA.post(fake_llamacpp, "a b", stream=True).content)
    data = [f.json for f in frames if f.json is not None]
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert data[-1]["choices"][0]["finish_reason"] == "stop" and TIMINGS <= set(data[-1]["timings"])
    assert all("timings" not in chunk for chunk in data[:-1])
    assert frames[-1].raw == "[DONE]"


def test_include_usage_puts_timings_on_the_usage_chunk(fake_llamacpp) -> None:
    frames = parse_sse(LLAMA.post(fake_llamacpp, "a", stream=True, stream_options={"include_usage": True}).content)
    data = [f.json for f in frames if f.json is not None]
    assert data[-1]["choices"] == [] and data[-1]["usage"]["prompt_tokens"] == 1
    assert "timings" in data[-1] and "timings" not in data[-2]


def test_health_ok_and_loading(fake_llamacpp) -> None:
    assert requests.get(fake_llamacpp.url + "/health", timeout=5).json() == {"status": "ok"}
    fake_llamacpp.loading = True
    resp = requests.get(fake_llamacpp.url + "/health", timeout=5)
    assert resp.status_code == 503
    assert resp.json() == {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    assert LLAMA.post(fake_llamacpp, "x", stream=False).status_code == 503


def test_optional_api_key() -> None:
    with FakeLlamaServer(api_key="secret") as server:
        url = server.base_url + "/chat/completions"
        denied = requests.post(url, json=LLAMA.body("x", False), timeout=5)
        allowed = requests.post(url, json=LLAMA.body("x", False), headers={"Authorization": "Bearer secret"},
                                timeout=5)
        health = requests.get(server.url + "/health", timeout=5)          # public endpoint
        models = requests.get(server.url + "/v1/models", timeout=5)       # public endpoint
    assert denied.status_code == 401
    assert denied.json() == {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}
    assert allowed.status_code == 200 and health.status_code == 200 and models.status_code == 200


def test_context_length_error_carries_token_counts(fake_llamacpp) -> None:
    fake_llamacpp.push("context_length")
    error = LLAMA.post(fake_llamacpp, "x", stream=False).json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == 4096 and error["n_prompt_tokens"] > error["n_ctx"]
    assert "exceeds the available context size (4096 tokens)" in error["message"]
