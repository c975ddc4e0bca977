"""RateLimitedOpenAI: FakeOpenAI behind OpenAI's rate limiter.

    with RateLimitedOpenAI(rpm=600, tpm=200_000, burst="second") as server:
        ...                                   # requests beyond the budget get 429
        server.stats()                        # or GET /__fake__/stats from another process

What OpenAI does, and so this fake (platform.openai.com/docs/guides/rate-limits):

* Two budgets, requests per minute and tokens per minute, each a token
  bucket refilled continuously at limit/60 per second. How big a burst the
  bucket allows varies (OpenAI documents "quantized" limits: 60,000 rpm may
  be enforced as 1,000 per second), so both ends are modelled:
  ``burst="second"`` (capacity = one second of quota) and ``burst="minute"``
  (capacity = the whole minute). Both start full.
* A request costs 1 request and its estimated tokens: prompt characters / 4
  plus ``max_tokens`` / ``max_completion_tokens`` when given -- estimated at
  admission, as OpenAI does, not corrected afterwards.
* Every response, success or 429, carries ``x-ratelimit-limit-requests``,
  ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` and the
  same for ``-tokens``; a reset is the time until the budget is full again,
  written as a Go duration (``20ms``, ``1s``, ``1.5s``, ``6m0s``). The
  headers always speak of the minute (limit 600, remaining 599, reset 100ms,
  as OpenAI's do), whatever bucket is enforced: with the one-second burst a
  client that trusts "remaining 590" and bursts still collects 429s, which
  is the trap a real quantized limit sets. ``headers="bucket"`` reports the
  enforced buckets instead (limit still per minute; remaining and reset
  those of the bucket), a provider that states its real burst: a client
  pacing by headers then meets almost no 429 (tests/workers/test_capacity_e2e.py).
* A request over budget gets 429 with ``retry-after-ms`` and ``Retry-After``
  (whole seconds, rounded up) saying when it would be admitted, and the
  ``rate_limit_exceeded`` body ("Rate limit reached for ... on requests per
  min (RPM): Limit L, Used U, Requested R. Please try again in 120ms.").
  A refused request draws nothing from either bucket.

Counts for a benchmark or a test: ``stats()`` / ``GET /__fake__/stats``
(requests, 429s by budget, admitted, peak concurrency), ``arrivals`` (the
clock at every request, admitted or not); ``POST /__fake__/reset`` also
refills the buckets. The clock is injectable so a test can move time instead
of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .base import RecordedRequest, Reply
from .directives import all_message_text
from .openai_server import FakeOpenAI, openai_error
from .wire import Wire

BURST_MODELS = ("second", "minute")
HEADER_MODELS = ("minute", "bucket")


def go_duration(seconds: float) -> str:
    """A duration the way OpenAI (Go's time.Duration) writes it: 20ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


class TokenBucket:
    """A continuously refilled bucket. Not thread-safe: the server holds its lock."""

    def __init__(self, per_minute: float, capacity: float, now: float):
        self.limit = per_minute
        self.rate_per_s = per_minute / 60.0
        self.capacity = capacity
        self.level = capacity
        self.at = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate_per_s)
        self.at = now

    def wait_s(self, cost: float) -> float:
        """0 if `cost` fits now, else how long until it does (after `refill`)."""
        if cost <= self.level:
            return 0.0
        return (min(cost, self.capacity) - self.level) / self.rate_per_s

    def reset_s(self) -> float:
        return (self.capacity - self.level) / self.rate_per_s

    def remaining(self) -> int:
        return max(0, int(self.level))


