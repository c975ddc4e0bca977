"""OpenAI chat completions, shared by OpenAI, OpenRouter and llama-server.

Wire format (https://platform.openai.com/docs/api-reference/chat/create):
`POST {base}/chat/completions` with `Authorization: Bearer <key>`. Streamed
answers are SSE `data:` chunks ending with `data: [DONE]`; with
`stream_options.include_usage` a last chunk before [DONE] carries `usage` and
an empty `choices`. An error may still arrive inside a 200: as a body with a
top-level `error` (OpenRouter, non-streamed) or as a chunk with a top-level
`error` and `finish_reason: "error"` (OpenRouter, streamed) — both raise.
A refusal (`message.refusal`, or `delta.refusal` pieces when streamed) is
kept in `ProviderResult.refusal`, with finish reason "refusal".
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .base import Message, ProviderResult, Usage, build_messages
from .error_handling import malformed
from .http_base import HTTPProvider
from .params import openai_chat_params
from .streaming_utils import OpenAIStreamParser, StreamParser, in_band_error, int_or_none


def _text_of(content: Any) -> Optional[str]:
    """Message content as text: a string, or a list of {"type": "text"} parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return None



class OpenAICompatProvider(HTTPProvider):
    """A provider speaking OpenAI's chat-completions dialect."""

    chat_path = "chat/completions"
    #: The body field `max_tokens` is sent as (OpenAI wants max_completion_tokens).
    max_tokens_field = "max_tokens"
    supports_top_k = True
    #: Ask for the final usage chunk when streaming.
    include_usage = True

    @property
    def request_path(self) -> str:
        return self.chat_path

    def headers(self) -> Dict[str, str]:
        headers = super().headers()
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    # --- request -------------------------------------------------------------

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
        payload: Dict[str, Any] = {
            "model": model,
            "messages": build_messages(prompt, system_prompt, messages),
        }
        payload.update(
            openai_chat_params(
                parameters,
                self.name,
                max_tokens_field=self.max_tokens_field,
                supports_top_k=self.supports_top_k,
            )
        )
        payload["stream"] = stream
        if stream and self.include_usage:
            payload["stream_options"] = {"include_usage": True}
        return payload

    # --- response ------------------------------------------------------------

    def parse_response(self, data: Dict[str, Any], requested_model: str, latency_s: float) -> ProviderResult:
        if data.get("error") is not None:
            raise in_band_error(data, self.name)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise malformed(self.name, "no choices in the completion")
        choice = choices[0]
        if choice.get("finish_reason") == "error":
            # OpenRouter: a 200 whose choice carries the upstream's error.
            raise in_band_error(
                choice if choice.get("error") else {"error": "generation ended with finish_reason 'error'"},
                self.name,
            )
        message = choice.get("message")
        if not isinstance(message, dict):
            raise malformed(self.name, "the choice has no message")
        text = _text_of(message.get("content"))
        if text is None and message.get("content") is not None:
            raise malformed(self.name, "message content is neither text nor text parts")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        model = data.get("model")
        refusal = message.get("refusal")
        refusal = refusal if isinstance(refusal, str) and refusal else None
        return ProviderResult(
            text=text or "",
            provider=self.name,
            model=model if isinstance(model, str) and model else requested_model,
            usage=Usage(int_or_none(usage.get("prompt_tokens")), int_or_none(usage.get("completion_tokens"))),
            # OpenAI says "stop" after a refusal; promptq's word says why it stopped.
            finish_reason="refusal" if refusal else choice.get("finish_reason"),
            latency_s=latency_s,
            refusal=refusal,
        )

    def stream_parser(self) -> StreamParser:
        return OpenAIStreamParser(self.name)
