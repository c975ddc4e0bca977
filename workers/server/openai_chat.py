"""`POST /v1/chat/completions`: OpenAI's chat API in front of promptq jobs.

Non-streamed, the request waits for the job and answers a `chat.completion`.
With `stream: true` it answers `chat.completion.chunk` SSE lines relayed
live from the job's events (`stream_options.include_usage` adds the usage
chunk), then `data: [DONE]`.

Never spliced: text is relayed as the worker streams it, so when an attempt
that had sent text fails (a `reset` event: a retry or failover will start
the answer again) the SSE stream ends with an error event, which the openai
SDK raises as `APIError`; the job goes on and its final text can be read by
the id in the `x-promptq-job-id` header. Retries and failovers that happen
before any text was sent are invisible to the client. (Holding text until an
attempt commits would avoid the error, but only by giving up streaming.)
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any, AsyncIterator, Dict, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from promptq.providers.error_handling import ProviderError
from promptq.providers.finish_reasons import openai_finish_reason
from promptq.providers.params import validate as validate_parameters
from promptq.tasks.store import JobRecord, JobStatus

from .errors import ApiError, from_failed_job
from .jobs import (JOB_HEADER, OPENAI_NOT_PARAMETERS, ServerState, admitted, cancel_quietly, idempotent_job_id,
                   read_json, stream_options, submit, text_content, wait_for_result, wants_cancel_on_disconnect)
from .live import LiveStream
from .sse import DONE, OPENAI_KEEPALIVE, SSE_HEADERS, sse, with_keepalive

_RENAMES = {"targets[0]": "model", "parameters": "parameters"}
_PARAM_RE = re.compile(r"invalid parameter '([^']+)'")


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    headers: Dict[str, str] = {}
    try:
        async with admitted(state) as admission:
            body = await read_json(request)
            job = _job(state, body)
            job_id = await submit(state, _RENAMES, job_id=idempotent_job_id(request, "openai.chat"), **job)
            headers[JOB_HEADER] = job_id
            cancel = wants_cancel_on_disconnect(request, body)
            if body.get("stream"):
                options = stream_options(body) or {}
                chunks = with_keepalive(_stream(state, job_id, body["model"], bool(options.get("include_usage")),
                                                cancel), state.config.keepalive_s, OPENAI_KEEPALIVE)
                return LiveStream(chunks, media_type="text/event-stream", headers={**SSE_HEADERS, **headers},
                                  on_close=admission.hand_over())
            record = await wait_for_result(state, request, job_id, cancel)
            return JSONResponse(completion(record, body["model"]), headers=headers)
    except ApiError as exc:
        return exc.response("openai", headers=headers)


def _job(state: ServerState, body: Dict[str, Any]) -> Dict[str, Any]:
    targets = state.router.targets(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: must be a non-empty array", param="messages", code="invalid_value")
    messages = [{**m, "content": text_content(m.get("content"))} if isinstance(m, dict) else m for m in messages]
    for name in ("tools", "functions", "tool_choice", "function_call"):
        # A tool call would come back as empty text: refused until results carry tool calls.
        if body.get(name):
            raise ApiError(400, f"{name}: not supported by promptq serve yet", param=name, code="unsupported")
    if body.get("n") not in (None, 1):
        raise ApiError(400, "n: only one choice per request is supported", param="n", code="invalid_value")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream: must be true or false", param="stream", code="invalid_value")
    parameters = {k: v for k, v in body.items() if k not in OPENAI_NOT_PARAMETERS and v is not None}
    try:
        validate_parameters(parameters)
    except ProviderError as exc:
        match = _PARAM_RE.search(str(exc))
        raise ApiError(400, str(exc), param=match.group(1) if match else None, code="invalid_value") from None
    return dict(to=targets, messages=messages, parameters=parameters, stream=stream,
                metadata={"via": "http", "api": "openai.chat"})


def completion(record: JobRecord, requested_model: str) -> Dict[str, Any]:
    """A finished job as an OpenAI `chat.completion` (or the ApiError its failure means)."""
    if record.status is not JobStatus.SUCCEEDED:
        if record.status is JobStatus.CANCELLED:
            raise ApiError(409, f"job {record.id} was cancelled", code="cancelled", should_retry=False)
        raise from_failed_job(record.id, record.error)
    result = record.result or {}
    usage = result.get("usage") or {}
    message: Dict[str, Any] = {"role": "assistant", "content": result.get("text"), "refusal": result.get("refusal")}
    return {
        "id": f"chatcmpl-{record.id}",
        "object": "chat.completion",
        "created": int(record.finished_at or time.time()),
        "model": result.get("model") or requested_model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": openai_finish_reason(result.get("finish_reason"))}],
        "usage": _usage(usage),
        "promptq": {"job_id": record.id, "target": result.get("target"), "attempts": len(record.attempts),
                    "finish_reason": result.get("finish_reason")},
    }


def _usage(usage: Dict[str, Any]) -> Dict[str, int]:
    prompt = usage.get("input_tokens") or 0
    completion_tokens = usage.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": usage.get("total_tokens") or prompt + completion_tokens}


async def _stream(state: ServerState, job_id: str, model: str, include_usage: bool,
                  cancel_on_disconnect: bool) -> AsyncIterator[bytes]:
    created = int(time.time())

    def chunk(delta: Optional[Dict[str, Any]], finish: Optional[str] = None, model_name: str = model,
              usage: Any = None, choices: bool = True) -> bytes:
        data: Dict[str, Any] = {"id": f"chatcmpl-{job_id}", "object": "chat.completion.chunk", "created": created,
                                "model": model_name, "choices": []}
        if choices:
            data["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
        if include_usage:
            data["usage"] = usage
        return sse(data)

    finished = False
    events = state.client.events(job_id, timeout=state.config.request_timeout_s)
    try:
        async with contextlib.aclosing(events):
            yield chunk({"role": "assistant", "content": ""})
            sent_text = False
            async for event in events:
                kind = event["type"]
                if kind == "chunk":
                    sent_text = True
                    yield chunk({"content": event["text"]})
                elif kind == "reset" and sent_text:
                    finished = True  # the job goes on; this stream cannot take its text back
                    yield _error(job_id, f"attempt {event.get('attempt')} on {event.get('provider')} failed after "
                                         f"sending text ({event.get('reason')}); promptq retries it: read the final "
                                         f"answer by job id {job_id}", "stream_reset")
                    return
                elif kind == "done":
                    finished = True
                    if not sent_text and event.get("from_record"):
                        # The job did not stream (an idempotent retry of a plain request): its text is in the record.
                        text = await _record_text(state, job_id)
                        if text:
                            yield chunk({"content": text})
                    name = event.get("model") or model
                    if event.get("finish_reason") == "refusal":
                        # The refusal's words are in the record, not in the event.
                        record = await state.client.status(job_id)
                        refusal = (record.result or {}).get("refusal") if record else None
                        if refusal:
                            yield chunk({"refusal": refusal})
                    yield chunk({}, openai_finish_reason(event.get("finish_reason")), name)
                    if include_usage:
                        yield chunk(None, model_name=name, usage=_usage(event.get("usage") or {}), choices=False)
                    yield DONE
                    return
                elif kind in ("error", "cancelled"):
                    finished = True
                    error = event.get("error") or {}
                    yield _error(job_id, f"job {job_id} {'failed: ' + str(error.get('message')) if kind == 'error' else 'was cancelled'}",
                                 error.get("category") or kind)
                    return
    except TimeoutError:
        finished = True
        yield _error(job_id, f"job {job_id} did not finish within {state.config.request_timeout_s:g}s; it goes on",
                     "timeout")
    finally:
        if not finished and cancel_on_disconnect:
            await cancel_quietly(state, job_id)


async def _record_text(state: ServerState, job_id: str) -> Optional[str]:
    record = await state.client.status(job_id)
    return record.text if record else None


def _error(job_id: str, message: str, code: str) -> bytes:
    return sse({"error": {"message": message, "type": "server_error", "param": None, "code": code,
                          "job_id": job_id}})


def models(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    return JSONResponse(state.router.models())


def model(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    try:
        return JSONResponse(state.router.model(request.path_params["model"]))
    except ApiError as exc:
        return exc.response("openai")

