"""FakeAnthropic: the Anthropic Messages API (``POST /v1/messages``).

Wire format (docs.anthropic.com "Messages", "Streaming Messages", "Errors",
"Rate limits"):

* requests carry the key as ``x-api-key`` or ``Authorization: Bearer`` (SDK
  2.x), and an ``anthropic-version`` header;
* non-stream: a ``message`` object with ``content`` blocks, ``stop_reason``
  and ``usage {input_tokens, output_tokens}``;
* stream: named SSE events ``message_start`` (usage with input_tokens),
  ``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``)
  per piece, ``content_block_stop``, ``message_delta`` (stop_reason and the
  *cumulative* output_tokens), ``message_stop``; no ``[DONE]``;
* errors: ``{"type": "error", "error": {"type", "message"}, "request_id"}``
  with the documented status per type; 529 for ``overloaded_error``; a
  failure after the 200 arrives as ``event: error``.

The SDK's base URL is the server root (it appends ``/v1/messages`` itself),
so ``base_url`` here has no ``/v1``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from .base import Exchange, FakeServer, RecordedRequest, Reply
from .directives import content_text
from .faults import Fault
from .wire import sse, sse_data


class FakeAnthropic(FakeServer):
    base_path = ""
    default_model = "claude-sonnet-4-5"
    id_prefix = "msg_fake"

    def __init__(self, *, api_key: Optional[str] = "sk-ant-test", **kwargs: Any) -> None:
        super().__init__(api_key=api_key, **kwargs)

    def routes(self):
        return {("POST", "/v1/messages"): self.handle_generation}

    def system_text(self, body: dict) -> str:
        return content_text(body.get("system"))

    # -- errors ---------------------------------------------------------------

    def error(self, status: int, type_: str, message: str, ex: Optional[Exchange] = None,
              headers: Optional[dict] = None) -> Reply:
        request_id = f"req_{ex.id}" if ex else "req_fake_unauthenticated"
        body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}
        return Reply(status, body, {"request-id": request_id, **(headers or {})})

    def auth_error(self, request: RecordedRequest) -> Optional[Reply]:
        # The API takes the key as `x-api-key` or as `Authorization: Bearer`
        # (what the anthropic SDK 2.x sends for api_key and auth_token alike).
        bearer = request.headers.get("authorization", "")
        given = request.headers.get("x-api-key") or (bearer[7:] if bearer.startswith("Bearer ") else None)
        if self.api_key is not None and given != self.api_key:
            return self.error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    def request_error(self, ex: Exchange) -> Optional[Reply]:
        if "max_tokens" not in ex.body:
            return self.error(400, "invalid_request_error", "max_tokens: Field required", ex)
        if not isinstance(ex.body.get("messages"), list):
            return self.error(400, "invalid_request_error", "messages: Field required", ex)
        if self.models is not None and ex.model not in self.models:
            return self.error_reply(Fault("not_found"), ex)
        return None

    def rate_limit_headers(self, remaining: int) -> dict[str, str]:
        reset = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {}
        for kind, limit in (("requests", 50), ("tokens", 100000),
                            ("input-tokens", 80000), ("output-tokens", 20000)):
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining if kind == "requests" else limit)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset
        return headers

    def error_reply(self, fault: Fault, ex: Exchange) -> Reply:
        name = fault.name
        if name == "auth":
            return self.error(401, "authentication_error", "invalid x-api-key", ex)
        if name == "forbidden":
            return self.error(403, "permission_error",
                              "Your API key does not have permission to use the specified resource.", ex)
        if name == "not_found":
            return self.error(404, "not_found_error", f"model: {ex.model}", ex)
        if name == "invalid":
            return self.error(400, "invalid_request_error", "messages: Field required", ex)
        if name == "context_length":
            return self.error(400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum", ex)
        if name == "content_filter":
            return self.error(400, "invalid_request_error", "Output blocked by content filtering policy", ex)
        if name == "quota":
            return self.error(
                400, "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API. "
                "Please go to Plans & Billing to upgrade or purchase credits.", ex)
        if name.startswith("rate_limit"):
            return self.error(
                429, "rate_limit_error",
                "This request would exceed your account's rate limit. Please try again later.", ex, headers=self.rate_limit_headers(0))
        if name == "server":
            return self.error(500, "api_error", "Internal server error", ex)
        if name == "overloaded":
            return self.error(529, "overloaded_error", "Overloaded", ex)
        raise ValueError(f"{name} is not an HTTP error fault")

    def in_band_error_reply(self, ex: Exchange) -> Reply:
        # The in-band overloaded_error "would normally correspond to an HTTP
        # 529 in a non-streaming context" (Anthropic streaming docs).
        return self.error_reply(Fault("overloaded"), ex)

    # -- success --------------------------------------------------------------

    def success_headers(self, ex: Exchange) -> dict[str, str]:
        return {"request-id": f"req_{ex.id}", **self.rate_limit_headers(49)}

    def usage(self, ex: Exchange, output_tokens: int) -> dict:
        return {"input_tokens": ex.plan.prompt_tokens, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": output_tokens}

    def message(self, ex: Exchange, content: list, stop_reason: Optional[str], output_tokens: int) -> dict:
        return {"id": ex.id, "type": "message", "role": "assistant", "model": ex.model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": None,
                "usage": self.usage(ex, output_tokens)}

    def completion_body(self, ex: Exchange) -> dict:
        if self.refuses(ex):  # Anthropic says so in stop_reason; content may be empty
            return self.message(ex, [], "refusal", ex.plan.completion_tokens)
        return self.message(ex, [{"type": "text", "text": ex.plan.text}], "end_turn", ex.plan.completion_tokens)

    def stream_head(self, ex: Exchange) -> list[bytes]:
        return [
            sse({"type": "message_start", "message": self.message(ex, [], None, 1)}, "message_start"),
            sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start"),
            sse({"type": "ping"}, "ping"),
        ]

    def stream_piece(self, ex: Exchange, index: int, text: str) -> bytes:
        return sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
                   "content_block_delta")

    def stream_tail(self, ex: Exchange) -> list[bytes]:
        return [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse({"type": "message_delta",
                 "delta": {"stop_reason": "refusal" if self.refuses(ex) else "end_turn", "stop_sequence": None},
                 "usage": {"output_tokens": ex.plan.completion_tokens}}, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]

    def stream_error_frame(self, ex: Exchange) -> bytes:
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")

    def stream_malformed_frame(self, ex: Exchange) -> bytes:
        return sse_data('{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":',
                        "content_block_delta")
