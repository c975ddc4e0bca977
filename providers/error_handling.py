"""Every failure that leaves a provider, as one exception with a category.

The taxonomy, and what the queue does with each category::

    ProviderError (RuntimeError)
     ├─ retryable: the queue waits `retry_after` (or a backoff) and tries again
     │   ├─ RATE_LIMIT        429 "slow down"            Retry-After honoured
     │   ├─ OVERLOADED        Anthropic 529, "overloaded" in-band error
     │   ├─ SERVER_ERROR      5xx, 409 conflict
     │   └─ NETWORK_ERROR     connect/read timeout, reset, stream cut short, 408
     └─ not retryable: the queue fails over to the next provider's queue
         ├─ AUTH_ERROR        401, 403 permission
         ├─ QUOTA_EXHAUSTED   429 insufficient_quota, 402, "credit balance too low"
         ├─ NOT_FOUND         404 (usually an unknown model)
         ├─ INVALID_REQUEST   400, 413, 422
         ├─ CONTEXT_LENGTH    prompt longer than the model's context window
         ├─ CONTENT_FILTER    refused by the provider's moderation
         ├─ MALFORMED_RESPONSE the provider answered something we cannot parse
         └─ UNKNOWN           anything else

The seed guide's API (`ErrorCategory`, `ProviderError`, `ErrorClassifier`) is
kept; its defects are not: a `requests.Response` is falsy for 4xx/5xx (so it
is compared with `is not None`), and `Retry-After` is read as seconds, as an
HTTP-date, from `retry-after-ms` and from the vendors' rate-limit reset
headers, then capped.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from enum import Enum
from typing import Any, Iterator, Mapping, Optional

import requests

# Re-exported: the seed's callers import everything from this module.
from .retry_after import MAX_RETRY_AFTER_S, parse_retry_after  # noqa: F401
from .secrets import redact, register_secret  # noqa: F401

logger = logging.getLogger(__name__)



class ErrorCategory(Enum):
    """Error classification; the value is what travels in job records."""

    AUTH_ERROR = "auth"
    RATE_LIMIT = "rate_limit"
    NOT_FOUND = "not_found"
    INVALID_REQUEST = "invalid"
    SERVER_ERROR = "server"
    NETWORK_ERROR = "network"
    UNKNOWN = "unknown"
    CONTEXT_LENGTH = "context_length"
    CONTENT_FILTER = "content_filter"
    QUOTA_EXHAUSTED = "quota"
    OVERLOADED = "overloaded"
    MALFORMED_RESPONSE = "malformed_response"


RETRYABLE_CATEGORIES = frozenset(
    {
        ErrorCategory.RATE_LIMIT,
        ErrorCategory.OVERLOADED,
        ErrorCategory.SERVER_ERROR,
        ErrorCategory.NETWORK_ERROR,
    }
)


class ProviderError(RuntimeError):
    """A classified provider failure.

    `message` is ours and says what happened; `provider_message` is the
    provider's own words from the body, kept because it is what an operator
    searches for. Both are redacted. `retry_after` is seconds (float) or None
    when the provider gave no hint and the caller should back off itself.
    """

    def __init__(
        self,
        message: str,
        category: ErrorCategory = ErrorCategory.UNKNOWN,
        status_code: Optional[int] = None,
        provider: Optional[str] = None,
        retryable: Optional[bool] = None,
        retry_after: Optional[float] = None,
        *,
        provider_message: Optional[str] = None,
        error_type: Optional[str] = None,
    ):
        self.message = redact(message)
        self.category = category
        self.status_code = status_code
        self.provider = provider
        self.retryable = category in RETRYABLE_CATEGORIES if retryable is None else retryable
        self.retry_after = retry_after
        self.provider_message = redact(provider_message) if provider_message else None
        self.error_type = error_type
        #: The response's rate-limit headers (providers.rate_limit_info), set
        #: for HTTP errors; the queue's pacing reads them. Not in to_dict.
        self.rate_limit_headers: dict[str, str] = {}
        super().__init__(self.message)

    @property
    def retry_after_s(self) -> Optional[float]:
        return self.retry_after

    def __str__(self) -> str:
        if self.provider_message and self.provider_message not in self.message:
            return f"{self.message}: {self.provider_message}"
        return self.message

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.provider}, {self.category.value}, "
            f"status={self.status_code}, retryable={self.retryable})"
        )

    def __reduce__(self):
        # Keeps the error picklable for Celery's result machinery and
        # multiprocessing, with keyword-only fields preserved.
        return (_rebuild_provider_error, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for job records and stream events."""
        return {
            "message": self.message,
            "category": self.category.value,
            "status_code": self.status_code,
            "provider": self.provider,
            "retryable": self.retryable,
            "retry_after_s": self.retry_after,
            "provider_message": self.provider_message,
            "error_type": self.error_type,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProviderError":
        return cls(
            data.get("message", "provider error"),
            category=ErrorCategory(data.get("category", "unknown")),
            status_code=data.get("status_code"),
            provider=data.get("provider"),
            retryable=data.get("retryable"),
            retry_after=data.get("retry_after_s"),
            provider_message=data.get("provider_message"),
            error_type=data.get("error_type"),
        )


def _rebuild_provider_error(data: Mapping[str, Any]) -> ProviderError:
    return ProviderError.from_dict(data)


# --- response inspection ---------------------------------------------------


def _body(response: Any) -> tuple[Optional[dict], Optional[str]]:
    """The response body as (JSON object or None, text or None)."""
    text = None
    try:
        raw = response.text
        text = raw if isinstance(raw, str) else None
    except Exception:
        text = None
    data = None
    if text:
        try:
            parsed = json.loads(text)
            data = parsed if isinstance(parsed, dict) else None
        except ValueError:
            data = None
    return data, text


def error_details(payload: Any) -> tuple[Optional[str], Optional[str]]:
    """(provider message, vendor error type/code) from any vendor's error JSON.

    OpenAI/OpenRouter/llama-server: {"error": {"message", "type", "code"}};
    Anthropic: {"type": "error", "error": {"type", "message"}};
    Ollama: {"error": "text"}.
    """
    if not isinstance(payload, Mapping):
        return None, None
    err = payload.get("error", payload)
    if isinstance(err, str):
        return err, None
    if not isinstance(err, Mapping):
        return None, None
    message = err.get("message")
    code = err.get("code")
    etype = err.get("type")
    kind = None
    for candidate in (code, etype):
        if isinstance(candidate, str) and candidate:
            kind = candidate
            break
    metadata = err.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("reasons") and kind is None:
        kind = "moderation"
    return (str(message) if message is not None else None), kind


_CONTEXT_RE = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|"
    r"too many tokens|exceeds? (the )?(available )?context|exceed_context_size|n_ctx",
    re.I,
)
_FILTER_RE = re.compile(r"content[_ ]filter|content[_ ]policy|moderation|flagged|safety", re.I)
_QUOTA_RE = re.compile(
    r"insufficient[_ ]quota|credit balance|insufficient credits|billing|exceeded your current quota|quota",
    re.I,
)
_OVERLOAD_RE = re.compile(r"overloaded", re.I)
#: OpenAI's codes/types that say "slow down" whatever the message adds. The
#: generic `rate_limit_error` (Anthropic, llama-server) is not here: a
#: llama-server quota error carries it too, so there the words still decide.
_RATE_LIMIT_KINDS = frozenset({"rate_limit_exceeded", "requests", "tokens"})

