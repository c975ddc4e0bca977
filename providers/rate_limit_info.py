"""What a provider said about its rate limits, read from one response's headers.

OpenAI, OpenRouter and llama-server send ``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` (a
duration: ``1s``, ``6m0s``, ``20ms``) and the same for ``-tokens``.
Anthropic sends ``anthropic-ratelimit-requests-limit / -remaining / -reset``
(an RFC 3339 time) and the same for ``tokens`` (or, when only those are
sent, ``input-tokens``). The queue learns limits from these (tasks.pacing);
this module only reads them, so it stays free of Redis and Celery.

Limits are taken as per minute: that is what OpenAI's and Anthropic's
``limit`` headers state for requests and tokens.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from .retry_after import _header, _parse_duration_s, _seconds_until, parse_retry_after

#: Header name prefixes worth keeping from a response (everything else is dropped).
_KEPT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after")


@dataclass(frozen=True)
class RateLimitInfo:
    """One response's view of the budget; None where the provider did not say."""

    limit_requests: Optional[float] = None
    remaining_requests: Optional[float] = None
    reset_requests_s: Optional[float] = None
    limit_tokens: Optional[float] = None
    remaining_tokens: Optional[float] = None
    reset_tokens_s: Optional[float] = None
    retry_after_s: Optional[float] = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def to_dict(self) -> Dict[str, Optional[float]]:
        return asdict(self)


def _number(headers: Any, name: str) -> Optional[float]:
    value = _header(headers, name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def rate_limit_headers(headers: Any) -> Dict[str, str]:
    """The rate-limit headers of a response, lower-cased (small, JSON-safe, no secrets)."""
    if headers is None:
        return {}
    try:
        items = list(headers.items())
    except Exception:
        return {}
    return {
        str(k).lower(): str(v) for k, v in items
        if isinstance(k, str) and k.lower().startswith(_KEPT_PREFIXES)
    }


def parse_rate_limit_info(headers: Any, *, now: Optional[float] = None) -> RateLimitInfo:
    """Read every vendor's rate-limit headers; unknown or malformed ones are ignored."""
    now = time.time() if now is None else now
    if not headers:
        return RateLimitInfo()
    if _header(headers, "anthropic-ratelimit-requests-limit") or _header(headers, "anthropic-ratelimit-tokens-limit") \
            or _header(headers, "anthropic-ratelimit-input-tokens-limit"):
        tokens = "tokens" if _header(headers, "anthropic-ratelimit-tokens-limit") else "input-tokens"

        def reset(kind: str) -> Optional[float]:
            value = _header(headers, f"anthropic-ratelimit-{kind}-reset")
            seconds = _seconds_until(value, now) if value else None
            return max(0.0, seconds) if seconds is not None else None

        return RateLimitInfo(
            limit_requests=_number(headers, "anthropic-ratelimit-requests-limit"),
            remaining_requests=_number(headers, "anthropic-ratelimit-requests-remaining"),
            reset_requests_s=reset("requests"),
            limit_tokens=_number(headers, f"anthropic-ratelimit-{tokens}-limit"),
            remaining_tokens=_number(headers, f"anthropic-ratelimit-{tokens}-remaining"),
            reset_tokens_s=reset(tokens),
            retry_after_s=_retry_after(headers, now),
        )

    def duration(name: str) -> Optional[float]:
        value = _header(headers, name)
        return _parse_duration_s(value) if value else None

    return RateLimitInfo(
        limit_requests=_number(headers, "x-ratelimit-limit-requests"),
        remaining_requests=_number(headers, "x-ratelimit-remaining-requests"),
        reset_requests_s=duration("x-ratelimit-reset-requests"),
        limit_tokens=_number(headers, "x-ratelimit-limit-tokens"),
        remaining_tokens=_number(headers, "x-ratelimit-remaining-tokens"),
        reset_tokens_s=duration("x-ratelimit-reset-tokens"),
        retry_after_s=_retry_after(headers, now),
    )


def _retry_after(headers: Any, now: float) -> Optional[float]:
    # Only the explicit hints: the reset headers are read above on their own.
    if _header(headers, "retry-after-ms") is None and _header(headers, "retry-after") is None:
        return None
    return parse_retry_after(headers, now=now)


__all__ = ["RateLimitInfo", "parse_rate_limit_info", "rate_limit_headers"]
