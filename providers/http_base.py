"""The HTTP half of a provider: one pooled session, timeouts, error mapping.

Every `requests` exception and every non-2xx response a provider sees passes
through `map_request_errors` or `HTTPProvider.post`, so each provider
translates its failures in exactly one place (httpx's
`map_httpcore_exceptions` is the model).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

import requests
from requests.adapters import HTTPAdapter

from .base import LLMProvider, resolve_setting
from .error_handling import ErrorClassifier, ProviderError, malformed

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 120.0


@contextmanager
def map_request_errors(provider: str) -> Iterator[None]:
    """Turn any `requests` failure inside the block into a `ProviderError`."""
    try:
        yield
    except ProviderError:
        raise
    except requests.RequestException as exc:
        raise ErrorClassifier.classify_request_error(exc, provider) from None


def normalize_base_url(url: str) -> str:
    """`OLLAMA_HOST` is often 'host:port' or '0.0.0.0'; make it a URL."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if url.startswith("http://0.0.0.0"):
        url = url.replace("0.0.0.0", "127.0.0.1", 1)
    return url


class HTTPProvider(LLMProvider):
    """A provider that speaks HTTP. Subclasses set the URL defaults and headers."""

    base_url_env_var: Optional[str] = None
    default_base_url: str = ""

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__(config)
        self.base_url = normalize_base_url(
            str(resolve_setting(self.config, "base_url", self.base_url_env_var, self.default_base_url))
        )
        self.timeout_s = float(self.config.get("timeout") or DEFAULT_READ_TIMEOUT_S)
        self.connect_timeout_s = float(self.config.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT_S)
        pool_size = int(self.config.get("pool_size") or 32)
        self.session = requests.Session()
        # Retries are the queue's job (with the provider's Retry-After); a
        # transport-level retry here would hide errors and double the wait.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def headers(self) -> Dict[str, str]:
        """Request headers, auth included. Never logged."""
        return {"Content-Type": "application/json"}

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def post(self, path: str, payload: Dict[str, Any], *, stream: bool = False) -> requests.Response:
        """POST JSON; a non-2xx answer is raised as a classified `ProviderError`."""
        with map_request_errors(self.name):
            response = self.session.post(
                self.url(path),
                json=payload,
                headers=self.headers(),
                timeout=(self.connect_timeout_s, self.timeout_s),
                stream=stream,
            )
            if response.status_code >= 400:
                try:
                    raise ErrorClassifier.classify_http_error(response, self.name)
                finally:
                    response.close()
        return response

    def iter_bytes(self, response: requests.Response) -> Iterator[bytes]:
        """The raw body as it arrives; a cut connection becomes a NETWORK_ERROR."""
        with map_request_errors(self.name):
            try:
                for chunk in response.iter_content(chunk_size=None):
                    if chunk:
                        yield chunk
            finally:
                response.close()

    def json_body(self, response: requests.Response) -> Dict[str, Any]:
        """A non-streamed body as a JSON object, or a MALFORMED_RESPONSE error."""
        with map_request_errors(self.name):
            text = response.text
        try:
            data = json.loads(text)
        except ValueError:
            raise malformed(self.name, f"body is not JSON: {text[:120]!r}") from None
        if not isinstance(data, dict):
            raise malformed(self.name, f"body is {type(data).__name__}, expected an object")
        return data

    def close(self) -> None:
        self.session.close()
