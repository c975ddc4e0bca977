"""`AsyncClient` behind `Client`'s blocking interface, so one test body checks both.

Every coroutine runs on one event loop in a background thread (a real
loop, real redis.asyncio connections); `events()` / `stream()` pull the
async generators one item at a time. Nothing here decides anything: a
test that fails through the facade fails on AsyncClient's own behaviour.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

from promptq.tasks.async_client import AsyncClient
from promptq.tasks.client import JobHandle


class BlockingAsyncClient:
    def __init__(self, settings):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.aclient: AsyncClient = self.call(self._make(settings))
        self.settings = settings

    async def _make(self, settings) -> AsyncClient:
        return AsyncClient(settings)

    def call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _iterate(self, agen) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self.call(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self.call(agen.aclose())

    def submit(self, *args, **kwargs) -> JobHandle:
        handle = self.call(self.aclient.submit(*args, **kwargs))
        return JobHandle(handle.id, self, created=handle.created)

    def submit_spec(self, spec) -> JobHandle:
        handle = self.call(self.aclient.submit_spec(spec))
        return JobHandle(handle.id, self, created=handle.created)

    def status(self, job_id):
        return self.call(self.aclient.status(job_id))

    def result(self, job_id, timeout=None):
        return self.call(self.aclient.result(job_id, timeout=timeout))

    def cancel(self, job_id):
        return self.call(self.aclient.cancel(job_id))

    def events(self, job_id, timeout=None):
        return self._iterate(self.aclient.events(job_id, timeout=timeout))

    def stream(self, job_id, timeout=None):
        return self._iterate(self.aclient.stream(job_id, timeout=timeout))

    @property
    def app(self):
        return self.aclient.app

    def close(self) -> None:
        self.call(self.aclient.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
