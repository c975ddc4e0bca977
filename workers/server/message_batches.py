"""Anthropic Message Batches (`/v1/messages/batches`) backed by promptq batches.

`POST` takes `{"requests": [{"custom_id", "params": {...Messages request}}]}`,
checks every request (a bad one is a 400 naming `requests[i].params.FIELD`;
nothing is submitted), and submits them as one promptq batch, each request
routed by its own `params.model`. `results` answers JSONL in Anthropic's
result shapes (`succeeded` with a `message`, `errored`, `canceled`,
`expired`), in input order, once the batch has ended.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from promptq.providers.finish_reasons import anthropic_stop_reason

from .anthropic_messages import job_from_request, message_body
from .batch_book import BatchBook
from .errors import ApiError
from .jobs import ServerState, read_json

MAX_REQUESTS = 100_000


def _book(request: Request) -> BatchBook:
    return request.app.state.anthropic_batches


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


async def create(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    try:
        body = await read_json(request)
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise ApiError(400, "requests: must be a non-empty array", param="requests")
        if len(requests) > MAX_REQUESTS:
            raise ApiError(400, f"requests: at most {MAX_REQUESTS} per batch", param="requests")
        lines: List[str] = []
        for i, item in enumerate(requests):
            where = f"requests[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str) or not isinstance(
                    item.get("params"), dict):
                raise ApiError(400, f"{where}: must be {{\"custom_id\": str, \"params\": {{...}}}}", param=where)
            try:
                job = job_from_request(state, item["params"], allow_stream=False)
            except ApiError as exc:
                exc.message = f"{where}.params.{exc.message}"
                raise
            lines.append(json.dumps({"custom_id": item["custom_id"], "messages": job["messages"],
                                     "system": job["system_prompt"], "parameters": job["parameters"],
                                     "targets": job["to"]}))
        batch_id = f"msgbatch_{uuid.uuid4().hex}"
        try:
            await state.client.submit_batch(lines, None, batch_id=batch_id, source="messages.batches")
        except ValueError as exc:  # BatchInputError: e.g. a duplicate custom_id
            invalid = getattr(exc, "invalid", None)
            detail = f"requests[{invalid[0].line_no - 1}]: {invalid[0].reason}" if invalid else str(exc)
            raise ApiError(400, detail, param="requests") from None
        now = time.time()
        _book(request).put({"id": batch_id, "created_at": now, "cancel_initiated_at": None, "ended_at": None})
        return JSONResponse(await _object(request, batch_id))
    except ApiError as exc:
        return exc.response("anthropic")


async def _object(request: Request, batch_id: str) -> Dict[str, Any]:
    state: ServerState = request.app.state.promptq
    book = _book(request)
    record = book.get(batch_id)
    status = await state.client.batch_status(batch_id)
    if status["finished"] and not record.get("ended_at"):
        record = book.update(batch_id, ended_at=time.time())
    ended = record.get("ended_at")
    processing = "ended" if ended else ("canceling" if record.get("cancel_initiated_at") else "in_progress")
    base = str(request.base_url).rstrip("/")
    return {
        "id": batch_id, "type": "message_batch", "processing_status": processing,
        "request_counts": {"processing": status["total"] - status["done"], "succeeded": status["succeeded"],
                           "errored": status["failed"], "canceled": status["cancelled"], "expired": 0},
        "created_at": _iso(record["created_at"]),
        "expires_at": _iso(record["created_at"] + timedelta(days=1).total_seconds()),
        "ended_at": _iso(ended) if ended else None,
        "cancel_initiated_at": _iso(record["cancel_initiated_at"]) if record.get("cancel_initiated_at") else None,
        "archived_at": None,
        "results_url": f"{base}/v1/messages/batches/{batch_id}/results" if ended else None,
    }


async def retrieve(request: Request) -> Response:
    try:
        return JSONResponse(await _object(request, request.path_params["batch_id"]))
    except ApiError as exc:
        return exc.response("anthropic")


async def cancel(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    batch_id = request.path_params["batch_id"]
    try:
        record = _book(request).get(batch_id)
        if not record.get("ended_at") and not record.get("cancel_initiated_at"):
            await state.client.cancel_batch(batch_id)
            _book(request).update(batch_id, cancel_initiated_at=time.time())
        return JSONResponse(await _object(request, batch_id))
    except ApiError as exc:
        return exc.response("anthropic")


async def results(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    batch_id = request.path_params["batch_id"]
    try:
        obj = await _object(request, batch_id)
        if obj["processing_status"] != "ended":
            raise ApiError(400, f"batch {batch_id} is still {obj['processing_status']}; results come once it has ended")
    except ApiError as exc:
        return exc.response("anthropic")

    async def lines():
        async for line in state.client.iter_results(batch_id):
            yield (json.dumps(result_line(line)) + "\n").encode("utf-8")

    return StreamingResponse(lines(), media_type="application/binary")


def result_line(line: Dict[str, Any]) -> Dict[str, Any]:
    """A promptq result line in Anthropic's batch result shape."""
    custom_id = line.get("custom_id")
    response = line.get("response")
    if response:
        body = response["body"]
        choice = (body.get("choices") or [{}])[0]
        usage = body.get("usage") or {}
        raw_reason = (line.get("promptq") or {}).get("finish_reason") or choice.get("finish_reason")
        result = {"text": (choice.get("message") or {}).get("content"), "model": body.get("model"),
                  "finish_reason": raw_reason,
                  "usage": {"input_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("completion_tokens")}}
        message = message_body(line["id"], result, body.get("model") or "")
        message["stop_reason"] = anthropic_stop_reason(raw_reason)
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
    error = line.get("error") or {}
    if error.get("code") == "cancelled":
        return {"custom_id": custom_id, "result": {"type": "canceled"}}
    if error.get("code") == "expired":
        return {"custom_id": custom_id, "result": {"type": "expired"}}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": "api_error", "message": error.get("message") or "failed"}}}}


async def list_batches(request: Request) -> Response:
    items = _book(request).list(int(request.query_params.get("limit") or 20), request.query_params.get("after_id"))
    data = [await _object(request, i["id"]) for i in items]
    return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None})


ROUTES = [
    Route("/v1/messages/batches", create, methods=["POST"]),
    Route("/v1/messages/batches", list_batches, methods=["GET"]),
    Route("/v1/messages/batches/{batch_id}", retrieve, methods=["GET"]),
    Route("/v1/messages/batches/{batch_id}/cancel", cancel, methods=["POST"]),
    Route("/v1/messages/batches/{batch_id}/results", results, methods=["GET"]),
]
