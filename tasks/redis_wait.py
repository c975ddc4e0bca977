"""Waiting out a Redis that is down, restarting, loading or full.

A worker must not turn a Redis outage into lost work: a write that cannot
reach Redis now is tried again, with one log line per retry (not a
traceback), until Redis answers. What counts as "wait": connection errors
and timeouts, LOADING (a restart replaying its AOF), READONLY (a failover in
progress) and OOM (`maxmemory` with `noeviction`: the write is refused
until memory frees up). Anything else is a real error and is raised.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, TypeVar

import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: First pause between tries, and the longest.
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


def is_transient(exc: BaseException) -> bool:
    """True for the Redis errors that mean "not now", not "never"."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
                        redis.exceptions.ReadOnlyError)):
        return True
    if isinstance(exc, getattr(redis.exceptions, "OutOfMemoryError", ())):
        return True
    if isinstance(exc, redis.exceptions.ResponseError):
        text = str(exc)
        return ("OOM command not allowed" in text or "used memory > 'maxmemory'" in text
                or text.startswith(("OOM", "LOADING", "BUSY ")))
    return False


def wait_for_redis(call: Callable[[], T], what: str, *, give_up_after_s: float = float("inf"),
                   sleep: Optional[Callable[[float], None]] = None) -> T:
    """`call()`, tried again while Redis is unavailable; raises the last error after `give_up_after_s`."""
    started = time.monotonic()
    delay = FIRST_DELAY_S
    tries = 0
    while True:
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - sorted by is_transient
            if not is_transient(exc) or time.monotonic() - started >= give_up_after_s:
                raise
            tries += 1
            logger.warning("redis unavailable during %s (%s: %s); retry %d in %.1fs",
                           what, type(exc).__name__, str(exc)[:200], tries, delay)
            (sleep or time.sleep)(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        if tries:
            logger.warning("redis is back: %s done after %d retries", what, tries)
        return result
