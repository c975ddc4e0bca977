"""FakeOpenAI behind a requests-per-minute token bucket, as OpenAI enforces it.

A minimal rate-limited server for the capacity tests (the benchmark's richer
one lives in tests/fakes/ratelimited_server.py). The bucket holds
`rpm * burst_s / 60` requests and refills at `rpm / 60` per second. A request
that finds it empty gets OpenAI's 429 (`rate_limit_exceeded`, type
`requests`) with `retry-after-ms` / `Retry-After` (when the next request
is possible) and the `x-ratelimit-*` headers; every answer carries the
headers with the bucket's real state. `x-ratelimit-reset-requests` is, as
OpenAI documents it, the time until the bucket is full again.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from .openai_server import FakeOpenAI, openai_error


class BucketOpenAI(FakeOpenAI):
    def __init__(self, *, rpm: float, burst_s: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rpm = float(rpm)
        self.capacity = max(1.0, self.rpm * burst_s / 60.0)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._bucket = threading.Lock()
        self.admitted = 0
        self.rejected = 0
        self.times: list[float] = []  # monotonic arrival time of every request

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rpm / 60.0)
        self._stamp = now

    def _next_ms(self) -> int:
        return int(math.ceil(max(0.0, 1.0 - self._tokens) * 60000.0 / self.rpm))

    def _headers(self) -> dict:
        full_ms = int(math.ceil((self.capacity - self._tokens) * 60000.0 / self.rpm))
        return {
            "x-ratelimit-limit-requests": str(int(self.rpm)),
            "x-ratelimit-remaining-requests": str(int(self._tokens)),
            "x-ratelimit-reset-requests": f"{full_ms}ms",
        }

    def handle_generation(self, wire, request) -> None:
        with self._bucket:
            self.times.append(time.monotonic())
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                self.admitted += 1
                allowed = True
            else:
                self.rejected += 1
                allowed = False
            headers = self._headers()
            wait_ms = max(1, self._next_ms())
        if allowed:
            super().handle_generation(wire, request)
            return
        reply = openai_error(
            429, f"Rate limit reached for gpt-4o-mini in organization org-fake on requests per min (RPM): "
            f"Limit {int(self.rpm)}, Used {int(self.rpm)}, Requested 1. Please try again in {wait_ms}ms. "
            "Visit https://platform.openai.com/account/rate-limits to learn more. You can increase your rate "
            "limit by adding a payment method to your account at https://platform.openai.com/account/billing.",
            "requests", code="rate_limit_exceeded",
            headers={**headers, "retry-after-ms": str(wait_ms), "Retry-After": str(max(1, math.ceil(wait_ms / 1000)))},
        )
        self._send_reply(wire, reply)

    def success_headers(self, ex) -> dict:
        with self._bucket:
            headers = self._headers()
        return {"x-request-id": f"req_{ex.id}", "openai-version": "2020-10-01", **headers}
