"""The HTTP half of a provider: one pooled session, timeouts, error mapping,
and the one request/response flow every HTTP provider shares.

Every `requests` exception and every non-2xx response a provider sees passes
through `map_request_errors` (defined in error_handling, re-exported here) or
`HTTPProvider.post`, so each provider translates its failures in exactly one
place (httpx's `map_httpcore_exceptions` is the model).

`HTTPProvider.complete` and `stream` are written once, here; a provider
supplies only what differs: `request_path`, `build_payload`,
`parse_response` and `stream_parser`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any, Dict, Generator, Iterator, List, Optional

import requests

from .abort import AbortableAdapter
from .base import LLMProvider, Message, ProviderResult, ProviderStream, check_answer, resolve_setting, timed
from .chunked_body import body_chunks
from .error_handling import ErrorClassifier, malformed, map_request_errors
from .rate_limit_info import rate_limit_headers
from .streaming_utils import StreamParser, stream_result_batches

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 120.0


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
        # Abortable: a cancelled job's call is abandoned by closing its
        # connection from another thread (providers.abort).
        adapter = AbortableAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # What requests works out from the environment for this base URL
        # (HTTP(S)_PROXY / NO_PROXY, REQUESTS_CA_BUNDLE), worked out once:
        # per call it walked os.environ and looked for ~/.netrc, a tenth of a
        # worker's CPU per job (py-spy, bench/). It also keeps a ~/.netrc
        # entry from replacing the provider's own Authorization header.
        found = self.session.merge_environment_settings(self.base_url, {}, None, None, None)
        self.session.proxies.update(found.get("proxies") or {})
        self.session.verify = found.get("verify", True)
        self.session.cert = found.get("cert")
        self.session.trust_env = False

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
                # Straight off the socket when the body is plain chunked
                # (chunked_body: cheaper, and chunks read together stay
                # together); urllib3's reader otherwise.
                chunks = body_chunks(response) or response.iter_content(chunk_size=None)
                for chunk in chunks:
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

    # --- what a subclass supplies ----------------------------------------------

    #: Where `complete` and `stream` POST, relative to `base_url`.
    request_path: str = ""

    @abstractmethod
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
        """The JSON body of one call; caller mistakes raise here."""

    @abstractmethod
    def parse_response(self, data: Dict[str, Any], requested_model: str, latency_s: float) -> ProviderResult:
        """A non-streamed answer's JSON body as a `ProviderResult`."""

    @abstractmethod
    def stream_parser(self) -> StreamParser:
        """A fresh parser for one streamed answer."""

    # --- the LLMProvider interface -----------------------------------------

    def complete(
        self,
        model: str,
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Message]] = None,
    ) -> ProviderResult:
        self.require_key()
        payload = self.build_payload(model, prompt, system_prompt, parameters, messages, stream=False)
        elapsed_s = timed()
        response = self.post(self.request_path, payload)
        result = check_answer(self.parse_response(self.json_body(response), model, elapsed_s()))
        result.rate_limit_headers = rate_limit_headers(response.headers)
        return result

    def stream(
        self,
        model: str,
        prompt: Optional[str] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Dict[str, Any]] = None,
        *,
        messages: Optional[List[Message]] = None,
    ) -> ProviderStream:
        # Caller mistakes (no key, bad parameters) raise here, at the call;
        # the request itself is sent when iteration starts.
        self.require_key()
        payload = self.build_payload(model, prompt, system_prompt, parameters, messages, stream=True)
        return ProviderStream(self._stream(payload, model), batched=True)

    def _stream(self, payload: Dict[str, Any], model: str) -> Generator[List[str], None, ProviderResult]:
        elapsed_s = timed()
        response = self.post(self.request_path, payload, stream=True)
        headers = rate_limit_headers(response.headers)
        if _is_json(response):
            result = yield from self._whole_body(response, model, elapsed_s)
        else:
            result = check_answer((yield from stream_result_batches(self.iter_bytes(response), self.stream_parser(),
                                                                    self.name, model, elapsed_s)))
        if result is not None:
            result.rate_limit_headers = headers
        return result

    def _whole_body(self, response: requests.Response, model: str, elapsed_s: Any) -> Generator[List[str], None, ProviderResult]:
        """A stream request answered with one JSON body (gateways such as
        LiteLLM's do this): the complete answer, or the error it carries,
        read exactly like a non-streamed one. A body labelled JSON that is in
        fact SSE/NDJSON goes through the stream parser after all. Yields
        lists of pieces, as `_stream` does."""
        with map_request_errors(self.name):
            body = response.content
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            result = yield from stream_result_batches([body], self.stream_parser(), self.name, model, elapsed_s)
            return check_answer(result)
        result = check_answer(self.parse_response(data, model, elapsed_s()))
        if result.text:
            yield [result.text]
        return result

    def close(self) -> None:
        self.session.close()


def _is_json(response: requests.Response) -> bool:
    """True for `application/json` (or `+json`): not an event stream."""
    media = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