# Anthropic's error types, mapped to the status they stand for, so an in-band
# `event: error` classifies exactly like the HTTP error it replaces.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "billing_error": 402,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def categorize(
    status: Optional[int], kind: Optional[str], message: Optional[str]
) -> ErrorCategory:
    """The category for an error given its status, vendor type/code and text."""
    text = " ".join(filter(None, [kind or "", message or ""]))
    if status is None and kind in _TYPE_STATUS:
        status = _TYPE_STATUS[kind]
    # The vendor's code/type decides before any words in the message: a real
    # OpenAI `rate_limit_exceeded` can end with "add a payment method ...
    # /account/billing", and it still means "slow down", not "out of quota".
    if kind in _RATE_LIMIT_KINDS and status in (429, None):
        return ErrorCategory.RATE_LIMIT
    if kind in ("context_length_exceeded", "exceed_context_size_error") or (
        status in (400, 413, 422, None) and _CONTEXT_RE.search(text)
    ):
        return ErrorCategory.CONTEXT_LENGTH
    if kind in ("content_filter", "content_policy_violation", "moderation") or (
        status in (400, 403, None) and _FILTER_RE.search(text)
    ):
        return ErrorCategory.CONTENT_FILTER
    if status == 402 or kind in ("insufficient_quota", "billing_error") or (
        status in (400, 403, 429, None) and _QUOTA_RE.search(text)
    ):
        return ErrorCategory.QUOTA_EXHAUSTED
    if status == 529 or kind == "overloaded_error" or (
        status in (503, None) and _OVERLOAD_RE.search(text)
    ):
        return ErrorCategory.OVERLOADED
    if status in (401, 403):
        return ErrorCategory.AUTH_ERROR
    if status == 429:
        return ErrorCategory.RATE_LIMIT
    if status == 404:
        return ErrorCategory.NOT_FOUND
    if status in (400, 413, 422):
        return ErrorCategory.INVALID_REQUEST
    if status == 408:
        return ErrorCategory.NETWORK_ERROR
    if status is not None and (status == 409 or 500 <= status < 600):
        return ErrorCategory.SERVER_ERROR
    return ErrorCategory.UNKNOWN