class RateLimitedOpenAI(FakeOpenAI):
    """FakeOpenAI that admits requests through rpm and tpm token buckets."""

    def __init__(self, *, rpm: float = 600, tpm: float = 10_000_000, burst: str = "second",
                 headers: str = "minute", clock: Callable[[], float] = time.monotonic,
                 keep_requests: Optional[int] = None, **kwargs: Any) -> None:
        if burst not in BURST_MODELS:
            raise ValueError(f"burst must be one of {BURST_MODELS}, not {burst!r}")
        if headers not in HEADER_MODELS:
            raise ValueError(f"headers must be one of {HEADER_MODELS}, not {headers!r}")
        if rpm <= 0 or tpm <= 0:
            raise ValueError("rpm and tpm must be positive")
        super().__init__(**kwargs)
        self.rpm, self.tpm, self.burst, self.headers = rpm, tpm, burst, headers
        self.clock = clock
        #: Keep only this many recorded requests (a long benchmark reads none).
        self.keep_requests = keep_requests
        self._limiter = threading.Lock()
        self._fill()

    def _fill(self) -> None:
        now = self.clock()
        share = 1.0 / 60 if self.burst == "second" else 1.0
        with self._limiter:
            # Never below one request's worth: 30 rpm still admits a request.
            self.requests_bucket = TokenBucket(self.rpm, max(1.0, self.rpm * share), now)
            self.tokens_bucket = TokenBucket(self.tpm, max(1.0, self.tpm * share), now)
            # What the headers report: the minute's budget, drawn alongside
            # (or, with headers="bucket", the enforced buckets themselves).
            if self.headers == "bucket":
                self.requests_view, self.tokens_view = self.requests_bucket, self.tokens_bucket
            else:
                self.requests_view = TokenBucket(self.rpm, self.rpm, now)
                self.tokens_view = TokenBucket(self.tpm, self.tpm, now)
            self.arrivals: List[float] = []
            self.counts: Dict[str, Any] = {"requests": 0, "admitted": 0, "rate_limited": 0,
                                           "rate_limited_requests": 0, "rate_limited_tokens": 0,
                                           "in_flight": 0, "in_flight_peak": 0, "tokens_admitted": 0}

    def reset(self) -> None:
        super().reset()
        self._fill()

    def stats(self) -> Dict[str, Any]:
        with self._limiter:
            return {**self.counts, "rpm": self.rpm, "tpm": self.tpm, "burst": self.burst, "headers": self.headers}

    # -- admission ---------------------------------------------------------------

    def estimate_tokens(self, body: Dict[str, Any]) -> int:
        prompt = all_message_text(body.get("messages"))
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        return max(1, math.ceil(len(prompt) / 4)) + (int(limit) if isinstance(limit, (int, float)) else 0)

    def admit(self, cost_tokens: int) -> Optional[Dict[str, Any]]:
        """Take one request and `cost_tokens`, or say which budget refused and for how long."""
        with self._limiter:
            now = self.clock()
            self.counts["requests"] += 1
            self.arrivals.append(now)
            if self.keep_requests is not None and len(self.arrivals) > 2 * self.keep_requests + 100:
                del self.arrivals[: -self.keep_requests]
            req, tok = self.requests_bucket, self.tokens_bucket
            views = () if self.headers == "bucket" else (self.requests_view, self.tokens_view)
            for bucket in (req, tok, *views):
                bucket.refill(now)
            for kind, bucket, cost in (("requests", req, 1), ("tokens", tok, cost_tokens)):
                wait = bucket.wait_s(cost)
                if wait > 0:
                    self.counts["rate_limited"] += 1
                    self.counts[f"rate_limited_{kind}"] += 1
                    view = self.requests_view if kind == "requests" else self.tokens_view
                    return {"kind": kind, "wait_s": wait, "cost": cost, "limit": int(view.limit),
                            "used": max(0, int(view.limit) - view.remaining()), "headers": self._headers()}
            req.level -= 1
            tok.level -= cost_tokens
            for view, cost in zip(views, (1, cost_tokens)):
                view.level -= cost
            self.counts["admitted"] += 1
            self.counts["tokens_admitted"] += cost_tokens
            return None

    def _headers(self) -> Dict[str, str]:
        req, tok = self.requests_view, self.tokens_view
        return {
            "x-ratelimit-limit-requests": str(int(req.limit)),
            "x-ratelimit-remaining-requests": str(req.remaining()),
            "x-ratelimit-reset-requests": go_duration(req.reset_s()),
            "x-ratelimit-limit-tokens": str(int(tok.limit)),
            "x-ratelimit-remaining-tokens": str(tok.remaining()),
            "x-ratelimit-reset-tokens": go_duration(tok.reset_s()),
        }

    def refusal(self, model: str, denied: Dict[str, Any]) -> Reply:
        kind, wait = denied["kind"], denied["wait_s"]
        unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        message = (f"Rate limit reached for {model} in organization org-fake on {unit}: Limit {denied['limit']}, "
                   f"Used {denied['used']}, Requested {denied['cost']}. Please try again in {go_duration(wait)}. "
                   "Visit https://platform.openai.com/account/rate-limits to learn more.")
        headers = {**denied["headers"], "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
                   "Retry-After": str(max(1, math.ceil(wait)))}
        return openai_error(429, message, kind, code="rate_limit_exceeded", headers=headers)

    # -- the pipeline ------------------------------------------------------------------

    def handle_generation(self, wire: Wire, request: RecordedRequest) -> None:
        denied = self.auth_error(request)  # OpenAI authenticates before it counts
        if denied is not None:
            self._send_reply(wire, denied)
            return
        body = request.body if isinstance(request.body, dict) else {}
        refused = self.admit(self.estimate_tokens(body))
        if refused is not None:
            self._send_reply(wire, self.refusal(str(body.get("model") or self.model), refused))
            return
        with self._limiter:
            request.ratelimit_headers = self._headers()  # as they stand right after admission
            self.counts["in_flight"] += 1
            self.counts["in_flight_peak"] = max(self.counts["in_flight_peak"], self.counts["in_flight"])
        try:
            super().handle_generation(wire, request)
        finally:
            with self._limiter:
                self.counts["in_flight"] -= 1

    def rate_limit_headers(self, remaining_requests: int = 0) -> Dict[str, str]:
        with self._limiter:
            return self._headers()

    def success_headers(self, ex) -> Dict[str, str]:
        headers = super().success_headers(ex)
        headers.update(getattr(ex.request, "ratelimit_headers", {}))
        return headers

    # -- control -----------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        super()._record(request)
        if self.keep_requests is not None:
            with self._lock:
                if len(self._requests) > 2 * self.keep_requests + 100:
                    del self._requests[: -self.keep_requests]

    def _control(self, wire: Wire, method: str, path: str, body: Any) -> None:
        if (method, path) == ("GET", "/__fake__/stats"):
            wire.send_json(200, self.stats())
            return
        super()._control(wire, method, path, body)
