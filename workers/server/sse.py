"""Server-sent events on the wire: `event:` (optional) and one `data:` line per event.

JSON is written compactly and never contains a raw newline, so each event
is exactly one `data:` line; a blank line ends it.
"""

from __future__ import annotations

import json
from typing import Any, Optional

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: Any, event: Optional[str] = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode("utf-8")


DONE = sse("[DONE]")
