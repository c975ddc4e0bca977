"""Anthropic Claude: the Messages API.

Configuration (each key falls back to its environment variable):

    api_key            ANTHROPIC_API_KEY   required
    base_url           ANTHROPIC_BASE_URL  https://api.anthropic.com (the provider adds /v1/messages)
    max_tokens         (config only)       default `max_tokens`, 1024; the API requires one
    anthropic_version  (config only)       `anthropic-version` header, 2023-06-01
    anthropic_beta     (config only)       optional `anthropic-beta` header
    timeout, connect_timeout, pool_size (see http_base)

Wire format (https://docs.anthropic.com/en/api/messages): `x-api-key` and
`anthropic-version` headers; the system prompt is the top-level `system`
field, not a message. Streams are SSE with named events: message_start
(model, input usage), content_block_delta/text_delta (text), message_delta
(stop_reason, cumulative usage), message_stop (the terminator), ping, and
`error` (raised; e.g. overloaded_error mid-stream). Unknown events are ignored.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .base import Message, ProviderResult, Usage, build_messages
from .error_handling import ErrorCategory, ProviderError, malformed
from .finish_reasons import ANTHROPIC_REFUSAL
from .http_base import HTTPProvider
from .params import anthropic_params
from .streaming_utils import ClaudeStreamParser, StreamParser, in_band_error, int_or_none

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024



class ClaudeProvider(HTTPProvider):
    name = "claude"
    display_name = "Anthropic"
    key_env_var = "ANTHROPIC_API_KEY"
    needs_key = True
    base_url_env_var = "ANTHROPIC_BASE_URL"
    default_base_url = "https://api.anthropic.com"

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__(config)
        self.default_max_tokens = int(self.config.get("max_tokens") or DEFAULT_MAX_TOKENS)
        self.anthropic_version = str(self.config.get("anthropic_version") or ANTHROPIC_VERSION)
        self.anthropic_beta = self.config.get("anthropic_beta")
        # The SDKs' base URL has no /v1; accept one that does rather than 404.
        self.messages_path = "messages" if self.base_url.endswith("/v1") else "v1/messages"

    @property
    def request_path(self) -> str:
        return self.messages_path

    def headers(self) -> Dict[str, str]:
        headers = super().headers()
        if self._api_key:
            headers["x-api-key"] = self._api_key
        headers["anthropic-version"] = self.anthropic_version
        if self.anthropic_beta:
            headers["anthropic-beta"] = str(self.anthropic_beta)
        return headers

    def build_payload(
        self,
        model: str,
        prompt: Optional[str],
        system_prompt: Optional[str],
        parameters: Optional[Dict[str, Any]],
        messages: Optional[List[Message]],
        *,
        stream: bool,
    ) -> Dict[str, Any]:
        chat = build_messages(prompt, system_prompt, messages)
        # Every system message, wherever it sits, joins the top-level `system`:
        # the Messages API accepts only user/assistant turns.
        system = "\n\n".join(_system_text(m) for m in chat if m.get("role") == "system")
        turns = [m for m in chat if m.get("role") != "system"]
        for turn in turns:
            if turn.get("role") not in ("user", "assistant"):
                raise ProviderError(
                    f"Anthropic accepts user and assistant messages, not {turn.get('role')!r}",
                    category=ErrorCategory.INVALID_REQUEST,
                    provider=self.name,
                    retryable=False,
                )
        payload: Dict[str, Any] = {"model": model, "messages": turns}
        if system:
            payload["system"] = system
        payload.update(anthropic_params(parameters, self.name, default_max_tokens=self.default_max_tokens))
        payload["stream"] = stream
        return payload

    def parse_response(self, data: Dict[str, Any], requested_model: str, latency_s: float) -> ProviderResult:
        if data.get("type") == "error" or data.get("error") is not None:
            raise in_band_error(data, self.name)
        content = data.get("content")
        if not isinstance(content, list):
            raise malformed(self.name, "message has no content list")
        # Thinking and tool-use blocks carry no answer text.
        text = "".join(
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        )
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        model = data.get("model")
        stop_reason = data.get("stop_reason")
        return ProviderResult(
            text=text,
            provider=self.name,
            model=model if isinstance(model, str) and model else requested_model,
            usage=Usage(int_or_none(usage.get("input_tokens")), int_or_none(usage.get("output_tokens"))),
            finish_reason=stop_reason,
            latency_s=latency_s,
            refusal=ANTHROPIC_REFUSAL if stop_reason == "refusal" else None,
        )

    def stream_parser(self) -> StreamParser:
        return ClaudeStreamParser(self.name)


def _system_text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")
