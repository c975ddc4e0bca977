"""FakeLlamaServer: llama.cpp's ``llama-server`` OpenAI-compatible endpoint.

Taken from llama.cpp ``tools/server`` (server-context.cpp, server-task.cpp,
server-common.cpp, server-http.cpp); where it differs from api.openai.com:

* errors come from ``format_error_response``:
  ``{"error": {"code": <status>, "message", "type"}}`` with types
  ``invalid_request_error`` 400, ``authentication_error`` 401,
  ``permission_error`` 403, ``not_found_error`` 404, ``server_error`` 500,
  ``not_supported_error`` 501, ``unavailable_error`` 503 and
  ``exceed_context_size_error`` 400 (plus ``n_prompt_tokens`` / ``n_ctx``);
* ``--api-key`` is optional; when set, every endpoint but ``/health``,
  ``/v1/health``, ``/models``, ``/v1/models`` needs ``Authorization: Bearer``,
  else 401 ``Invalid API Key``; with no key nothing is checked;
* responses carry ``timings`` (prompt / predicted counts and speeds): on the
  non-stream body and on the last stream chunk;
* the first stream chunk's delta is ``{"role": "assistant", "content": null}``;
* a failure mid-stream is ``data: {"error": {...}}`` and the stream ends
  without ``[DONE]``;
* ``GET /health`` is ``{"status": "ok"}``, or 503 ``Loading model`` while the
  model loads (set ``loading = True``).

llama-server has no rate limiting, quota or moderation; those faults use 429 /
400 in llama-server's error shape (see ``error_reply``).
"""

from __future__ import annotations

from typing import Any, Optional

from .base import Exchange, RecordedRequest, Reply
from .faults import Fault
from .openai_server import FakeOpenAI
from .wire import sse

PUBLIC_PATHS = {"/health", "/v1/health", "/models", "/v1/models"}


def llama_error(status: int, type_: str, message: str, **extra: Any) -> Reply:
    return Reply(status, {"error": {"code": status, "message": message, "type": type_, **extra}}, {})


