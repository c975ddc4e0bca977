"""What every HTTP dialect does with a job: admit, submit, wait, cancel on disconnect.

Shared by the OpenAI and Anthropic routes, and built only on `AsyncClient`:
the front is a producer and follower like any other, never a provider
caller and never a reader of promptq's Redis keys.

A request with an `Idempotency-Key` header names its job: the job id is
derived from the key (and the caller's API key), so a retried request -- the
SDKs retry on timeouts and 5xx -- follows the job the first one started
instead of paying for a second answer; a streamed one replays from the
first chunk.

A client that goes away does not cancel its job: the job is durable and its
id is in the `x-promptq-job-id` response header, so the result can be read
later (`promptq result ID`, `Client.result`). A client that wants the job
stopped with its connection says so with the header
`x-promptq-cancel-on-disconnect: true` or `"promptq": {"cancel_on_disconnect": true}`
in the request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, Mapping, Optional

import anyio
import redis
from starlette.requests import Request

from promptq.tasks.async_client import AsyncClient
from promptq.tasks.client_core import JobIdConflict
from promptq.tasks.job import JobValidationError
from promptq.tasks.store import JobRecord

from .auth import presented_key
from .config import ServerConfig
from .errors import ApiError, invalid_field
from .routing import Router

JOB_HEADER = "x-promptq-job-id"
#: Fields of an OpenAI chat request that are not generation parameters
#: (promptq sets them, or they describe the caller, not the generation).
OPENAI_NOT_PARAMETERS = frozenset({"model", "messages", "stream", "stream_options", "n", "promptq", "metadata",
                                   "store", "user"})
CANCEL_HEADER = "x-promptq-cancel-on-disconnect"


@dataclass
class ServerState:
    config: ServerConfig
    client: AsyncClient
    router: Router
    open_requests: int = 0


async def read_json(request: Request) -> Dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return body


def wants_cancel_on_disconnect(request: Request, body: Mapping[str, Any]) -> bool:
    header = (request.headers.get(CANCEL_HEADER) or "").strip().lower()
    if header in ("1", "true", "yes"):
        return True
    options = body.get("promptq")
    return isinstance(options, dict) and options.get("cancel_on_disconnect") is True


def text_content(content: Any) -> Any:
    """Text parts (OpenAI `{"type": "text"}` or Anthropic blocks) joined to one string; anything else as is."""
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return content


class Admission:
    """One open request's place; a streamed response takes it over and gives it back when it ends."""

    def __init__(self, state: ServerState):
        self.state = state
        self.held = True
        self.handed_over = False

    def release(self) -> None:
        if self.held:
            self.held = False
            self.state.open_requests -= 1

    def hand_over(self) -> Callable[[], None]:
        self.handed_over = True
        return self.release


@contextlib.asynccontextmanager
async def admitted(state: ServerState) -> AsyncIterator[Admission]:
    """One open request; past the limit promptq itself refuses with 429 and Retry-After."""
    if state.open_requests >= state.config.max_open_requests:
        raise ApiError(429, f"promptq serve has {state.open_requests} requests open (limit "
                            f"{state.config.max_open_requests}); retry shortly", "rate_limit",
                       code="promptq_busy", retry_after_s=1)
    state.open_requests += 1
    admission = Admission(state)
    try:
        yield admission
    finally:
        if not admission.handed_over:
            admission.release()


def idempotent_job_id(request: Request, api: str) -> Optional[str]:
    """The job id an `Idempotency-Key` names (None without one); keys of different callers never meet."""
    key = request.headers.get("idempotency-key")
    if not key:
        return None
    if len(key) > 256:
        raise ApiError(400, "Idempotency-Key: at most 256 characters", param="Idempotency-Key")
    caller = presented_key(request) or ""
    return "http-" + hashlib.sha256(f"{api}\0{caller}\0{key}".encode("utf-8")).hexdigest()[:40]


async def submit(state: ServerState, renames: Dict[str, str], **job: Any) -> str:
    try:
        handle = await state.client.submit(**job)
    except JobIdConflict:
        raise ApiError(409, "Idempotency-Key: already used for a different request", param="Idempotency-Key",
                       code="idempotency_key_reused", should_retry=False) from None
    except JobValidationError as exc:
        raise invalid_field(exc, renames) from None
    except redis.RedisError as exc:
        raise ApiError(503, f"the queue is unavailable ({type(exc).__name__})", "overloaded",
                       code="queue_unavailable", retry_after_s=2) from None
    return handle.id


async def wait_for_result(state: ServerState, request: Request, job_id: str, cancel_on_disconnect: bool) -> JobRecord:
    """The job's final record; 504 after the request timeout (the job goes on), 499-ish cancel on disconnect."""
    result = asyncio.ensure_future(state.client.result(job_id, timeout=state.config.request_timeout_s))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if result in done:
        try:
            return result.result()
        except TimeoutError:
            raise ApiError(504, f"job {job_id} did not finish within {state.config.request_timeout_s:g}s; "
                                f"it goes on: read it later by its id", "timeout", code="timeout",
                           should_retry=False) from None
    result.cancel()
    if cancel_on_disconnect:
        await cancel_quietly(state, job_id)
    raise ApiError(499, "client disconnected", code="client_closed")


async def cancel_quietly(state: ServerState, job_id: str) -> None:
    # Shielded: the request's own task may be cancelled by now.
    with anyio.CancelScope(shield=True):
        try:
            await state.client.cancel(job_id)
        except Exception:  # the job may have finished meanwhile; nothing to report to a gone client
            pass


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def stream_options(body: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "stream_options: must be an object", param="stream_options")
    return options