_SUMMARY = {
    ErrorCategory.AUTH_ERROR: "authentication failed",
    ErrorCategory.RATE_LIMIT: "rate limit exceeded",
    ErrorCategory.NOT_FOUND: "resource not found",
    ErrorCategory.INVALID_REQUEST: "invalid request",
    ErrorCategory.SERVER_ERROR: "server error",
    ErrorCategory.NETWORK_ERROR: "network error",
    ErrorCategory.CONTEXT_LENGTH: "context length exceeded",
    ErrorCategory.CONTENT_FILTER: "content filtered",
    ErrorCategory.QUOTA_EXHAUSTED: "quota or billing exhausted",
    ErrorCategory.OVERLOADED: "overloaded",
    ErrorCategory.MALFORMED_RESPONSE: "malformed response",
    ErrorCategory.UNKNOWN: "error",
}


def error_from_payload(
    payload: Any,
    provider: str,
    *,
    status_code: Optional[int] = None,
    headers: Any = None,
) -> ProviderError:
    """Classify an error object: an HTTP error body or an error inside a stream."""
    provider_message, kind = error_details(payload)
    category = categorize(status_code, kind, provider_message)
    retry_after = parse_retry_after(headers) if category in RETRYABLE_CATEGORIES else None
    where = f" ({status_code})" if status_code is not None else ""
    return ProviderError(
        f"{provider} {_SUMMARY[category]}{where}",
        category=category,
        status_code=status_code,
        provider=provider,
        retry_after=retry_after,
        provider_message=provider_message,
        error_type=kind,
    )


class ErrorClassifier:
    """Classifies errors consistently (the seed guide's entry points)."""

    @staticmethod
    def classify_http_error(response: requests.Response, provider: str = "unknown") -> ProviderError:
        """Classify a non-2xx HTTP response by status, vendor error type and body."""
        from .rate_limit_info import rate_limit_headers

        status = response.status_code if isinstance(response.status_code, int) else None
        data, text = _body(response)
        error = error_from_payload(data, provider, status_code=status, headers=response.headers)
        if data is None and text:
            error.provider_message = redact(text.strip()[:500])
        error.rate_limit_headers = rate_limit_headers(response.headers)
        return error

    @staticmethod
    def classify_request_error(
        error: requests.RequestException, provider: str = "unknown"
    ) -> ProviderError:
        """Classify a `requests` exception: timeouts, resets, cut-short streams."""
        response = getattr(error, "response", None)
        if response is not None:
            return ErrorClassifier.classify_http_error(response, provider)
        if isinstance(error, requests.Timeout):
            what = "request timeout"
        elif isinstance(error, requests.ConnectionError):
            what = "connection error"
        elif isinstance(
            error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)
        ):
            what = "connection dropped mid-response"
        else:
            return ProviderError(
                f"{provider} request failed: {type(error).__name__}",
                category=ErrorCategory.UNKNOWN,
                provider=provider,
                retryable=False,
                provider_message=str(error) or None,
            )
        return ProviderError(
            f"{provider} {what}",
            category=ErrorCategory.NETWORK_ERROR,
            provider=provider,
            retryable=True,
            provider_message=str(error) or None,
        )


@contextmanager
def map_request_errors(provider: str) -> Iterator[None]:
    """Turn any `requests` failure inside the block into a `ProviderError`."""
    try:
        yield
    except ProviderError:
        raise
    except requests.RequestException as exc:
        raise ErrorClassifier.classify_request_error(exc, provider) from None


def malformed(provider: str, what: str) -> ProviderError:
    """A response we cannot parse. Not retryable: the same bytes would come back."""
    return ProviderError(
        f"{provider} malformed response: {what}",
        category=ErrorCategory.MALFORMED_RESPONSE,
        provider=provider,
        retryable=False,
    )


def truncated(provider: str, what: str = "stream ended before its terminator") -> ProviderError:
    """A stream that stopped early: the connection, not the request, failed."""
    return ProviderError(
        f"{provider} {what}",
        category=ErrorCategory.NETWORK_ERROR,
        provider=provider,
        retryable=True,
    )
