"""Finish reasons translate into each vendor's own vocabulary."""

import pytest

from promptq.providers.finish_reasons import (
    ANTHROPIC_STOP_REASONS,
    OPENAI_FINISH_REASONS,
    anthropic_stop_reason,
    openai_finish_reason,
)


@pytest.mark.parametrize("raw, expected", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("stop", "stop"), ("length", "length"), (None, "stop"), ("weird", "stop"),
])
def test_openai_words(raw, expected):
    assert openai_finish_reason(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
    ("end_turn", "end_turn"), ("stop_sequence", "stop_sequence"), (None, "end_turn"), ("weird", "end_turn"),
])
def test_anthropic_words(raw, expected):
    assert anthropic_stop_reason(raw) == expected


@pytest.mark.parametrize("raw", [None, "end_turn", "eos", "length", "tool_use", "refusal", "x"])
def test_outputs_stay_in_vocabulary(raw):
    assert openai_finish_reason(raw) in OPENAI_FINISH_REASONS
    assert anthropic_stop_reason(raw) in ANTHROPIC_STOP_REASONS