class FakeLlamaServer(FakeOpenAI):
    base_path = "/v1"
    default_model = "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    id_prefix = "chatcmpl-fake"
    system_fingerprint = "b6000-fake0001"
    n_ctx = 4096

    def __init__(self, *, api_key: Optional[str] = None, loading: bool = False, **kwargs: Any) -> None:
        super().__init__(api_key=api_key, **kwargs)
        self.loading = loading

    def routes(self):
        return {
            ("POST", "/v1/chat/completions"): self.handle_generation,
            ("POST", "/chat/completions"): self.handle_generation,
            ("GET", "/health"): self.handle_health,
            ("GET", "/v1/health"): self.handle_health,
            ("GET", "/v1/models"): self.handle_models,
            ("GET", "/models"): self.handle_models,
        }

    def handle_health(self, wire, request: RecordedRequest) -> None:
        if self.loading:
            self._send_reply(wire, llama_error(503, "unavailable_error", "Loading model"))
        else:
            wire.send_json(200, {"status": "ok"})

    def handle_models(self, wire, request: RecordedRequest) -> None:
        names = self.models or [self.model]
        wire.send_json(200, {"object": "list", "data": [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "llamacpp",
             "meta": {"n_ctx_train": 32768, "n_params": 494032768}} for name in names
        ]})

    # -- request checks --------------------------------------------------------

    def auth_error(self, request: RecordedRequest) -> Optional[Reply]:
        if self.api_key is None or request.path in PUBLIC_PATHS:
            return None
        if self.bearer(request) == self.api_key:
            return None
        return self.wrong_key("")

    def wrong_key(self, key: str) -> Reply:
        return llama_error(401, "authentication_error", "Invalid API Key")

    def request_error(self, ex: Exchange) -> Optional[Reply]:
        if self.loading:
            return llama_error(503, "unavailable_error", "Loading model")
        if not isinstance(ex.body.get("messages"), list):
            return self.error_reply(Fault("invalid"), ex)
        return None  # a single-model llama-server answers whatever "model" says

    def error_reply(self, fault: Fault, ex: Exchange) -> Reply:
        name = fault.name
        if name == "auth":
            return self.wrong_key("")
        if name == "forbidden":
            return llama_error(403, "permission_error", "Permission denied")              # representative text
        if name == "not_found":
            return llama_error(404, "not_found_error", f"model '{ex.model}' not found")  # router mode
        if name == "invalid":
            return llama_error(400, "invalid_request_error", "'messages' is required")
        if name == "context_length":
            n_prompt = self.n_ctx + 1024
            return llama_error(400, "exceed_context_size_error",
                               f"request ({n_prompt} tokens) exceeds the available context size "
                               f"({self.n_ctx} tokens), try increasing it",
                               n_prompt_tokens=n_prompt, n_ctx=self.n_ctx)
        if name == "content_filter":
            return llama_error(400, "invalid_request_error", "content filtered")        # no real analogue
        if name == "quota":
            return llama_error(429, "rate_limit_error", "quota exceeded")                # no real analogue
        if name.startswith("rate_limit"):
            return llama_error(429, "rate_limit_error", "Too Many Requests")            # no real analogue
        if name == "server":
            return llama_error(500, "server_error", "Internal Server Error")
        if name == "overloaded":
            return llama_error(503, "unavailable_error", "Loading model")
        raise ValueError(f"{name} is not an HTTP error fault")

    # -- success -------------------------------------------------------------------

    def success_headers(self, ex: Exchange) -> dict[str, str]:
        return {}

    def usage(self, ex: Exchange) -> dict:
        p, c = ex.plan.prompt_tokens, ex.plan.completion_tokens
        return {"completion_tokens": c, "prompt_tokens": p, "total_tokens": p + c,
                "prompt_tokens_details": {"cached_tokens": 0}}

    def timings(self, ex: Exchange) -> dict:
        p, c = ex.plan.prompt_tokens, ex.plan.completion_tokens
        return {"cache_n": 0,
                "prompt_n": p, "prompt_ms": 2.0 * p, "prompt_per_token_ms": 2.0, "prompt_per_second": 500.0,
                "predicted_n": c, "predicted_ms": 10.0 * c, "predicted_per_token_ms": 10.0,
                "predicted_per_second": 100.0}

    def envelope(self, ex: Exchange, obj: str) -> dict:
        return {"created": ex.created, "model": ex.model, "system_fingerprint": self.system_fingerprint,
                "object": obj, "id": ex.id}

    def completion_body(self, ex: Exchange) -> dict:
        body = self.envelope(ex, "chat.completion")
        body["choices"] = [{"finish_reason": "stop", "index": 0,
                            "message": {"role": "assistant", "content": ex.plan.text}}]
        body["usage"] = self.usage(ex)
        body["timings"] = self.timings(ex)
        return body

    def choice(self, delta: dict, finish_reason: Optional[str] = None) -> dict:
        return {"finish_reason": finish_reason, "index": 0, "delta": delta}

    def chunk(self, ex: Exchange, choices: list, usage: Any = None) -> dict:
        body = self.envelope(ex, "chat.completion.chunk")
        body["choices"] = choices
        if usage is not None:
            body["usage"] = usage
        return body

    def stream_head(self, ex: Exchange) -> list[bytes]:
        return [sse(self.chunk(ex, [self.choice({"role": "assistant", "content": None})]))]

    def stream_tail(self, ex: Exchange) -> list[bytes]:
        chunks = [self.chunk(ex, [self.choice({}, "stop")])]
        if self.include_usage(ex):
            chunks.append(self.chunk(ex, [], usage=self.usage(ex)))
        chunks[-1]["timings"] = self.timings(ex)
        return [sse(c) for c in chunks] + [b"data: [DONE]\n\n"]

    def stream_error_frame(self, ex: Exchange) -> bytes:
        return sse({"error": {"code": 500, "message": "Internal Server Error", "type": "server_error"}})
