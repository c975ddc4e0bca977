"""A test-only pause point: hold a worker at an exact moment of a job's life.

Off unless `PROMPTQ_TEST_PAUSE_AT` names the point (`after_fetch`: a message
was moved into the processing list and not yet handed to Celery;
`before_start`: the task body runs, `JobStore.start` not yet called;
`before_record`: the provider answered, the result is not yet written). With
it set, a worker reaching the point writes `promptq:test:paused:<point>` (its
pid and the job) and
waits while `promptq:test:pause:<point>` exists; a test deletes that key to
let it go, or SIGKILLs the worker there. A Redis that cannot be reached ends
the pause (so a test can stop Redis while a worker is held). Never set it in
production: it exists so tests/faults can hit windows that random kills hit
only by chance.
"""

from __future__ import annotations

import os
import time

_POINT = os.environ.get("PROMPTQ_TEST_PAUSE_AT", "")


def pause(point: str, detail: str = "") -> None:
    if _POINT != point:
        return
    import redis

    client = redis.Redis.from_url(os.environ.get("PROMPTQ_REDIS_URL", "redis://127.0.0.1:6379/0"),
                                  socket_timeout=2, socket_connect_timeout=2)
    prefix = os.environ.get("PROMPTQ_KEY_PREFIX") or "promptq"
    try:
        if not client.exists(f"{prefix}:test:pause:{point}"):
            return
        client.set(f"{prefix}:test:paused:{point}", f"{os.getpid()} {detail}")
        while client.exists(f"{prefix}:test:pause:{point}"):
            time.sleep(0.02)
    except redis.RedisError:
        return
    finally:
        client.close()
