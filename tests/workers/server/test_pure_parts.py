"""The front's pure parts, without a server: routing, error mapping, SSE framing."""

from __future__ import annotations


import pytest

from promptq.tasks.job import JobValidationError
from promptq.workers.server.errors import ApiError, from_failed_job, invalid_field
from promptq.workers.server.jobs import text_content
from promptq.workers.server.routing import Router
from promptq.workers.server.sse import DONE, sse


def test_routing():
    router = Router({"fast": ["openai:a", "claude:b"]})
    assert router.targets("fast") == ["openai:a", "claude:b"]
    assert router.targets("anthropic:claude-x") == ["claude:claude-x"]
    assert router.targets("ollama:llama3.2:1b") == ["ollama:llama3.2:1b"]
    for bad, status in (("gpt-4o", 404), ("nowhere:x", 404), ("", 400), (None, 400)):
        with pytest.raises(ApiError) as info:
            router.targets(bad)
        assert info.value.status == status and info.value.param == "model"
    assert [m["id"] for m in router.models()["data"]] == ["fast", "openai:a", "claude:b"]


@pytest.mark.parametrize("category, status", [
    ("invalid", 400), ("context_length", 400), ("content_filter", 400), ("not_found", 404), ("rate_limit", 429),
    ("quota", 429), ("overloaded", 529), ("server", 502), ("auth", 502), ("network", 502), (None, 502)])
def test_failed_job_status(category, status):
    error = from_failed_job("j1", {"message": "all 1 target(s) failed", "category": category,
                                   "last_error": {"retry_after_s": 7.2}})
    assert error.status == status and "j1" in error.message
    response = error.response("openai")
    assert response.status_code == status
    assert (response.headers.get("retry-after") == "7") == (status == 429)
    assert response.headers["x-should-retry"] == "false"  # an SDK's retry would be a second job
    assert error.anthropic_body()["error"]["message"] == error.message


def test_invalid_field_uses_the_requests_names():
    error = invalid_field(JobValidationError("system_prompt", "must be a string"), {"system_prompt": "system"})
    assert (error.status, error.param, error.message) == (400, "system", "system: must be a string")


def test_text_parts_are_joined_and_other_parts_kept():
    assert text_content([{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {}}]) == "ab"
    image = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert text_content(image) == image and text_content("s") == "s"


def test_sse_framing():
    assert sse({"a": "x\ny"}) == b'data: {"a":"x\\ny"}\n\n'
    assert sse({"type": "ping"}, event="ping") == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert DONE == b"data: [DONE]\n\n"
