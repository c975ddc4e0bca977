"""`POST /v1/chat/completions`: OpenAI's chat API in front of promptq jobs.

Non-streamed, the request waits for the job and answers a `chat.completion`.
With `stream: true` it answers `chat.completion.chunk` SSE lines relayed
live from the job's events (`stream_options.include_usage` adds the usage
chunk), then `data: [DONE]`.

Only the OpenAI shapes are here: the request's handling is chat_route.py's,
shared with /v1/messages, and when each frame is sent chat_stream.py's. An
attempt that fails after sending text ends the stream with an error event
(never spliced), which the openai SDK raises as `APIError`; the job goes on
and its final text can be read by the id in the `x-promptq-job-id` header.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Dict, List, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from promptq.providers.finish_reasons import openai_finish_reason
from promptq.tasks.store import JobRecord

from .chat_route import ChatDialect, chat_messages, check_parameters, serve_chat, succeeded_result
from .errors import ApiError
from .jobs import OPENAI_NOT_PARAMETERS, ServerState, stream_options
from .sse import DONE, OPENAI_KEEPALIVE, sse

_RENAMES = {"targets[0]": "model", "parameters": "parameters"}


async def chat_completions(request: Request) -> Response:
    return await serve_chat(request, _DIALECT)


def _job(state: ServerState, body: Dict[str, Any]) -> Dict[str, Any]:
    targets = state.router.targets(body.get("model"))
    messages = chat_messages(body, code="invalid_value")
    for name in ("tools", "functions", "tool_choice", "function_call"):
        # A tool call would come back as empty text: refused until results carry tool calls.
        if body.get(name):
            raise ApiError(400, f"{name}: not supported by promptq serve yet", param=name, code="unsupported")
    if body.get("n") not in (None, 1):
        raise ApiError(400, "n: only one choice per request is supported", param="n", code="invalid_value")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream: must be true or false", param="stream", code="invalid_value")
    stream_options(body)  # refused here, before a job exists for the request
    parameters = {k: v for k, v in body.items() if k not in OPENAI_NOT_PARAMETERS and v is not None}
    check_parameters(parameters, code="invalid_value")
    return dict(to=targets, messages=messages, parameters=parameters, stream=stream,
                metadata={"via": "http", "api": "openai.chat"})


def completion(record: JobRecord, requested_model: str) -> Dict[str, Any]:
    """A finished job as an OpenAI `chat.completion` (or the ApiError its failure means)."""
    result = succeeded_result(record)
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
                    "finish_reason": result.get("finish_reason"), "cost_usd": result.get("cost_usd")},
    }


def _usage(usage: Dict[str, Any]) -> Dict[str, int]:
    prompt = usage.get("input_tokens") or 0
    completion_tokens = usage.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": usage.get("total_tokens") or prompt + completion_tokens}


class _Frames:
    """`chat.completion.chunk` SSE lines, `[DONE]` last; `stream_options.include_usage` adds the usage chunk."""

    def __init__(self, state: ServerState, job_id: str, body: Dict[str, Any]):
        options = stream_options(body) or {}
        self.state = state
        self.job_id = job_id
        self.model = body["model"]
        self.include_usage = bool(options.get("include_usage"))
        self.created = int(time.time())

    def chunk(self, delta: Optional[Dict[str, Any]], finish: Optional[str] = None, model_name: Optional[str] = None,
              usage: Any = None, choices: bool = True) -> bytes:
        data: Dict[str, Any] = {"id": f"chatcmpl-{self.job_id}", "object": "chat.completion.chunk",
                                "created": self.created, "model": self.model if model_name is None else model_name,
                                "choices": []}
        if choices:
            data["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
        if self.include_usage:
            data["usage"] = usage
        return sse(data)

    def opening(self) -> List[bytes]:
        return [self.chunk({"role": "assistant", "content": ""})]

    def text(self, text: str) -> bytes:
        return self.chunk({"content": text})

    async def closing(self, done: Dict[str, Any]) -> AsyncIterator[bytes]:
        name = done.get("model") or self.model
        if done.get("finish_reason") == "refusal":
            # The refusal's words are in the record, not in the event.
            record = await self.state.client.status(self.job_id)
            refusal = (record.result or {}).get("refusal") if record else None
            if refusal:
                yield self.chunk({"refusal": refusal})
        yield self.chunk({}, openai_finish_reason(done.get("finish_reason")), name)
        if self.include_usage:
            yield self.chunk(None, model_name=name, usage=_usage(done.get("usage") or {}), choices=False)
        yield DONE

    def error(self, message: str, code: str) -> bytes:
        return sse({"error": {"message": message, "type": "server_error", "param": None, "code": code,
                              "job_id": self.job_id}})


_DIALECT = ChatDialect(api="openai.chat", errors="openai", renames=_RENAMES, job=_job, answer=completion,
                       frames=_Frames, keepalive=OPENAI_KEEPALIVE)


def models(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    return JSONResponse(state.router.models())


def model(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    try:
        return JSONResponse(state.router.model(request.path_params["model"]))
    except ApiError as exc:
        return exc.response("openai")

