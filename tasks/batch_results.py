"""Reading a batch back: its counters, and one OpenAI Batch output line per job.

Output lines follow the OpenAI Batch API's output format, so tools written
for it read ours unchanged, plus a `promptq` object saying who answered::

    {"id": JOB_ID, "custom_id": "r1",
     "response": {"status_code": 200, "request_id": JOB_ID,
                  "body": {"id": "chatcmpl-JOB_ID", "object": "chat.completion", "created": 1718000000,
                           "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {"role": "assistant",
                           "content": "..."}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}}},
     "error": null,
     "promptq": {"provider": "openai", "model": "gpt-4o-mini", "attempts": 1, "status": "succeeded",
                 "finish_reason": "stop", "cost_usd": 0.00000855}}

`finish_reason` in the body is always one of OpenAI's words (Claude's
`end_turn` becomes `stop`, `max_tokens` becomes `length`: see
providers/finish_reasons.py), so the SDK's `ChatCompletion` accepts every
line; the provider's own word is `promptq.finish_reason`. A refusal is a
success whose message has `"content": null` (or what was said before it) and
`"refusal": "..."`, with `finish_reason: "content_filter"`.

A failed or cancelled job has `"response": null` and `"error": {"code":
<error category, or "cancelled">, "message": ...}`. With `partial=True`, a
job not finished yet gets `"error": {"code": "not_finished", ...}` (its
status is in `promptq.status`); a record that expired (`result_ttl_s`) gets
`"code": "expired"` and, its spec being gone, `"custom_id": null`. A line
refused at submission (`skip_invalid`) gets `"id": null`, `"error": {"code":
"invalid_request", "message": why}` and `promptq.input_line`, in its input place. So every
job of the batch is answered exactly once, in input order.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterator, List, Optional

from promptq.providers.finish_reasons import openai_finish_reason

from .pricing import NANO

#: Counters the workers and the store's scripts keep in the batch hash.
# `capacity`: jobs waiting for a rate limit (tasks.deferral), apart from
# `queued`; `rate_limited`: 429s waited out (not retries); `spilled`: jobs
# moved to their next target for capacity (not failovers).
COUNTERS = ("total", "queued", "running", "waiting", "capacity", "succeeded", "failed", "cancelled",
            "retried", "rate_limited", "failed_over", "spilled", "recovered", "input_tokens", "output_tokens",
            "cost_nusd")
#: A job in one of these states is done; `done == total` ends a batch.
DONE_STATES = ("succeeded", "failed", "cancelled")
#: Jobs read per pipelined round trip.
READ_CHUNK = 1000


class BatchNotFound(LookupError):
    """No batch with this id (never submitted, or a typo)."""


class BatchNotFinished(RuntimeError):
    """Results were asked for before every job finished (and `partial` was not)."""

    def __init__(self, status: Dict[str, Any]):
        self.status = status
        pending = status["total"] - status["done"]
        where = "" if status["submit_state"] == "complete" else ", and its submission is not complete"
        super().__init__(f"batch {status['batch_id']}: {pending} of {status['total']} job(s) not finished{where}")


def batch_status(client: Any, batch_id: str) -> Dict[str, Any]:
    """The batch's counters and description; `finished` once every job is done."""
    raw = client.redis.hgetall(client.keys.batch(batch_id))
    if not raw:
        raise BatchNotFound(batch_id)
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    status: Dict[str, Any] = {"batch_id": batch_id}
    for name in COUNTERS:
        status[name] = int(fields.get(name) or 0)
    status["done"] = sum(status[s] for s in DONE_STATES)
    status["total_tokens"] = status["input_tokens"] + status["output_tokens"]
    # Summed by the workers in nano-dollars (tasks.pricing): exact, where floats would drift.
    spent = status.pop("cost_nusd")
    status["cost_usd"] = spent / NANO
    limit = int(fields["max_cost_nusd"]) if fields.get("max_cost_nusd") else None
    status["max_cost_usd"] = None if limit is None else limit / NANO
    # Its jobs not started yet are cancelled as workers take them (tasks.store _START).
    status["spend_limit_reached"] = limit is not None and spent >= limit
    status["input"] = fields.get("input")
    status["targets"] = json.loads(fields.get("targets") or "[]")
    status["lines"] = int(fields.get("lines") or 0)
    status["invalid"] = int(fields.get("invalid") or 0)
    status["submit_state"] = fields.get("submit_state", "submitting")
    status["lane"] = fields.get("lane") or "interactive"  # batches from before lanes ran interactive
    status["submitting_until"] = float(fields.get("submitting_until") or 0)
    for name in ("created_at", "submitted_at"):
        status[name] = float(fields[name]) if fields.get(name) else None
    status["finished"] = status["submit_state"] == "complete" and status["done"] >= status["total"]
    return status


def submission_stalled(status: Dict[str, Any], now: Optional[float] = None) -> bool:
    """True when the submission stopped half way and nobody is resuming it."""
    return status["submit_state"] != "complete" and status["submitting_until"] < (now or time.time())


