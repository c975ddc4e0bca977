"""`batch results` lines in OpenAI's format, checked with the official SDK's
own types: whoever answered, the body is a `ChatCompletion` the `openai`
package accepts, and the provider's own finish reason is kept in `promptq`.
(End to end through a worker: tests/workers/test_batch_e2e.py.)"""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion

from promptq.providers.base import ProviderResult, Usage
from promptq.providers.finish_reasons import ANTHROPIC_REFUSAL
from promptq.tasks.batch_results import result_line


def job_hash(target: str, result: ProviderResult) -> dict:
    """A succeeded job's record as the store writes it (bytes, as Redis returns it)."""
    payload = result.to_dict()
    payload["target"] = target
    fields = {"spec": json.dumps({"custom_id": "c1", "targets": [target]}), "status": "succeeded",
              "target_index": "0", "result": json.dumps(payload), "finished_at": "1718000000.5"}
    return {k.encode(): v.encode() for k, v in fields.items()}


CASES = [
    # (target, the provider's own word, what OpenAI readers get)
    ("openai:gpt-4o-mini", "stop", "stop"),
    ("openai:gpt-4o-mini", "length", "length"),
    ("claude:claude-3-5-haiku-latest", "end_turn", "stop"),
    ("claude:claude-3-5-haiku-latest", "max_tokens", "length"),
    ("claude:claude-3-5-haiku-latest", "stop_sequence", "stop"),
    ("claude:claude-3-5-haiku-latest", "tool_use", "tool_calls"),
    ("claude:claude-3-5-haiku-latest", "pause_turn", "stop"),
    ("ollama:llama3.2", "stop", "stop"),
    ("ollama:llama3.2", "length", "length"),
    ("ollama:llama3.2", "load", "stop"),
    ("llamacpp:tiny", "stop", "stop"),
    ("llamacpp:tiny", "length", "length"),
    ("mock:good", None, "stop"),
]


@pytest.mark.parametrize("target,raw,expected", CASES)
def test_every_line_is_a_chat_completion_the_sdk_accepts(target, raw, expected):
    provider, _, model = target.partition(":")
    result = ProviderResult(text="hi", provider=provider, model=model, usage=Usage(3, 1), finish_reason=raw)
    line = result_line("job-1", job_hash(target, result), 1)
    completion = ChatCompletion.model_validate(line["response"]["body"])
    assert completion.choices[0].finish_reason == expected
    assert completion.choices[0].message.content == "hi" and completion.choices[0].message.refusal is None
    assert line["promptq"]["finish_reason"] == raw and line["promptq"]["provider"] == provider


def test_an_openai_refusal_is_message_refusal_and_content_filter():
    result = ProviderResult(text="", provider="openai", model="gpt-4o-mini", usage=Usage(9, 10),
                            finish_reason="refusal", refusal="I'm sorry, I can't help with that.")
    line = result_line("job-1", job_hash("openai:gpt-4o-mini", result), 1)
    completion = ChatCompletion.model_validate(line["response"]["body"])
    choice = completion.choices[0]
    assert choice.message.refusal == "I'm sorry, I can't help with that." and choice.message.content is None
    assert choice.finish_reason == "content_filter" and line["promptq"]["finish_reason"] == "refusal"
    assert line["error"] is None and line["promptq"]["status"] == "succeeded"


def test_a_claude_refusal_keeps_the_text_said_before_it():
    result = ProviderResult(text="Let me", provider="claude", model="claude-3-5-haiku-latest", usage=Usage(9, 2),
                            finish_reason="refusal", refusal=ANTHROPIC_REFUSAL)
    line = result_line("job-1", job_hash("claude:claude-3-5-haiku-latest", result), 1)
    choice = ChatCompletion.model_validate(line["response"]["body"]).choices[0]
    assert (choice.message.content, choice.message.refusal, choice.finish_reason) == (
        "Let me", ANTHROPIC_REFUSAL, "content_filter")
