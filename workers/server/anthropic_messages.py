"""`POST /v1/messages`: Anthropic's Messages API in front of promptq jobs.

Non-streamed it answers a `message`; streamed, Anthropic's event sequence:
`message_start`, `content_block_start`, `ping`, `content_block_delta`
(text_delta) per chunk, `content_block_stop`, `message_delta` (stop_reason,
usage), `message_stop`. A job that fails, is cancelled, or whose attempt
fails after sending text (see openai_chat.py: never spliced) ends the
stream with an `error` event, which the anthropic SDK raises.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, AsyncIterator, Dict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from promptq.providers.error_handling import ProviderError
from promptq.providers.finish_reasons import anthropic_stop_reason
from promptq.providers.params import validate as validate_parameters
from promptq.tasks.store import JobRecord, JobStatus

from .errors import ApiError, from_failed_job
from .jobs import (JOB_HEADER, ServerState, admitted, cancel_quietly, idempotent_job_id, read_json, submit,
                   text_content, wait_for_result, wants_cancel_on_disconnect)
from .live import LiveStream
from .sse import ANTHROPIC_KEEPALIVE, SSE_HEADERS, sse, with_keepalive

_PARAMETERS = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences")
_KNOWN = {"model", "messages", "system", "stream", "metadata", "promptq", "tools", "tool_choice", "thinking",
          "service_tier", *_PARAMETERS}
_RENAMES = {"targets[0]": "model", "system_prompt": "system"}
_PARAM_RE = re.compile(r"invalid parameter '([^']+)'")


async def messages(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    headers: Dict[str, str] = {}
    try:
        async with admitted(state) as admission:
            body = await read_json(request)
            job = job_from_request(state, body)
            job_id = await submit(state, _RENAMES, job_id=idempotent_job_id(request, "anthropic.messages"), **job)
            headers[JOB_HEADER] = job_id
            cancel = wants_cancel_on_disconnect(request, body)
            if body.get("stream"):
                events = with_keepalive(_stream(state, job_id, body["model"], cancel), state.config.keepalive_s,
                                        ANTHROPIC_KEEPALIVE)
                return LiveStream(events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers},
                                  on_close=admission.hand_over())
            record = await wait_for_result(state, request, job_id, cancel)
            return JSONResponse(message(record, body["model"]), headers=headers)
    except ApiError as exc:
        return exc.response("anthropic", headers=headers)


def job_from_request(state: ServerState, body: Dict[str, Any], *, allow_stream: bool = True) -> Dict[str, Any]:
    """A Messages request (or a Message Batches `params`) as `AsyncClient.submit` keywords; 400 naming the field."""
    targets = state.router.targets(body.get("model"))
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise ApiError(400, f"{unknown[0]}: Extra inputs are not permitted", param=unknown[0])
    for name in ("tools", "tool_choice", "thinking"):
        if body.get(name):
            raise ApiError(400, f"{name}: not supported by promptq serve yet", param=name)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: must be a non-empty array", param="messages")
    messages = [{**m, "content": text_content(m.get("content"))} if isinstance(m, dict) else m for m in messages]
    system = text_content(body.get("system"))
    if system is not None and not isinstance(system, str):
        raise ApiError(400, "system: must be a string or a list of text blocks", param="system")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) or (stream and not allow_stream):
        raise ApiError(400, "stream: " + ("must be true or false" if allow_stream else "a batch request cannot stream"),
                       param="stream")
    parameters = {k: body[k] for k in _PARAMETERS if body.get(k) is not None}
    try:
        validate_parameters(parameters)
    except ProviderError as exc:
        match = _PARAM_RE.search(str(exc))
        raise ApiError(400, str(exc), param=match.group(1) if match else None) from None
    return dict(to=targets, messages=messages, system_prompt=system, parameters=parameters, stream=stream,
                metadata={"via": "http", "api": "anthropic.messages"})


def message(record: JobRecord, requested_model: str) -> Dict[str, Any]:
    """A finished job as an Anthropic `message` (or the ApiError its failure means)."""
    if record.status is not JobStatus.SUCCEEDED:
        if record.status is JobStatus.CANCELLED:
            raise ApiError(409, f"job {record.id} was cancelled", code="cancelled", should_retry=False)
        raise from_failed_job(record.id, record.error)
    result = record.result or {}
    return message_body(record.id, result, requested_model)


def message_body(job_id: str, result: Dict[str, Any], requested_model: str) -> Dict[str, Any]:
    usage = result.get("usage") or {}
    return {
        "id": f"msg_{job_id}",
        "type": "message",
        "role": "assistant",
        "model": result.get("model") or requested_model,
        "content": [{"type": "text", "text": result.get("text") or ""}],
        "stop_reason": anthropic_stop_reason(result.get("finish_reason")),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.get("input_tokens") or 0, "output_tokens": usage.get("output_tokens") or 0},
    }


async def _stream(state: ServerState, job_id: str, model: str, cancel_on_disconnect: bool) -> AsyncIterator[bytes]:
    def event(kind: str, **data: Any) -> bytes:
        return sse({"type": kind, **data}, event=kind)

    finished = False
    events = state.client.events(job_id, timeout=state.config.request_timeout_s)
    try:
        async with contextlib.aclosing(events):
            yield event("message_start", message={
                "id": f"msg_{job_id}", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}})
            yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
            yield event("ping")
            sent_text = False
            async for item in events:
                kind = item["type"]
                if kind == "chunk":
                    sent_text = True
                    yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": item["text"]})
                elif kind == "reset" and sent_text:
                    finished = True
                    yield _error(f"attempt {item.get('attempt')} on {item.get('provider')} failed after sending "
                                 f"text ({item.get('reason')}); promptq retries it: read the final answer by job id "
                                 f"{job_id}")
                    return
                elif kind == "done":
                    finished = True
                    if not sent_text and item.get("from_record"):
                        # The job did not stream (an idempotent retry of a plain request): its text is in the record.
                        record = await state.client.status(job_id)
                        if record and record.text:
                            yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": record.text})
                    usage = item.get("usage") or {}
                    yield event("content_block_stop", index=0)
                    yield event("message_delta", delta={"stop_reason": anthropic_stop_reason(item.get("finish_reason")),
                                                        "stop_sequence": None},
                                usage={"input_tokens": usage.get("input_tokens") or 0,
                                       "output_tokens": usage.get("output_tokens") or 0})
                    yield event("message_stop")
                    return
                elif kind in ("error", "cancelled"):
                    finished = True
                    error = item.get("error") or {}
                    yield _error(f"job {job_id} failed: {error.get('message')}" if kind == "error"
                                 else f"job {job_id} was cancelled")
                    return
    except TimeoutError:
        finished = True
        yield _error(f"job {job_id} did not finish within {state.config.request_timeout_s:g}s; it goes on")
    finally:
        if not finished and cancel_on_disconnect:
            await cancel_quietly(state, job_id)


def _error(message_text: str, kind: str = "api_error") -> bytes:
    return sse({"type": "error", "error": {"type": kind, "message": message_text}}, event="error")

