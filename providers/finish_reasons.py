"""Finish reasons in each vendor's vocabulary.

Providers report why a generation ended in their own words (Anthropic
`end_turn`, Ollama `done_reason`, llama.cpp `stop`/`length`, ...). A result
keeps that word; output in a vendor's format (an OpenAI `chat.completion`, an
Anthropic `message`) must use that vendor's words only, or its SDK refuses
the object. Unknown words map to the neutral "ended normally" value.
"""

from __future__ import annotations

from typing import Optional

#: `ProviderResult.refusal` when Anthropic declines: its API gives a stop
#: reason, not a refusal message (the text before it, if any, stays the text).
ANTHROPIC_REFUSAL = "the model declined to answer (Anthropic stop_reason 'refusal')"

#: OpenAI's own values: what `ChatCompletion.model_validate` accepts.
OPENAI_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")

#: Anthropic's own values for `stop_reason`.
ANTHROPIC_STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal")

_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "eos": "stop",
    "max_tokens": "length",
    "limit": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "safety": "content_filter",
}

_TO_ANTHROPIC = {
    "stop": "end_turn",
    "eos": "end_turn",
    "length": "max_tokens",
    "limit": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
    "safety": "refusal",
}


def openai_finish_reason(raw: Optional[str]) -> str:
    """The OpenAI word for a provider's finish reason (`stop` when unknown or absent)."""
    if raw in OPENAI_FINISH_REASONS:
        return raw  # type: ignore[return-value]
    return _TO_OPENAI.get(raw or "", "stop")


def anthropic_stop_reason(raw: Optional[str]) -> str:
    """The Anthropic word for a provider's finish reason (`end_turn` when unknown or absent)."""
    if raw in ANTHROPIC_STOP_REASONS:
        return raw  # type: ignore[return-value]
    return _TO_ANTHROPIC.get(raw or "", "end_turn")
