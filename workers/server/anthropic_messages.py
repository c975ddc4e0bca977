"""`POST /v1/messages`: Anthropic's Messages API in front of promptq jobs.

Non-streamed it answers a `message`; streamed, Anthropic's event sequence:
`message_start`, `content_block_start`, `ping`, `content_block_delta`
(text_delta) per chunk, `content_block_stop`, `message_delta` (stop_reason,
usage), `message_stop`. A job that fails, is cancelled, or whose attempt
fails after sending text (chat_stream.py: never spliced) ends the stream
with an `error` event, which the anthropic SDK raises. Only the Anthropic
shapes are here: the request's handling is chat_route.py's.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Dict, List

from starlette.requests import Request
from starlette.responses import Response

from promptq.providers.finish_reasons import anthropic_stop_reason
from promptq.tasks.store import JobRecord

from .chat_route import ChatDialect, chat_messages, check_parameters, serve_chat, succeeded_result
from .errors import ApiError
from .jobs import ServerState, text_content
from .sse import ANTHROPIC_KEEPALIVE, sse

_PARAMETERS = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences")
_KNOWN = {"model", "messages", "system", "stream", "metadata", "promptq", "tools", "tool_choice", "thinking",
          "service_tier", *_PARAMETERS}
_RENAMES = {"targets[0]": "model", "system_prompt": "system"}


async def messages(request: Request) -> Response:
    return await serve_chat(request, _DIALECT)


def job_from_request(state: ServerState, body: Dict[str, Any], *, allow_stream: bool = True) -> Dict[str, Any]:
    """A Messages request (or a Message Batches `params`) as `AsyncClient.submit` keywords; 400 naming the field."""
    targets = state.router.targets(body.get("model"))
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise ApiError(400, f"{unknown[0]}: Extra inputs are not permitted", param=unknown[0])
    for name in ("tools", "tool_choice", "thinking"):
        if body.get(name):
            raise ApiError(400, f"{name}: not supported by promptq serve yet", param=name)
    messages = chat_messages(body)
    system = text_content(body.get("system"))
    if system is not None and not isinstance(system, str):
        raise ApiError(400, "system: must be a string or a list of text blocks", param="system")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) or (stream and not allow_stream):
        raise ApiError(400, "stream: " + ("must be true or false" if allow_stream else "a batch request cannot stream"),
                       param="stream")
    parameters = {k: body[k] for k in _PARAMETERS if body.get(k) is not None}
    check_parameters(parameters)
    return dict(to=targets, messages=messages, system_prompt=system, parameters=parameters, stream=stream,
                metadata={"via": "http", "api": "anthropic.messages"})


def message(record: JobRecord, requested_model: str) -> Dict[str, Any]:
    """A finished job as an Anthropic `message` (or the ApiError its failure means)."""
    return message_body(record.id, succeeded_result(record), requested_model)


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


def _event(kind: str, **data: Any) -> bytes:
    return sse({"type": kind, **data}, event=kind)


class _Frames:
    """Anthropic's stream events for one job."""

    def __init__(self, state: ServerState, job_id: str, body: Dict[str, Any]):
        self.job_id = job_id
        self.model = body["model"]

    def opening(self) -> List[bytes]:
        return [
            _event("message_start", message={
                "id": f"msg_{self.job_id}", "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0}}),
            _event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            _event("ping"),
        ]

    def text(self, text: str) -> bytes:
        return _event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})

    async def closing(self, done: Dict[str, Any]) -> AsyncIterator[bytes]:
        usage = done.get("usage") or {}
        yield _event("content_block_stop", index=0)
        yield _event("message_delta", delta={"stop_reason": anthropic_stop_reason(done.get("finish_reason")),
                                             "stop_sequence": None},
                     usage={"input_tokens": usage.get("input_tokens") or 0,
                            "output_tokens": usage.get("output_tokens") or 0})
        yield _event("message_stop")

    def error(self, message: str, code: str) -> bytes:
        # Anthropic's stream errors carry a type, not a code: promptq's are all api_error.
        return sse({"type": "error", "error": {"type": "api_error", "message": message}}, event="error")


_DIALECT = ChatDialect(api="anthropic.messages", errors="anthropic", renames=_RENAMES, job=job_from_request,
                       answer=message, frames=_Frames, keepalive=ANTHROPIC_KEEPALIVE)
