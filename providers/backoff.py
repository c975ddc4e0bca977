"""How long to wait before trying again: one function for every caller.

The provider layer's in-process retries and the queue's Celery countdowns both
ask `retry_delay_s`, so a provider's `Retry-After` is honoured the same way
everywhere: never earlier than asked, never later than the cap.
"""

from __future__ import annotations

import random
from typing import Optional

from .error_handling import ProviderError


def compute_backoff(
    attempt: int,
    *,
    base_s: float = 1.0,
    factor: float = 2.0,
    cap_s: float = 60.0,
    jitter: bool = True,
    rng: Optional[random.Random] = None,
) -> float:
    """Exponential backoff for the `attempt`-th retry (1-based), capped.

    Full jitter (a uniform draw in [delay/2, delay]) spreads a thundering
    herd of workers that all failed at the same moment.
    """
    attempt = max(1, attempt)
    delay = min(cap_s, base_s * (factor ** (attempt - 1)))
    if jitter:
        draw = (rng or random).uniform(0.5, 1.0)
        delay *= draw
    return delay


def retry_delay_s(
    error: ProviderError,
    attempt: int,
    *,
    cap_s: float = 300.0,
    jitter_s: float = 0.25,
    rng: Optional[random.Random] = None,
) -> float:
    """Seconds to wait before retrying after `error` on the `attempt`-th try.

    With a provider hint the wait is the hint plus a small upward jitter (so
    retries are never early, and many workers do not return in one instant);
    without one it is `compute_backoff`. Both are capped at `cap_s`.
    """
    if error.retry_after is not None:
        extra = (rng or random).uniform(0.0, jitter_s) if jitter_s > 0 else 0.0
        return min(cap_s, max(0.0, float(error.retry_after)) + extra)
    return compute_backoff(attempt, cap_s=min(cap_s, 60.0), rng=rng)
