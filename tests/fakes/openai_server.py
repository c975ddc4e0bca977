"""FakeOpenAI: the OpenAI Chat Completions API (``/v1/chat/completions``).

Wire format (OpenAI API reference, "Chat Completions" / "streaming"):

* non-stream: one ``chat.completion`` object with ``choices[].message`` and
  ``usage``;
* stream: ``data: {chat.completion.chunk}`` SSE events - a first chunk whose
  delta carries the role, one chunk per content delta, a chunk with an empty
  delta and ``finish_reason``; with ``stream_options.include_usage`` every
  chunk carries ``"usage": null`` and one more chunk with ``"choices": []``
  and the usage follows; the stream ends with ``data: [DONE]``;
* errors: ``{"error": {"message", "type", "param", "code"}}``; a failure after
  the 200 arrives in-band as ``data: {"error": {...}}`` (no ``[DONE]``).

FakeOpenRouter and FakeLlamaServer reuse this class: both speak the same
chunk protocol and differ in envelopes, errors and extras.
"""

from __future__ import annotations

from typing import Any, Optional

from .base import Exchange, FakeServer, RecordedRequest, Reply
from .faults import Fault
from .wire import sse, sse_data

_NO_USAGE = object()

OPENAI_KEYS_URL = "https://platform.openai.com/account/api-keys"


def openai_error(status: int, message: str, type_: str, code: Optional[str] = None,
                 param: Optional[str] = None, headers: Optional[dict] = None) -> Reply:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Reply(status, body, headers or {})


