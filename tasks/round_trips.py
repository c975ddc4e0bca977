"""Job threads' pipelines sent together: one Redis round trip for all that are ready at once.

A busy worker starts and finishes dozens of jobs at the same moment, each
with its own pipeline (tasks.run: the claim, the result's write). Sent one
by one, each is a round trip: a wake-up of Redis, two system calls there
and a GIL hand-off here. Here a pipeline that finds another round trip on
the wire is queued; when that round trip returns, the first queued caller
sends everything queued since as one pipeline and hands each caller its
own replies (leader and followers: no extra thread). A pipeline that finds
the wire free goes out at once, so an idle worker waits for nothing.

Each caller's commands stay together and in order; different callers'
commands never depended on each other's order. An error of one command is
that caller's reply only (as `execute_scripts` returns it); an error of the
connection is every caller's in that round trip, and each retries its own
as before (tasks.redis_wait).
"""

from __future__ import annotations

import threading
from typing import Any, List, Optional

from .pipeline import execute_scripts

#: At most this many callers' pipelines in one round trip: a few hundred
#: short commands each, so Redis is never held up long by one of them.
MAX_CALLERS = 64


class _Call:
    __slots__ = ("pipe", "ready", "replies", "error", "lead")

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.ready = threading.Event()
        self.replies: Optional[List[Any]] = None
        self.error: Optional[BaseException] = None
        self.lead = False


class RoundTrips:
    """Sends pipelines of script calls for many threads (or greenlets) of one process."""

    def __init__(self, client: Any, max_callers: int = MAX_CALLERS):
        self.client = client
        self.max_callers = max_callers
        self._lock = threading.Lock()
        self._waiting: List[_Call] = []
        self._on_wire = False
        #: Round trips sent and pipelines they carried (tests, bench).
        self.round_trips = 0
        self.pipelines = 0

    def execute(self, pipe: Any) -> List[Any]:
        """`execute_scripts(client, pipe)`, maybe in one round trip with other callers'."""
        call = _Call(pipe)
        with self._lock:
            if self._on_wire:
                self._waiting.append(call)
            else:
                self._on_wire = call.lead = True
        if not call.lead:
            call.ready.wait()
        if call.lead:
            self._lead(call)
        if call.error is not None:
            raise call.error
        assert call.replies is not None
        return call.replies

    def _lead(self, first: _Call) -> None:
        """Send `first` and whatever else waits (up to `max_callers`), then pass the lead on."""
        with self._lock:
            batch = [first] + self._waiting[: self.max_callers - 1]
            del self._waiting[: self.max_callers - 1]
        try:
            self._send(batch)
        finally:
            with self._lock:
                nxt = self._waiting.pop(0) if self._waiting else None
                if nxt is None:
                    self._on_wire = False
            for call in batch[1:]:
                call.ready.set()
            if nxt is not None:
                nxt.lead = True
                nxt.ready.set()

    def _send(self, batch: List[_Call]) -> None:
        if len(batch) == 1:
            merged = batch[0].pipe
        else:
            merged = self.client.pipeline(transaction=False)
            for call in batch:
                merged.command_stack.extend(call.pipe.command_stack)
                merged.scripts.update(call.pipe.scripts)
        sizes = [len(call.pipe.command_stack) for call in batch]
        self.round_trips += 1
        self.pipelines += len(batch)
        try:
            replies = execute_scripts(self.client, merged)
        except BaseException as exc:  # the connection's error is every caller's
            for call in batch:
                call.error = exc
            return
        at = 0
        for call, size in zip(batch, sizes):
            call.replies = replies[at:at + size]
            at += size
