"""OpenAI Batches (`/v1/batches`) backed by promptq batches.

`POST /v1/batches` answers `validating` at once; a task then checks every
line of the input file (method, url, routable `body.model`, and promptq's
own line validation) and either submits the whole file as one promptq batch
(`in_progress`) or submits nothing (`failed`, with one error per bad line).
Each line goes to the targets its `body.model` routes to (see routing.py),
so a batch may mix providers and fail over per line. Retrieving a batch
whose jobs are all done writes the output file (succeeded lines, in input
order) and the error file (the rest), then says `completed` (or `cancelled`
after a cancel). Output lines are OpenAI Batch output lines.

OpenAI's batch has no spend limit; `metadata.promptq_max_cost_usd` (a
string, as all metadata values are) sets the promptq batch's
`max_cost_usd` before any line is sent.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Dict, List

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from promptq.providers.finish_reasons import openai_finish_reason
from promptq.tasks.batch import BatchBusyError, BatchInputError, spend_limit_nano
from promptq.tasks.job import JobValidationError

from .batch_book import BatchBook
from .errors import ApiError
from .jobs import OPENAI_NOT_PARAMETERS, ServerState, read_json

ENDPOINT = "/v1/chat/completions"
#: The metadata key that carries a spend limit (USD) for the batch.
SPEND_LIMIT_KEY = "promptq_max_cost_usd"
#: A batch still `validating` this long after its creation, with no
#: submission running here, lost its server mid-way: it is resumed.
RESUME_AFTER_S = 60
_tasks: Dict[str, "asyncio.Task[None]"] = {}  # submissions under way here (the reference keeps each alive)


def _book(request: Request) -> BatchBook:
    return request.app.state.openai_batches


async def create(request: Request) -> Response:
    try:
        body = await read_json(request)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise ApiError(400, f"{name}: required", param=name, code="invalid_value")
        if body["endpoint"] != ENDPOINT:
            raise ApiError(400, f"endpoint: only {ENDPOINT} is supported, got {body['endpoint']!r}", param="endpoint",
                           code="invalid_value")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise ApiError(400, "metadata: must be an object", param="metadata", code="invalid_value")
        _spend_limit(metadata)  # refused now, not after the batch said `validating`
        meta = request.app.state.files.get(body["input_file_id"])
        if meta["purpose"] != "batch":
            raise ApiError(400, f"input_file_id: file {meta['id']} has purpose {meta['purpose']!r}, not 'batch'",
                           param="input_file_id", code="invalid_value")
        now = int(time.time())
        batch = _book(request).put({
            "id": f"batch_{uuid.uuid4().hex}", "object": "batch", "endpoint": ENDPOINT, "errors": None,
            "input_file_id": meta["id"], "completion_window": body["completion_window"], "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": None, "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
            "cancelling_at": None, "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
        })
        _start(request.app.state, batch["id"])
        return JSONResponse(batch)
    except ApiError as exc:
        return exc.response("openai")


def _spend_limit(metadata: Any) -> Any:
    """`metadata.promptq_max_cost_usd` as a number of USD, None if absent; ApiError if malformed."""
    raw = (metadata or {}).get(SPEND_LIMIT_KEY)
    if raw is None:
        return None
    param = f"metadata.{SPEND_LIMIT_KEY}"
    try:
        value = float(raw)
        spend_limit_nano(value)
    except (TypeError, ValueError, JobValidationError):
        raise ApiError(400, f"{param}: must be a number of US dollars above 0, got {raw!r}", param=param,
                       code="invalid_value") from None
    return value


def _start(app_state: Any, batch_id: str) -> None:
    task = asyncio.ensure_future(_submit(app_state, batch_id))
    _tasks[batch_id] = task
    task.add_done_callback(lambda _: _tasks.pop(batch_id, None))


async def _submit(app_state: Any, batch_id: str) -> None:
    state: ServerState = app_state.promptq
    book: BatchBook = app_state.openai_batches
    batch = book.get(batch_id)
    path = app_state.files.data_path(batch["input_file_id"])
    try:
        raw_lines = await asyncio.to_thread(path.read_bytes)
        lines, errors = convert_lines(state, raw_lines.splitlines())
        if not errors:
            try:
                # Resumable: a batch resumed after a crash sends only the lines not sent yet.
                sub = await state.client.submit_batch(lines, None, batch_id=batch_id, source=batch["input_file_id"],
                                                      max_cost_usd=_spend_limit(batch.get("metadata")))
            except BatchBusyError:
                return  # another serve process is submitting it
            except BatchInputError as exc:
                errors = [{"code": "invalid_line", "message": i.reason, "param": None, "line": i.line_no}
                          for i in exc.invalid] or [{"code": "invalid_file", "message": str(exc), "param": None,
                                                     "line": None}]
            else:
                counts = {"total": sub.lines, "completed": 0, "failed": 0}
                if book.get(batch_id)["status"] == "cancelling":  # cancelled while validating
                    await state.client.cancel_batch(batch_id)
                    book.update(batch_id, in_progress_at=int(time.time()), request_counts=counts)
                else:
                    book.update(batch_id, status="in_progress", in_progress_at=int(time.time()), request_counts=counts)
                return
        book.update(batch_id, status="failed", failed_at=int(time.time()),
                    errors={"object": "list", "data": errors[:1000]})
    except Exception as exc:  # a batch must never stay `validating` because its task died
        book.update(batch_id, status="failed", failed_at=int(time.time()),
                    errors={"object": "list", "data": [{"code": "internal_error", "message": f"{type(exc).__name__}: {exc}",
                                                         "param": None, "line": None}]})


def convert_lines(state: ServerState, raw_lines: List[bytes]) -> tuple:
    """OpenAI batch lines -> promptq plain lines routed by `body.model`; (lines, errors).

    A line that is not a well-formed OpenAI line is passed on untouched, so
    promptq's batch validation reports it in its own words.
    """
    lines: List[str] = []
    errors: List[Dict[str, Any]] = []
    for n, raw in enumerate(raw_lines, 1):
        try:
            obj = json.loads(raw)
        except ValueError:
            lines.append(raw.decode("utf-8", "replace"))
            continue
        body = obj.get("body") if isinstance(obj, dict) else None
        if not isinstance(body, dict):
            lines.append(raw.decode("utf-8", "replace"))
            continue
        problem = None
        if obj.get("method") != "POST":
            problem = ("method", f"method must be \"POST\", got {obj.get('method')!r}")
        elif obj.get("url") != ENDPOINT:
            problem = ("url", f"url must be {ENDPOINT!r}, got {obj.get('url')!r}")
        elif body.get("stream"):
            problem = ("body.stream", "a batch line cannot stream")
        elif body.get("n") not in (None, 1):
            problem = ("body.n", "only one choice per line is supported")
        else:
            try:
                targets = state.router.targets(body.get("model"), "body.model")
            except ApiError as exc:
                problem = ("body.model", exc.message)
        if problem:
            errors.append({"code": "invalid_line", "message": problem[1], "param": problem[0], "line": n})
            continue
        lines.append(json.dumps({
            "custom_id": obj.get("custom_id"), "messages": body.get("messages"), "targets": targets,
            "parameters": {k: v for k, v in body.items() if k not in OPENAI_NOT_PARAMETERS},
        }))
    return lines, errors


async def retrieve(request: Request) -> Response:
    try:
        return JSONResponse(await refreshed(request.app.state, request.path_params["batch_id"]))
    except ApiError as exc:
        return exc.response("openai")


async def refreshed(app_state: Any, batch_id: str) -> Dict[str, Any]:
    """The batch object, brought up to date from promptq's counters (finalised once every job is done)."""
    book: BatchBook = app_state.openai_batches
    state: ServerState = app_state.promptq
    async with book.lock(batch_id):
        batch = book.get(batch_id)
        if (batch["status"] == "validating" and batch_id not in _tasks
                and time.time() - batch["created_at"] > RESUME_AFTER_S):
            _start(app_state, batch_id)
        if batch["status"] not in ("in_progress", "cancelling", "finalizing"):
            return batch
        status = await state.client.batch_status(batch_id)
        counts = {"total": status["total"], "completed": status["succeeded"],
                  "failed": status["failed"] + status["cancelled"]}
        if not status["finished"]:
            return book.update(batch_id, request_counts=counts)
        batch = book.update(batch_id, status="finalizing", finalizing_at=int(time.time()), request_counts=counts)
        ok: List[Dict[str, Any]] = []
        bad: List[Dict[str, Any]] = []
        async for line in state.client.iter_results(batch_id):
            (ok if line.get("response") else bad).append(output_line(line))
        files = app_state.files
        output = await asyncio.to_thread(files.write_lines, f"{batch_id}_output.jsonl", "batch_output", ok) if ok else None
        error = await asyncio.to_thread(files.write_lines, f"{batch_id}_error.jsonl", "batch_output", bad) if bad else None
        final = "cancelled" if batch.get("cancelling_at") else "completed"
        now = int(time.time())
        return book.update(batch_id, status=final, output_file_id=output and output["id"],
                           error_file_id=error and error["id"], **{f"{final}_at": now})


