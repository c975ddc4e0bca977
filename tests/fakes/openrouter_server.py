"""FakeOpenRouter: OpenRouter's OpenAI-compatible API under ``/api/v1``.

Differences from OpenAI that clients must cope with (openrouter.ai docs,
"Streaming" and "Errors and Debugging"):

* SSE comment lines ``: OPENROUTER PROCESSING`` are sent to keep the
  connection open, before and between data chunks; a parser that feeds every
  line to ``json.loads`` breaks on them;
* chunks carry ``provider`` and ``native_finish_reason``; the generation id
  (``gen-...``) is also in the ``X-Generation-Id`` header; the final chunk
  carries ``usage`` (with ``cost``);
* errors are ``{"error": {"code": <int status>, "message", "metadata"?}}``
  with the HTTP status equal to ``error.code``; 402 means out of credits;
* a failure after tokens were sent keeps the 200 and arrives as a chunk with
  a top-level ``error`` and ``choices[0].finish_reason == "error"``, after
  which the stream ends (no ``[DONE]``).  Non-stream responses can likewise be
  a 200 whose choice carries ``error`` and ``finish_reason: "error"``.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from .base import Exchange, RecordedRequest, Reply
from .faults import Fault
from .openai_server import FakeOpenAI
from .wire import sse, sse_comment, sse_data

PROCESSING = "OPENROUTER PROCESSING"


def openrouter_error(status: int, message: str, metadata: Optional[dict] = None,
                     headers: Optional[dict] = None) -> Reply:
    error: dict[str, Any] = {"message": message, "code": status}
    if metadata is not None:
        error["metadata"] = metadata
    return Reply(status, {"error": error, "user_id": "user_fake"}, headers or {})


class FakeOpenRouter(FakeOpenAI):
    base_path = "/api/v1"
    default_model = "openai/gpt-4o-mini"
    id_prefix = "gen-fake"
    provider_name = "OpenAI"

    def __init__(self, *, api_key: Optional[str] = "sk-or-v1-test", processing_every: int = 2,
                 **kwargs: Any) -> None:
        super().__init__(api_key=api_key, **kwargs)
        self.processing_every = processing_every  # a comment before every Nth content chunk (0: never)

    def routes(self):
        return {("POST", "/api/v1/chat/completions"): self.handle_generation}

    # -- errors ---------------------------------------------------------------

    def auth_error(self, request: RecordedRequest) -> Optional[Reply]:
        if self.api_key is None:
            return None
        key = self.bearer(request)
        if not key:
            return openrouter_error(401, "No auth credentials found")
        if key != self.api_key:
            return self.wrong_key(key)
        return None

    def wrong_key(self, key: str) -> Reply:
        return openrouter_error(401, "User not found.")

    def rate_limit_headers(self, remaining_requests: int = 0) -> dict[str, str]:
        return {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": str(remaining_requests),
                "X-RateLimit-Reset": "1767225600000"}  # epoch milliseconds

    def error_reply(self, fault: Fault, ex: Exchange) -> Reply:
        name, model = fault.name, ex.model
        if name == "auth":
            return self.wrong_key("")
        if name == "forbidden":
            return openrouter_error(403, "Key limit exceeded (monthly limit). "
                                    "Manage it using https://openrouter.ai/settings/keys")
        if name == "not_found":
            return openrouter_error(404, f"No endpoints found for {model}.")
        if name == "invalid":
            return openrouter_error(400, 'Input required: specify "prompt" or "messages"')
        if name == "context_length":
            return openrouter_error(
                400, "This endpoint's maximum context length is 128000 tokens. However, you requested about "
                "130000 tokens (130000 of text input). Please reduce the length of either one, or use the "
                '"middle-out" transform to compress your prompt automatically.', {"provider_name": None})
        if name == "content_filter":
            return openrouter_error(
                403, f'{model} requires moderation on OpenAI. Your input was flagged for "harassment". '
                "No credits were charged.",
                {"reasons": ["harassment"], "flagged_input": ex.plan.directives.clean_prompt[:100],
                 "provider_name": "OpenAI", "model_slug": model})
        if name == "quota":
            return openrouter_error(
                402, "This request requires more credits, or fewer max_tokens. You requested up to 4096 "
                "tokens, but can only afford 1000. To increase, visit https://openrouter.ai/settings/credits "
                "and upgrade to a paid account")
        if name.startswith("rate_limit"):
            headers = self.rate_limit_headers(0)
            return openrouter_error(429, "Rate limit exceeded: free-models-per-min.",
                                    {"headers": dict(headers), "provider_name": None}, headers=headers)
        if name == "server":
            return openrouter_error(500, "Internal Server Error")
        if name == "overloaded":
            raw = json.dumps({"error": {"message": "The engine is currently overloaded, please try again later.",
                                        "type": "server_error"}})
            return openrouter_error(503, "Provider returned error",
                                    {"raw": raw, "provider_name": self.provider_name})
        raise ValueError(f"{name} is not an HTTP error fault")

    def in_band_error_reply(self, ex: Exchange) -> Reply:
        body = self.envelope(ex, "chat.completion")
        body["choices"] = [{
            "logprobs": None, "finish_reason": "error", "native_finish_reason": "error", "index": 0,
            "message": {"role": "assistant", "content": "", "refusal": None, "reasoning": None},
            "error": {"code": 502, "message": "Provider returned error",
                      "metadata": {"provider_name": self.provider_name, "error_type": "provider_unavailable"}},
        }]
        body["usage"] = self.usage(ex)
        return Reply(200, body, self.success_headers(ex))

    # -- success ----------------------------------------------------------------

    def success_headers(self, ex: Exchange) -> dict[str, str]:
        return {"X-Generation-Id": ex.id}

    def envelope(self, ex: Exchange, obj: str) -> dict:
        return {"id": ex.id, "provider": self.provider_name, "model": ex.model, "object": obj,
                "created": ex.created, "system_fingerprint": self.system_fingerprint}

    def usage(self, ex: Exchange) -> dict:
        usage = super().usage(ex)
        usage["cost"] = round(0.000001 * usage["total_tokens"], 9)
        usage["is_byok"] = False
        return usage

    def include_usage(self, ex: Exchange) -> bool:
        return True  # OpenRouter sends usage in the last chunk without being asked

    def completion_body(self, ex: Exchange) -> dict:
        body = super().completion_body(ex)
        choice = body["choices"][0]
        choice["native_finish_reason"] = "stop"
        choice["message"] = {"role": "assistant", "content": ex.plan.text, "refusal": None, "reasoning": None}
        return body

    def chunk(self, ex: Exchange, choices: list, usage: Any = None) -> dict:
        body = self.envelope(ex, "chat.completion.chunk")
        body["choices"] = choices
        if usage is not None:
            body["usage"] = usage
        return body

    def choice(self, delta: dict, finish_reason: Optional[str] = None) -> dict:
        return {"index": 0, "delta": delta, "finish_reason": finish_reason,
                "native_finish_reason": finish_reason, "logprobs": None}

    def stream_head(self, ex: Exchange) -> list[bytes]:
        # OpenRouter opens with keep-alive comments while the upstream warms up.
        return [sse_comment(PROCESSING), sse_comment(PROCESSING)]

    def stream_between(self, ex: Exchange, index: int) -> list[bytes]:
        if self.processing_every and index and index % self.processing_every == 0:
            return [sse_comment(PROCESSING)]
        return []

    def stream_piece(self, ex: Exchange, index: int, text: str) -> bytes:
        return sse(self.chunk(ex, [self.choice({"role": "assistant", "content": text})]))

    def stream_tail(self, ex: Exchange) -> list[bytes]:
        return [
            sse(self.chunk(ex, [self.choice({"role": "assistant", "content": ""}, "stop")])),
            sse(self.chunk(ex, [], usage=self.usage(ex))),
            sse_data("[DONE]"),
        ]

    def stream_error_frame(self, ex: Exchange) -> bytes:
        body = self.envelope(ex, "chat.completion.chunk")
        body["error"] = {"code": "server_error", "message": "Provider disconnected unexpectedly"}
        body["choices"] = [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
        return sse(body)
