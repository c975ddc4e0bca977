"""What a chat request does, whatever its dialect: the one skeleton behind
`/v1/chat/completions` (openai_chat.py) and `/v1/messages` (anthropic_messages.py).

    admit (429 past the limit) -> read the JSON body -> the dialect's job from it
    (400 naming the field) -> submit (an Idempotency-Key names the job) ->
    streamed: the job's events as the dialect's SSE (chat_stream.relay);
    else: wait, and answer the dialect's body -> any ApiError in the dialect's
    error shape, with the job id header once there is a job.

A dialect passes in only what differs (`ChatDialect`), so a fix to admission,
idempotency or cancel on disconnect reaches both at once. The checks both
dialects make of a request and of a finished job are here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from promptq.providers.error_handling import ProviderError
from promptq.providers.params import validate as validate_parameters
from promptq.tasks.store import JobRecord, JobStatus

from .chat_stream import StreamFrames, relay
from .errors import ApiError, from_failed_job
from .jobs import (JOB_HEADER, ServerState, admitted, idempotent_job_id, read_json, submit, text_content,
                   wait_for_result, wants_cancel_on_disconnect)
from .live import LiveStream
from .sse import SSE_HEADERS, with_keepalive

_PARAM_RE = re.compile(r"invalid parameter '([^']+)'")


@dataclass(frozen=True)
class ChatDialect:
    #: Names the request kind: Idempotency-Key namespace ("openai.chat").
    api: str
    #: The shape errors are answered in: "openai" or "anthropic".
    errors: str
    #: A refused job's field -> the request's own name for it.
    renames: Dict[str, str]
    #: The request body as `AsyncClient.submit` keywords (ApiError 400 if it cannot be).
    job: Callable[[ServerState, Dict[str, Any]], Dict[str, Any]]
    #: A finished job's record and the requested model -> the response body.
    answer: Callable[[JobRecord, str], Dict[str, Any]]
    #: The SSE frames of one streamed job: (state, job id, request body) -> frames.
    frames: Callable[[ServerState, str, Dict[str, Any]], StreamFrames]
    #: Sent while a streamed job is silent.
    keepalive: bytes


async def serve_chat(request: Request, dialect: ChatDialect) -> Response:
    state: ServerState = request.app.state.promptq
    headers: Dict[str, str] = {}
    try:
        async with admitted(state) as admission:
            body = await read_json(request)
            job = dialect.job(state, body)
            job_id = await submit(state, dialect.renames, job_id=idempotent_job_id(request, dialect.api), **job)
            headers[JOB_HEADER] = job_id
            cancel = wants_cancel_on_disconnect(request, body)
            if body.get("stream"):
                frames = dialect.frames(state, job_id, body)
                chunks = with_keepalive(relay(state, job_id, frames, cancel), state.config.keepalive_s,
                                        dialect.keepalive)
                return LiveStream(chunks, media_type="text/event-stream", headers={**SSE_HEADERS, **headers},
                                  on_close=admission.hand_over())
            record = await wait_for_result(state, request, job_id, cancel)
            return JSONResponse(dialect.answer(record, body["model"]), headers=headers)
    except ApiError as exc:
        return exc.response(dialect.errors, headers=headers)


def chat_messages(body: Dict[str, Any], **error: Any) -> List[Any]:
    """The request's `messages`, text parts joined; 400 unless a non-empty array (`error`: extra ApiError fields)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: must be a non-empty array", param="messages", **error)
    return [{**m, "content": text_content(m.get("content"))} if isinstance(m, dict) else m for m in messages]


def check_parameters(parameters: Dict[str, Any], **error: Any) -> None:
    """400 naming the parameter promptq's own validation refuses (`error`: extra ApiError fields)."""
    try:
        validate_parameters(parameters)
    except ProviderError as exc:
        match = _PARAM_RE.search(str(exc))
        raise ApiError(400, str(exc), param=match.group(1) if match else None, **error) from None


def succeeded_result(record: JobRecord) -> Dict[str, Any]:
    """A finished job's result, or the ApiError its failure (or cancel) means."""
    if record.status is not JobStatus.SUCCEEDED:
        if record.status is JobStatus.CANCELLED:
            raise ApiError(409, f"job {record.id} was cancelled", code="cancelled", should_retry=False)
        raise from_failed_job(record.id, record.error)
    return record.result or {}
