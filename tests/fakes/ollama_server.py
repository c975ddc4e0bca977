"""FakeOllama: Ollama's native chat API (``POST /api/chat``, ``GET /api/tags``).

Wire format (ollama docs/api.md "Generate a chat completion", docs/api/errors):

* streaming is the default: ``application/x-ndjson``, one JSON object per
  line, ``{"model", "created_at", "message": {"role", "content"}, "done": false}``
  per piece, then a final ``done: true`` line with ``done_reason`` and the
  stats ``total_duration``, ``load_duration``, ``prompt_eval_count``,
  ``prompt_eval_duration``, ``eval_count``, ``eval_duration`` (nanoseconds);
* ``"stream": false`` returns a single such object holding the whole message;
* errors are ``{"error": "<message>"}``; a failure after streaming started
  keeps the 200 and arrives as a line holding only ``{"error": ...}`` (no
  ``done`` field), after which the stream ends;
* there is no authentication on a local server.

Ollama has no moderation, quota or credit errors of its own; for those faults
this fake answers with the nearest status Ollama documents (400 / 429) in
Ollama's error shape - see ``error_reply``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Optional

from .base import Exchange, FakeServer, RecordedRequest, Reply
from .faults import Fault
from .wire import ndjson


def ollama_error(status: int, message: str, headers: Optional[dict] = None) -> Reply:
    return Reply(status, {"error": message}, headers or {})


def created_at() -> str:
    # Go's RFC3339Nano, as Ollama writes it.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class FakeOllama(FakeServer):
    base_path = ""
    default_model = "llama3.2:latest"
    stream_content_type = "application/x-ndjson"
    json_content_type = "application/json; charset=utf-8"
    error_content_type = "application/json; charset=utf-8"

    def routes(self):
        return {
            ("POST", "/api/chat"): self.handle_generation,
            ("GET", "/api/tags"): self.handle_tags,
            ("GET", "/"): self.handle_root,
        }

    def handle_root(self, wire, request: RecordedRequest) -> None:
        wire.send_bytes(200, b"Ollama is running", "text/plain; charset=utf-8")

    def handle_tags(self, wire, request: RecordedRequest) -> None:
        names = self.models or [self.model]
        wire.send_json(200, {"models": [{
            "name": name, "model": name, "modified_at": "2025-01-01T00:00:00.000000000Z",
            "size": 2019393189, "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                        "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
        } for name in names]}, content_type=self.json_content_type)

    def wants_stream(self, body: dict) -> bool:
        return body.get("stream", True) is not False  # Ollama streams unless told not to

    # -- request checks ------------------------------------------------------

    def auth_error(self, request: RecordedRequest) -> Optional[Reply]:
        # Local Ollama has no auth; an api_key models a reverse proxy / ollama.com.
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return ollama_error(401, "unauthorized")
        return None

    def request_error(self, ex: Exchange) -> Optional[Reply]:
        if not ex.body.get("model"):
            return ollama_error(400, "model is required")
        if self.models is not None and ex.model not in self.models:
            return self.error_reply(Fault("not_found"), ex)
        return None

    def error_reply(self, fault: Fault, ex: Exchange) -> Reply:
        name = fault.name
        if name == "auth":
            return ollama_error(401, "unauthorized")
        if name == "forbidden":
            return ollama_error(403, "access to this model is forbidden")          # representative text
        if name == "not_found":
            return ollama_error(404, f'model "{ex.model}" not found, try pulling it first')
        if name == "invalid":
            return ollama_error(400, "model is required")
        if name == "context_length":
            return ollama_error(400, "the input length exceeds the context length")
        if name == "content_filter":
            return ollama_error(400, "the request was blocked by a content filter")  # no real analogue
        if name == "quota":
            return ollama_error(429, "you have reached your usage limit, please upgrade to continue")
        if name.startswith("rate_limit"):
            return ollama_error(429, "too many requests, please try again later")
        if name == "server":
            return ollama_error(500, "llama runner process has terminated: exit status 2")
        if name == "overloaded":
            return ollama_error(503, "server busy, please try again.  maximum pending requests exceeded")
        raise ValueError(f"{name} is not an HTTP error fault")

    def in_band_error_reply(self, ex: Exchange) -> Reply:
        return ollama_error(500, "an error was encountered while running the model")

    # -- success ----------------------------------------------------------------

    def line(self, ex: Exchange, content: str, done: bool) -> dict:
        return {"model": ex.model, "created_at": created_at(),
                "message": {"role": "assistant", "content": content}, "done": done}

    def final(self, ex: Exchange, content: str) -> dict:
        body = self.line(ex, content, True)
        pieces = max(1, len(ex.plan.pieces))
        body.update({
            "done_reason": "stop",
            "total_duration": 1_000_000 * (5 + pieces), "load_duration": 1_000_000,
            "prompt_eval_count": ex.plan.prompt_tokens, "prompt_eval_duration": 2_000_000,
            "eval_count": ex.plan.completion_tokens, "eval_duration": 1_000_000 * pieces,
        })
        return body

    def completion_body(self, ex: Exchange) -> dict:
        return self.final(ex, ex.plan.text)

    def stream_piece(self, ex: Exchange, index: int, text: str) -> bytes:
        return ndjson(self.line(ex, text, False))

    def stream_tail(self, ex: Exchange) -> list[bytes]:
        return [ndjson(self.final(ex, ""))]

    def stream_error_frame(self, ex: Exchange) -> bytes:
        return ndjson({"error": "an error was encountered while running the model"})

    def stream_malformed_frame(self, ex: Exchange) -> bytes:
        return f'{{"model":"{ex.model}","created_at":"{created_at()}","message":{{"role":"assistant","content":\n'.encode()
