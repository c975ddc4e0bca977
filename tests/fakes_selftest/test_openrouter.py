"""OpenRouter wire details: processing comments, generation ids, in-band errors."""

from __future__ import annotations

import requests

from tests.fakes import FakeOpenRouter
from tests.fakes_selftest.vendors import VENDORS, parse_sse

ROUTER = VENDORS["openrouter"]


def test_base_url_has_api_v1(fake_openrouter) -> None:
    assert fake_openrouter.base_url == fake_openrouter.url + "/api/v1"


def test_stream_has_processing_comments_before_and_among_chunks(fake_openrouter) -> None:
    frames = parse_sse(ROUTER.post(fake_openrouter, "one two three four", stream=True).content)
    kinds = [f.kind for f in frames]
    assert kinds[0] == "comment" and frames[0].raw == "OPENROUTER PROCESSING"
    first_data = kinds.index("data")
    assert "comment" in kinds[first_data:]                       # also between data chunks
    assert all(f.raw == "OPENROUTER PROCESSING" for f in frames if f.kind == "comment")


def test_stream_chunks_usage_and_generation_id(fake_openrouter) -> None:
    resp = ROUTER.post(fake_openrouter, "hi", stream=True)
    frames = [f for f in parse_sse(resp.content) if f.kind == "data"]
    data = [f.json for f in frames if f.json is not None]
    assert {chunk["id"] for chunk in data} == {resp.headers["X-Generation-Id"]}
    assert resp.headers["X-Generation-Id"].startswith("gen-")
    assert all(chunk["provider"] == "OpenAI" for chunk in data)
    finish = data[-2]["choices"][0]
    assert finish["finish_reason"] == "stop" and finish["native_finish_reason"] == "stop"
    assert data[-1]["choices"] == [] and data[-1]["usage"]["cost"] > 0
    assert frames[-1].raw == "[DONE]"


def test_missing_and_wrong_keys(fake_openrouter) -> None:
    url = fake_openrouter.base_url + "/chat/completions"
    missing = requests.post(url, json=ROUTER.body("x", False), timeout=5)
    assert missing.status_code == 401
    assert missing.json()["error"] == {"message": "No auth credentials found", "code": 401}
    wrong = requests.post(url, json=ROUTER.body("x", False), headers={"Authorization": "Bearer bad"}, timeout=5)
    assert wrong.json()["error"] == {"message": "User not found.", "code": 401}


def test_content_filter_carries_moderation_metadata(fake_openrouter) -> None:
    fake_openrouter.push("content_filter")
    resp = ROUTER.post(fake_openrouter, "flag this", stream=False)
    meta = resp.json()["error"]["metadata"]
    assert resp.status_code == 403
    assert meta["reasons"] == ["harassment"] and meta["flagged_input"] == "flag this"
    assert meta["model_slug"] == ROUTER.model


def test_processing_comments_can_be_turned_off() -> None:
    with FakeOpenRouter(processing_every=0) as server:
        frames = parse_sse(ROUTER.post(server, "one two three four five", stream=True).content)
    kinds = [f.kind for f in frames]
    assert "comment" not in kinds[kinds.index("data"):]
