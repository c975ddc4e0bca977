"""OpenRouter: many vendors' models behind one OpenAI-style API.

Configuration (each key falls back to its environment variable):

    api_key          OPENROUTER_API_KEY   required
    base_url         OPENROUTER_BASE_URL  https://openrouter.ai/api/v1
    http_referer     (config only)        `HTTP-Referer` app-attribution header
    app_title        (config only)        `X-Title` / `X-OpenRouter-Title` header
    timeout, connect_timeout, pool_size (see http_base)

Models are named `vendor/model` (`anthropic/claude-sonnet-4`); the result
reports the model OpenRouter actually routed to. Streams carry
`: OPENROUTER PROCESSING` keep-alive comments (ignored by the SSE decoder) and
report errors that happen after the 200 as a chunk with a top-level `error`
whose `code` is the HTTP status it stands for (raised, classified by it).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .openai_compat import OpenAICompatProvider


class OpenRouterProvider(OpenAICompatProvider):
    name = "openrouter"
    display_name = "OpenRouter"
    key_env_var = "OPENROUTER_API_KEY"
    needs_key = True
    base_url_env_var = "OPENROUTER_BASE_URL"
    default_base_url = "https://openrouter.ai/api/v1"

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__(config)
        self.http_referer = self.config.get("http_referer")
        self.app_title = self.config.get("app_title")

    def headers(self) -> Dict[str, str]:
        headers = super().headers()
        if self.http_referer:
            headers["HTTP-Referer"] = str(self.http_referer)
        if self.app_title:
            # X-OpenRouter-Title is the current name; X-Title the older one
            # OpenRouter still honours.
            headers["X-OpenRouter-Title"] = str(self.app_title)
            headers["X-Title"] = str(self.app_title)
        return headers
