"""Ollama: local models over Ollama's native /api/chat.

Configuration (each key falls back to its environment variable):

    base_url    OLLAMA_HOST     http://127.0.0.1:11434 ('host:port' and 0.0.0.0 accepted)
    api_key     (config only)   optional; sent as a Bearer token, for Ollama behind a proxy
    keep_alive  (config only)   optional default for how long Ollama keeps the model loaded
    timeout, connect_timeout, pool_size (see http_base)

Wire format (https://github.com/ollama/ollama/blob/main/docs/api.md): `POST
/api/chat` with `stream` true/false and generation settings under `options`
(temperature, top_p, top_k, num_predict, stop, seed, ...). A streamed answer
is NDJSON; the last line has `done: true`, `done_reason`, and the usage
counts `prompt_eval_count` / `eval_count`. An `{"error": "..."}` line can
arrive mid-stream and is raised. The first request for a model may wait while
Ollama loads it, so the default read timeout is generous.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

import requests

from .base import Message, ProviderResult, build_messages
from .error_handling import ErrorCategory, ProviderError, malformed
from .http_base import HTTPProvider
from .params import ollama_params
from .streaming_utils import OllamaStreamParser, StreamParser


# Ollama's own wording for failures the status alone misfiles: a 429 asking
# to upgrade is a spent allowance (retrying will not help), and "server busy"
# 503s are its queue overflowing (OLLAMA_MAX_QUEUE).
_UPGRADE_RE = re.compile(r"usage limit|upgrade", re.I)
_BUSY_RE = re.compile(r"server busy|maximum pending requests", re.I)


def reclassify(err: ProviderError) -> ProviderError:
    """Refine a status-based category using Ollama's error text."""
    text = err.provider_message or ""
    if err.category is ErrorCategory.RATE_LIMIT and _UPGRADE_RE.search(text):
        category, retry_after = ErrorCategory.QUOTA_EXHAUSTED, None
    elif err.category is ErrorCategory.SERVER_ERROR and _BUSY_RE.search(text):
        category, retry_after = ErrorCategory.OVERLOADED, err.retry_after
    else:
        return err
    return ProviderError(
        f"{err.provider} {category.name.lower().replace('_', ' ')} ({err.status_code})",
        category=category,
        status_code=err.status_code,
        provider=err.provider,
        retry_after=retry_after,
        provider_message=err.provider_message,
        error_type=err.error_type,
    )


class OllamaProvider(HTTPProvider):
    name = "ollama"
    display_name = "Ollama"
    key_env_var = None
    needs_key = False
    base_url_env_var = "OLLAMA_HOST"
    default_base_url = "http://127.0.0.1:11434"
    request_path = "api/chat"

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__(config)
        self.keep_alive = self.config.get("keep_alive")

    def headers(self) -> Dict[str, str]:
        headers = super().headers()
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def post(self, path: str, payload: Dict[str, Any], *, stream: bool = False) -> requests.Response:
        try:
            return super().post(path, payload, stream=stream)
        except ProviderError as err:
            raise reclassify(err) from None

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
        top, options = ollama_params(parameters, self.name)
        payload: Dict[str, Any] = {
            "model": model,
            "messages": build_messages(prompt, system_prompt, messages),
            # Ollama streams unless told otherwise, so always say which.
            "stream": stream,
        }
        if self.keep_alive is not None:
            payload["keep_alive"] = self.keep_alive
        payload.update(top)
        if options:
            payload["options"] = options
        return payload

    def parse_response(self, data: Dict[str, Any], requested_model: str, latency_s: float) -> ProviderResult:
        # A non-streamed answer is the stream's one and final line.
        parser = self.stream_parser()
        delta = parser.parse_event(data)
        if not delta.done:
            raise malformed(self.name, "non-streamed answer without done: true")
        return parser.result(delta.content, self.name, requested_model, latency_s)

    def stream_parser(self) -> StreamParser:
        return OllamaStreamParser(self.name)
