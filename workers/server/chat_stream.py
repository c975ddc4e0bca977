"""A streamed job's events relayed as SSE: the rules both dialects share.

`relay` decides what is sent when; a dialect's `StreamFrames` only says how
each thing looks on its wire:

    opening frames (before any event)
    chunk                  -> text(chunk text)
    done                   -> text(the record's text, if the job did not stream),
                              then the dialect's closing frames
    reset after any text   -> error(...): the stream ends; the job goes on
    error / cancelled      -> error(...)
    no end within the request timeout -> error(...): the job goes on

Never spliced: text is relayed as the worker streams it, so an attempt that
fails after sending text (a `reset` event: a retry or failover starts the
answer again) ends the stream with an error, and the final text is read by
the job id (`x-promptq-job-id`). Retries and failovers that happen before
any text was sent are invisible to the client. (Holding text until an
attempt commits would avoid the error, but only by giving up streaming.) A
stream that ends any other way before the job does cancels the job if the
client asked for that.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Dict, List, Protocol

from .jobs import ServerState, cancel_quietly


class StreamFrames(Protocol):
    """One streamed job's frames in a dialect's shape."""

    def opening(self) -> List[bytes]:
        """The frames sent before any event."""

    def text(self, text: str) -> bytes:
        """The frame carrying the next text."""

    def closing(self, done: Dict[str, Any]) -> AsyncIterator[bytes]:
        """The frames after the last text, from the job's `done` event."""

    def error(self, message: str, code: str) -> bytes:
        """The frame that ends a stream early; `code` says why (stream_reset, timeout, a job error category)."""


async def relay(state: ServerState, job_id: str, frames: StreamFrames,
                cancel_on_disconnect: bool) -> AsyncIterator[bytes]:
    finished = False
    events = state.client.events(job_id, timeout=state.config.request_timeout_s)
    try:
        async with contextlib.aclosing(events):
            for frame in frames.opening():
                yield frame
            sent_text = False
            async for event in events:
                kind = event["type"]
                if kind == "chunk":
                    sent_text = True
                    yield frames.text(event["text"])
                elif kind == "reset" and sent_text:
                    finished = True  # the job goes on; this stream cannot take its text back
                    yield frames.error(f"attempt {event.get('attempt')} on {event.get('provider')} failed after "
                                       f"sending text ({event.get('reason')}); promptq retries it: read the final "
                                       f"answer by job id {job_id}", "stream_reset")
                    return
                elif kind == "done":
                    finished = True
                    if not sent_text and event.get("from_record"):
                        # The job did not stream (an idempotent retry of a plain request): its text is in the record.
                        record = await state.client.status(job_id)
                        if record and record.text:
                            yield frames.text(record.text)
                    async for frame in frames.closing(event):
                        yield frame
                    return
                elif kind in ("error", "cancelled"):
                    finished = True
                    error = event.get("error") or {}
                    yield frames.error(f"job {job_id} failed: {error.get('message')}" if kind == "error"
                                       else f"job {job_id} was cancelled", error.get("category") or kind)
                    return
    except TimeoutError:
        finished = True
        yield frames.error(f"job {job_id} did not finish within {state.config.request_timeout_s:g}s; it goes on",
                           "timeout")
    finally:
        if not finished and cancel_on_disconnect:
            await cancel_quietly(state, job_id)
