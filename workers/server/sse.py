"""Server-sent events on the wire: `event:` (optional) and one `data:` line per event.

JSON is written compactly and never contains a raw newline, so each event
is exactly one `data:` line; a blank line ends it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Optional

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: Any, event: Optional[str] = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode("utf-8")


DONE = sse("[DONE]")


#: Sent while a streamed job has nothing to say (queued, waiting out a rate
#: limit): proxies and clients drop a silent connection after a minute or so.
#: Both SDKs skip comment lines; Anthropic's API itself sends `ping` events.
OPENAI_KEEPALIVE = b": keep-alive\n\n"
ANTHROPIC_KEEPALIVE = sse({"type": "ping"}, event="ping")

_pumps: set = set()  # a reference keeps each pump alive until its source has cleaned up


async def with_keepalive(source: AsyncIterator[bytes], every_s: float, ping: bytes) -> AsyncIterator[bytes]:
    """`source`'s items, with `ping` whenever it has been silent for `every_s` seconds.

    The source runs in its own task (a timeout on its `__anext__` would
    cancel it); when the consumer stops, the task is cancelled and left to
    run its own clean-up (a job's cancel on disconnect).
    """
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait(item)
        except BaseException as exc:  # handed to the consumer, which raises it
            queue.put_nowait(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            queue.put_nowait(end)

    task = asyncio.ensure_future(pump())
    _pumps.add(task)
    task.add_done_callback(_pumps.discard)
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), every_s)
            except asyncio.TimeoutError:
                yield ping
                continue
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
