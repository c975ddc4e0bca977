"""How long a provider asked us to wait, from whichever header it used.

Order as in openai-python: `retry-after-ms`, then `Retry-After` as seconds,
then as an HTTP-date; then the vendors' rate-limit reset headers (OpenAI's
durations, Anthropic's RFC 3339 times, OpenRouter's epoch milliseconds).
"""

from __future__ import annotations

import email.utils
import re
import time
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

#: No provider hint is honoured beyond this; the queue's own cap may be lower.
MAX_RETRY_AFTER_S = 300.0


def _header(headers: Any, name: str) -> Optional[str]:
    """Case-insensitive header lookup that tolerates plain dicts and mocks."""
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except Exception:
        value = None
    if value is None and isinstance(headers, Mapping):
        lowered = name.lower()
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == lowered:
                value = candidate
                break
    return value.strip() if isinstance(value, str) else None


def _parse_duration_s(value: str) -> Optional[float]:
    """OpenAI's reset headers: '1s', '6m0s', '20ms', '1h2m3.5s'."""
    total, matched = 0.0, False
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value):
        matched = True
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total if matched else None


def _seconds_until(value: str, now: float) -> Optional[float]:
    """An HTTP-date or RFC 3339 timestamp, as seconds from `now`."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() - now


def parse_retry_after(
    headers: Any, *, now: Optional[float] = None, cap_s: float = MAX_RETRY_AFTER_S
) -> Optional[float]:
    """How long the provider asked us to wait, in seconds, or None if it did not say.

    Order as in openai-python: `retry-after-ms`, then `Retry-After` as seconds,
    then as an HTTP-date; then the vendors' rate-limit reset headers. Never
    negative, never above `cap_s`.
    """
    now = time.time() if now is None else now
    delay: Optional[float] = None
    ms = _header(headers, "retry-after-ms")
    if ms:
        try:
            delay = float(ms) / 1000.0
        except ValueError:
            delay = None
    if delay is None:
        value = _header(headers, "retry-after")
        if value:
            try:
                delay = float(value)
            except ValueError:
                delay = _seconds_until(value, now)
    if delay is None:
        delay = _reset_header_delay(headers, now)
    if delay is None:
        return None
    return min(max(delay, 0.0), cap_s)


def _reset_header_delay(headers: Any, now: float) -> Optional[float]:
    candidates: list[float] = []
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        value = _header(headers, name)
        if value:
            parsed = _parse_duration_s(value)
            if parsed is not None:
                candidates.append(parsed)
    for name in (
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-reset",
    ):
        value = _header(headers, name)
        if value:
            parsed = _seconds_until(value, now)
            if parsed is not None:
                candidates.append(parsed)
    openrouter_reset = _header(headers, "x-ratelimit-reset")
    if openrouter_reset:
        try:
            stamp = float(openrouter_reset)
            # OpenRouter sends epoch milliseconds; tolerate epoch seconds.
            candidates.append((stamp / 1000.0 if stamp > 1e11 else stamp) - now)
        except ValueError:
            pass
    # The shortest reset is the earliest moment a request may succeed.
    positive = [c for c in candidates if c > 0]
    return min(positive) if positive else (0.0 if candidates else None)


