"""The poison list: messages promptq could not read, moved aside with the reason.

A message on a promptq queue that is not a kombu envelope, has a body that
is not JSON or not base64, is pickled, or makes Celery raise while taking it
in, would stop the consumer (and, restored at shutdown, stop every worker
after it). It is pushed here instead, as JSON
`{"at", "queue", "reason", "message"}`, and acknowledged; the worker goes on.
`promptq:poison` keeps the newest `POISON_MAXLEN` entries for an operator to
read (`LRANGE promptq:poison 0 9`).
"""

from __future__ import annotations

import json
import time
from typing import Any, List, Optional

#: Entries kept; older ones are trimmed as new ones arrive.
POISON_MAXLEN = 10_000
#: A message's text is cut to this many characters in its entry.
POISON_BODY_CHARS = 64 * 1024


def poison_key(prefix: str) -> str:
    return f"{prefix}:poison"


def poison_entry(message: Any, *, queue: Optional[str], reason: Any) -> str:
    if isinstance(message, (bytes, bytearray)):
        text = bytes(message).decode("utf-8", errors="replace")
    else:
        text = message if isinstance(message, str) else repr(message)
    why = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
    return json.dumps({"at": time.time(), "queue": queue, "reason": why[:2000], "message": text[:POISON_BODY_CHARS]})


def move_to_poison(pipe: Any, prefix: str, message: Any, *, queue: Optional[str], reason: Any) -> None:
    """Queue the LPUSH (and trim) of one entry on `pipe`."""
    key = poison_key(prefix)
    pipe.lpush(key, poison_entry(message, queue=queue, reason=reason))
    pipe.ltrim(key, 0, POISON_MAXLEN - 1)


def read_poison(client: Any, prefix: str = "promptq", limit: int = 100) -> List[dict]:
    return [json.loads(e) for e in client.lrange(poison_key(prefix), 0, limit - 1)]

