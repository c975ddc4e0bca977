"""OpenAI: chat completions at api.openai.com.

Configuration (each key falls back to its environment variable):

    api_key          OPENAI_API_KEY     required
    base_url         OPENAI_BASE_URL    https://api.openai.com/v1
    organization     OPENAI_ORG_ID      optional `OpenAI-Organization` header
    project          OPENAI_PROJECT_ID  optional `OpenAI-Project` header
    timeout, connect_timeout, pool_size (see http_base)

`max_tokens` is sent as `max_completion_tokens`: OpenAI deprecated the old
name, and its reasoning models refuse it. OpenAI has no `top_k`; it is dropped.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .base import resolve_setting
from .openai_compat import OpenAICompatProvider


class OpenAIProvider(OpenAICompatProvider):
    name = "openai"
    display_name = "OpenAI"
    key_env_var = "OPENAI_API_KEY"
    needs_key = True
    base_url_env_var = "OPENAI_BASE_URL"
    default_base_url = "https://api.openai.com/v1"
    max_tokens_field = "max_completion_tokens"
    supports_top_k = False

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__(config)
        self.organization = resolve_setting(self.config, "organization", "OPENAI_ORG_ID")
        self.project = resolve_setting(self.config, "project", "OPENAI_PROJECT_ID")

    def headers(self) -> Dict[str, str]:
        headers = super().headers()
        if self.organization:
            headers["OpenAI-Organization"] = str(self.organization)
        if self.project:
            headers["OpenAI-Project"] = str(self.project)
        return headers
