"""Errors in each dialect's shape, from one exception.

    ApiError(status, message, kind, param, code, retry_after_s)
        ├── openai_body()      {"error": {"message", "type", "param", "code"}}
        └── anthropic_body()   {"type": "error", "error": {"type", "message"}}

Handlers raise `ApiError`; the route wrapper of each dialect renders it
(with `Retry-After` when set). A job that failed on every target becomes an
`ApiError` by its error category (`from_failed_job`): the caller's mistakes
(invalid request, context length, content filter) stay 4xx, a provider's
rate limit or quota stays 429, anything else is 502: the upstream failed,
not the caller.

The SDKs retry 409, 429 and 5xx by themselves, and a retried request is a
new job: an error about a job that already ran (failed, cancelled, or still
running past the request timeout) says `x-should-retry: false`, which both
SDKs obey. promptq's own refusals before anything was submitted (busy,
queue unreachable) stay retryable.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from starlette.responses import Response

from promptq.tasks.job import JobValidationError

# kind -> (OpenAI type, Anthropic type)
_KINDS = {
    "invalid_request": ("invalid_request_error", "invalid_request_error"),
    "authentication": ("invalid_request_error", "authentication_error"),
    "not_found": ("invalid_request_error", "not_found_error"),
    "rate_limit": ("rate_limit_exceeded", "rate_limit_error"),
    "timeout": ("timeout", "timeout_error"),
    "server": ("server_error", "api_error"),
    "overloaded": ("server_error", "overloaded_error"),
}

# error category of a failed job -> (HTTP status, kind)
_CATEGORY_STATUS = {
    "invalid": (400, "invalid_request"),
    "context_length": (400, "invalid_request"),
    "content_filter": (400, "invalid_request"),
    "not_found": (404, "not_found"),
    "rate_limit": (429, "rate_limit"),
    "quota": (429, "rate_limit"),
    "overloaded": (529, "overloaded"),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request", *, param: Optional[str] = None,
                 code: Optional[str] = None, retry_after_s: Optional[float] = None,
                 should_retry: Optional[bool] = None):
        super().__init__(message)
        self.should_retry = should_retry
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def openai_body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": _KINDS[self.kind][0], "param": self.param,
                          "code": self.code}}

    def anthropic_body(self) -> Dict[str, Any]:
        return {"type": "error", "error": {"type": _KINDS[self.kind][1], "message": self.message}}

    def response(self, dialect: str, headers: Optional[Dict[str, str]] = None) -> Response:
        body = self.anthropic_body() if dialect == "anthropic" else self.openai_body()
        headers = dict(headers or {})
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, int(round(self.retry_after_s))))
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return Response(json.dumps(body), status_code=self.status, media_type="application/json", headers=headers)


def invalid_field(exc: JobValidationError, renames: Optional[Dict[str, str]] = None) -> ApiError:
    """400 naming the request's own field for a job the queue refused."""
    name = exc.field
    for ours, theirs in (renames or {}).items():
        if name == ours or name.startswith(ours + ".") or name.startswith(ours + "["):
            name = theirs + name[len(ours):]
            break
    message = str(exc)[len(exc.field) + 2:]
    return ApiError(400, f"{name}: {message}", param=name, code="invalid_value")


def from_failed_job(job_id: str, error: Optional[Dict[str, Any]]) -> ApiError:
    error = error or {}
    category = error.get("category") or "unknown"
    status, kind = _CATEGORY_STATUS.get(category, (502, "server"))
    last = error.get("last_error") or {}
    retry_after = last.get("retry_after_s") if status == 429 else None
    return ApiError(status, f"job {job_id} failed: {error.get('message') or 'failed'}", kind,
                    code=category, retry_after_s=retry_after, should_retry=False)