def iter_results(client: Any, batch_id: str, *, partial: bool = False, chunk: int = READ_CHUNK) -> Iterator[Dict[str, Any]]:
    """One output line per job, in input order; `BatchNotFinished` first unless `partial`."""
    status = batch_status(client, batch_id)
    if not partial and not status["finished"]:
        raise BatchNotFinished(status)
    list_key = client.keys.batch_jobs(batch_id)
    # Lines refused at submission (--skip-invalid) go back in their place:
    # before the first job whose input line comes after theirs.
    refused = [json.loads(r) for r in client.redis.lrange(client.keys.batch_refused(batch_id), 0, -1)]
    refused.sort(key=lambda r: r["line"])
    waiting = iter(refused)
    pending = next(waiting, None)
    # LLEN once: the list only grows while a submission runs, and a
    # partial read should answer what was listed when it started.
    length = client.redis.llen(list_key)
    for start in range(0, length, chunk):
        ids = [i.decode() for i in client.redis.lrange(list_key, start, min(length, start + chunk) - 1)]
        pipe = client.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(client.keys.job(job_id))
            pipe.llen(client.keys.attempts(job_id))
        replies = pipe.execute()
        for n, job_id in enumerate(ids):
            if pending is not None:  # the spec is read twice only when a refused line waits
                input_line = _input_line(replies[2 * n])
                while pending is not None and input_line is not None and pending["line"] < input_line:
                    yield refused_line(pending)
                    pending = next(waiting, None)
            yield result_line(job_id, replies[2 * n], replies[2 * n + 1])
    while pending is not None:
        yield refused_line(pending)
        pending = next(waiting, None)


def _input_line(raw_fields: Dict[Any, Any]) -> Optional[int]:
    spec = raw_fields.get(b"spec") or raw_fields.get("spec")
    return (json.loads(spec).get("metadata") or {}).get("input_line") if spec else None


def refused_line(refused: Dict[str, Any]) -> Dict[str, Any]:
    """An input line refused at submission, as an output line: no job, error `invalid_request`."""
    return _error_line(None, refused.get("custom_id"), "invalid_request", refused["reason"],
                       {"provider": None, "model": None, "attempts": 0, "status": "invalid", "input_line": refused["line"]})


def result_line(job_id: str, raw_fields: Dict[Any, Any], attempts: int) -> Dict[str, Any]:
    """A job record (its raw hash) as one OpenAI Batch output line."""
    f = {_text(k): _text(v) for k, v in raw_fields.items()}
    if not f:
        return _error_line(job_id, None, "expired", "no job record (it expired after result_ttl_s)",
                           {"provider": None, "model": None, "attempts": attempts, "status": "expired"})
    spec = json.loads(f.get("spec") or "{}")
    status = f.get("status", "queued")
    targets: List[str] = spec.get("targets") or []
    index = int(f.get("target_index") or 0)
    provider, _, model = (targets[index] if index < len(targets) else ":").partition(":")
    meta = {"provider": provider or None, "model": model or None, "attempts": attempts, "status": status}
    custom_id = spec.get("custom_id")
    if status == "succeeded":
        result = json.loads(f.get("result") or "{}")
        meta["provider"] = (result.get("target") or "").partition(":")[0] or result.get("provider")
        meta["model"] = result.get("model") or meta["model"]
        meta["finish_reason"] = result.get("finish_reason")
        meta["cost_usd"] = result.get("cost_usd")  # None: no price known (tasks.pricing)
        return {"id": job_id, "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": job_id, "body": _completion(job_id, f, result)},
                "error": None, "promptq": meta}
    if status == "failed":
        error = json.loads(f.get("error") or "{}")
        return _error_line(job_id, custom_id, error.get("category") or "unknown", error.get("message") or "failed", meta)
    if status == "cancelled":
        error = json.loads(f.get("error") or "{}")
        return _error_line(job_id, custom_id, "cancelled", error.get("message") or "cancelled before it ran", meta)
    return _error_line(job_id, custom_id, "not_finished", f"the job is {status}", meta)


def _completion(job_id: str, f: Dict[str, str], result: Dict[str, Any]) -> Dict[str, Any]:
    usage = result.get("usage") or {}
    prompt_tokens = usage.get("input_tokens") or 0
    completion_tokens = usage.get("output_tokens") or 0
    refusal = result.get("refusal")
    text = result.get("text")
    return {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion",
        "created": int(float(f.get("finished_at") or time.time())),
        "model": result.get("model"),
        "choices": [{
            "index": 0,
            # As OpenAI writes a refusal: content null unless text came before it.
            "message": {"role": "assistant", "content": (text or None) if refusal else text, "refusal": refusal},
            # OpenAI's words only; providers that report none stopped normally.
            "finish_reason": "content_filter" if refusal else openai_finish_reason(result.get("finish_reason")),
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": usage.get("total_tokens") or prompt_tokens + completion_tokens,
        },
    }


def _error_line(job_id: Optional[str], custom_id: Optional[str], code: str, message: str, meta: Dict[str, Any]) -> Dict[str, Any]:
    return {"id": job_id, "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}, "promptq": meta}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