def mask_key(key: str) -> str:
    """OpenAI echoes a wrong key with its middle starred out."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


class FakeOpenAI(FakeServer):
    base_path = "/v1"
    default_model = "gpt-4o-mini"
    id_prefix = "chatcmpl-fake"
    system_fingerprint = "fp_fake0001"

    def __init__(self, *, api_key: Optional[str] = "sk-test", **kwargs: Any) -> None:
        super().__init__(api_key=api_key, **kwargs)

    # -- routes ----------------------------------------------------------------

    def routes(self):
        return {
            ("POST", "/v1/chat/completions"): self.handle_generation,
            ("GET", "/v1/models"): self.handle_models,
        }

    def handle_models(self, wire, request: RecordedRequest) -> None:
        denied = self.auth_error(request)
        if denied is not None:
            self._send_reply(wire, denied)
            return
        names = self.models or [self.model]
        wire.send_json(200, {"object": "list", "data": [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "system"} for name in names
        ]})

    # -- request checks ----------------------------------------------------------

    def bearer(self, request: RecordedRequest) -> Optional[str]:
        value = request.headers.get("authorization", "")
        return value[len("Bearer "):] if value.startswith("Bearer ") else None

    def auth_error(self, request: RecordedRequest) -> Optional[Reply]:
        if self.api_key is None:
            return None
        key = self.bearer(request)
        if not key:
            return openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
                "field (with blank username) if you're accessing the API from your browser and are "
                f"prompted for a username. You can obtain an API key from {OPENAI_KEYS_URL}.",
                "invalid_request_error",
            )
        if key != self.api_key:
            return self.wrong_key(key)
        return None

    def wrong_key(self, key: str) -> Reply:
        return openai_error(
            401, f"Incorrect API key provided: {mask_key(key)}. You can find your API key at {OPENAI_KEYS_URL}.",
            "invalid_request_error", code="invalid_api_key",
        )

    def request_error(self, ex: Exchange) -> Optional[Reply]:
        if not isinstance(ex.body.get("messages"), list):
            return self.error_reply(Fault("invalid"), ex)
        if self.models is not None and ex.model not in self.models:
            return self.error_reply(Fault("not_found"), ex)
        return None

    # -- errors -------------------------------------------------------------------

    def rate_limit_headers(self, remaining_requests: int = 0) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": str(remaining_requests),
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "199000",
            "x-ratelimit-reset-tokens": "300ms",
        }

    def error_reply(self, fault: Fault, ex: Exchange) -> Reply:
        name, model = fault.name, ex.model
        if name == "auth":
            return self.wrong_key(self.bearer(ex.request) or "sk-wrong-key")
        if name == "forbidden":
            return openai_error(403, "Country, region, or territory not supported",
                                "request_forbidden", code="unsupported_country_region_territory")
        if name == "not_found":
            return openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                                "invalid_request_error", code="model_not_found")
        if name == "invalid":
            return openai_error(400, "Missing required parameter: 'messages'.", "invalid_request_error",
                                code="missing_required_parameter", param="messages")
        if name == "context_length":
            return openai_error(
                400, "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 130000 tokens. Please reduce the length of the messages.",
                "invalid_request_error", code="context_length_exceeded", param="messages")
        if name == "content_filter":
            return openai_error(
                400, "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
                "Please try again with a different prompt: "
                "https://platform.openai.com/docs/guides/reasoning#advice-on-prompting",
                "invalid_request_error", code="invalid_prompt")
        if name == "quota":
            return openai_error(
                429, "You exceeded your current quota, please check your plan and billing details. For "
                "more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota", code="insufficient_quota")
        if name.startswith("rate_limit"):
            return openai_error(
                429, f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
                "Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit "
                "https://platform.openai.com/account/rate-limits to learn more.",
                "requests", code="rate_limit_exceeded", headers=self.rate_limit_headers(0))
        if name == "server":
            return openai_error(500, "The server had an error while processing your request. Sorry about that!",
                                "server_error")
        if name == "overloaded":
            return openai_error(503, "The engine is currently overloaded, please try again later.",
                                "server_error")
        raise ValueError(f"{name} is not an HTTP error fault")

    # -- success --------------------------------------------------------------

    def success_headers(self, ex: Exchange) -> dict[str, str]:
        return {"x-request-id": f"req_{ex.id}", "openai-version": "2020-10-01",
                **self.rate_limit_headers(499)}

    def usage(self, ex: Exchange) -> dict:
        p, c = ex.plan.prompt_tokens, ex.plan.completion_tokens
        return {
            "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }

    def include_usage(self, ex: Exchange) -> bool:
        options = ex.body.get("stream_options") or {}
        return bool(isinstance(options, dict) and options.get("include_usage"))

    def envelope(self, ex: Exchange, obj: str) -> dict:
        return {"id": ex.id, "object": obj, "created": ex.created, "model": ex.model,
                "service_tier": "default", "system_fingerprint": self.system_fingerprint}

    def completion_body(self, ex: Exchange) -> dict:
        body = self.envelope(ex, "chat.completion")
        refused = self.refuses(ex)
        body["choices"] = [{
            "index": 0,
            # A refusal comes with content null and finish_reason "stop".
            "message": {"role": "assistant", "content": None if refused else ex.plan.text,
                        "refusal": self.refusal_text if refused else None, "annotations": []},
            "logprobs": None, "finish_reason": "stop",
        }]
        body["usage"] = self.usage(ex)
        return body

    # -- stream ----------------------------------------------------------------

    def chunk(self, ex: Exchange, choices: list, usage: Any = _NO_USAGE) -> dict:
        body = self.envelope(ex, "chat.completion.chunk")
        body["choices"] = choices
        if usage is not _NO_USAGE:
            body["usage"] = usage
        elif self.include_usage(ex):
            body["usage"] = None  # "All other chunks will also include a usage field, but with a null value"
        return body

    def choice(self, delta: dict, finish_reason: Optional[str] = None) -> dict:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def stream_head(self, ex: Exchange) -> list[bytes]:
        return [sse(self.chunk(ex, [self.choice({"role": "assistant", "content": "", "refusal": None})]))]

    def stream_piece(self, ex: Exchange, index: int, text: str) -> bytes:
        if self.refuses(ex):  # the refusal streams in `delta.refusal` pieces, in place of content
            return sse(self.chunk(ex, [self.choice({"refusal": self.refusal_text if index == 0 else ""})]))
        return sse(self.chunk(ex, [self.choice({"content": text})]))

    def stream_tail(self, ex: Exchange) -> list[bytes]:
        frames = [sse(self.chunk(ex, [self.choice({}, "stop")]))]
        if self.include_usage(ex):
            frames.append(sse(self.chunk(ex, [], usage=self.usage(ex))))
        frames.append(sse_data("[DONE]"))
        return frames

    def stream_error_frame(self, ex: Exchange) -> bytes:
        # As captured from api.openai.com mid-stream: message and type only.
        return sse({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                              "type": "server_error"}})

    def stream_malformed_frame(self, ex: Exchange) -> bytes:
        return sse_data(f'{{"id":"{ex.id}","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":')
