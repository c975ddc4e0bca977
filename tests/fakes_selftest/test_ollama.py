"""Ollama native API wire details."""

from __future__ import annotations

import requests

from tests.fakes import FakeOllama
from tests.fakes_selftest.vendors import VENDORS, parse_ndjson

OLLAMA = VENDORS["ollama"]
STATS = {"total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
         "eval_count", "eval_duration"}


def test_streams_ndjson_by_default(fake_ollama) -> None:
    resp = requests.post(fake_ollama.url + "/api/chat", timeout=5,
                         json={"model": "llama3.2", "messages": [{"role": "user", "content": "a b"}]})
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    lines = [f.json for f in parse_ndjson(resp.content)]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert lines[0]["message"] == {"role": "assistant", "content": "echo:"}
    assert lines[0]["created_at"].endswith("Z") and lines[0]["model"] == "llama3.2"
    final = lines[-1]
    assert final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert STATS <= set(final) and final["eval_count"] == 3 and final["prompt_eval_count"] == 2


def test_stream_false_returns_one_object(fake_ollama) -> None:
    body = OLLAMA.post(fake_ollama, "a b", stream=False).json()
    assert body["done"] is True and body["message"]["content"] == "echo: a b"
    assert STATS <= set(body)


def test_tags_and_root(fake_ollama) -> None:
    tags = requests.get(fake_ollama.url + "/api/tags", timeout=5).json()
    assert tags["models"][0]["name"] == "llama3.2:latest"
    assert set(tags["models"][0]["details"]) >= {"format", "family", "parameter_size", "quantization_level"}
    assert requests.get(fake_ollama.url + "/", timeout=5).text == "Ollama is running"


def test_unknown_model_and_missing_model() -> None:
    with FakeOllama(models=["llama3.2"]) as server:
        unknown = requests.post(server.url + "/api/chat", timeout=5,
                                json={"model": "mistral", "messages": [], "stream": False})
        missing = requests.post(server.url + "/api/chat", timeout=5, json={"messages": []})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": 'model "mistral" not found, try pulling it first'}
    assert missing.status_code == 400 and missing.json() == {"error": "model is required"}


def test_no_auth_by_default(fake_ollama) -> None:
    assert fake_ollama.api_key is None
    assert OLLAMA.post(fake_ollama, "x", stream=False, timeout=5).status_code == 200
