"""Hooks the run task calls at each step, for metrics and logs to attach to.

The task layer only calls these; `workers.metrics` implements them with
Prometheus. The default does nothing, so tasks work without a metrics stack.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class Observer:
    """No-op base: override what you need."""

    def request_finished(
        self,
        provider: str,
        *,
        ok: bool,
        latency_s: float,
        category: Optional[str] = None,
        usage: Optional[Dict[str, Any]] = None,
    ) -> None:
        """A provider call ended (success, or an error of `category`)."""

    def priced(self, endpoint: str, usd: float) -> None:
        """A successful call to `endpoint` (provider:model) cost `usd` at its list or configured price."""

    def retried(self, provider: str, delay_s: float) -> None:
        """A job will try `provider` again after `delay_s`."""

    def waited(self, endpoint: str, reason: str, wait_s: float) -> None:
        """A job went to wait for capacity on `endpoint` (reason: budget, paused, rate_limited, ...)."""

    def failed_over(self, from_provider: str, to_provider: str) -> None:
        """A job moved to the next target's queue."""

    def job_finished(self, status: str) -> None:
        """A job reached succeeded, failed or dead_lettered."""