def output_line(line: Dict[str, Any]) -> Dict[str, Any]:
    """A promptq result line with OpenAI's finish reasons only (the provider's own word stays under `promptq`)."""
    body = (line.get("response") or {}).get("body")
    if body:
        for choice in body.get("choices") or []:
            choice["finish_reason"] = openai_finish_reason(choice.get("finish_reason"))
    return line


async def cancel(request: Request) -> Response:
    state: ServerState = request.app.state.promptq
    book = _book(request)
    batch_id = request.path_params["batch_id"]
    try:
        batch = book.get(batch_id)
        if batch["status"] in ("in_progress", "validating"):
            if batch["status"] == "in_progress":
                await state.client.cancel_batch(batch_id)
            book.update(batch_id, status="cancelling", cancelling_at=int(time.time()))
        return JSONResponse(await refreshed(request.app.state, batch_id))
    except ApiError as exc:
        return exc.response("openai")


async def list_batches(request: Request) -> Response:
    try:
        limit = max(1, min(100, int(request.query_params.get("limit") or 20)))
    except ValueError:
        return ApiError(400, "limit: must be an integer", param="limit").response("openai")
    items = _book(request).list(limit + 1, request.query_params.get("after"))
    page = items[:limit]
    return JSONResponse({"object": "list", "data": page, "has_more": len(items) > limit,
                         "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None})


ROUTES = [
    Route("/v1/batches", create, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel, methods=["POST"]),
]
