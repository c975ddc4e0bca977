"""A streamed response that notices a client leaving while nothing is being sent.

Starlette's `StreamingResponse` under ASGI 2.4 servers (uvicorn) learns of a
disconnect only when its next write fails; a job waiting in the queue may
write nothing for minutes. This one always listens for `http.disconnect`
beside the stream and cancels the body iterator at once, so its `finally`
(cancel the job if the client asked for that) runs when the client goes.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class LiveStream(StreamingResponse):
    def __init__(self, content: Any, *, on_close: Optional[Callable[[], None]] = None, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(scope, receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                try:
                    await self.stream_response(send)
                except OSError:  # the client went away mid-write
                    pass
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            await aclose()
