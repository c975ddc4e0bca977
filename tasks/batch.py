"""Batches: a JSONL file of prompts in, one job per line, counters, results out.

    sub = submit_batch(client, "prompts.jsonl", targets=["openai:gpt-4o-mini", "ollama:llama3.2"])
    batch_status(client, sub.batch_id)      # counters as the workers keep them
    for line in iter_results(client, sub.batch_id): ...   # OpenAI Batch output lines
    cancel_batch(client, sub.batch_id)      # what has not started never will

A batch is the hash `Keys.batch(id)` (the workers' counters, plus what
this module writes: total, created_at, input, targets, submit_state) and
the list `Keys.batch_jobs(id)` of job ids in input order. A job's id is
derived from the batch id and its line's `custom_id`, so submitting the same
file again with the same batch id finds the records it made before, sends
nothing for them, and sends only the lines that are missing: an interrupted
submission is resumed, never doubled.

Line parsing lives in `tasks.batch_input`, bulk sending in
`tasks.batch_submit`, result lines in `tasks.batch_results`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .batch_input import BatchLine, InvalidLine, Source, iter_batch, parse_targets, source_name
from .batch_results import BatchNotFinished, BatchNotFound, batch_status, iter_results, result_line, submission_stalled
from .batch_submit import CHUNK_LINES, BatchBusyError, BulkSubmitter
from .job import JobSpec, JobValidationError, Target
from .lanes import BATCH, LaneError, parse_lane
from .pricing import NANO

__all__ = [
    "BatchBusyError", "BatchInputError", "BatchNotFinished", "BatchNotFound", "BatchSubmission",
    "batch_status", "cancel_batch", "iter_results", "job_id_for", "new_batch_id", "result_line", "submission_stalled",
    "submit_batch",
]

# No ':' -- the list key is `<prefix>:batch:<id>:jobs`, and a batch named
# "x:jobs" would otherwise share a key with batch "x".
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: Valid specs kept in memory between the validating and the sending pass.
KEEP_BYTES = 256 * 1024 * 1024
class BatchInputError(ValueError):
    """The file was refused; `invalid` lists every bad line. Nothing was enqueued."""

    def __init__(self, message: str, invalid: Sequence[InvalidLine] = (), source: str = "<lines>"):
        self.invalid = list(invalid)
        self.source = source
        super().__init__(message)


@dataclass
class BatchSubmission:
    """What `submit_batch` did. `skipped_existing` lines had a job already (a resumed run)."""

    batch_id: str
    submitted: int
    skipped_existing: int
    invalid: List[InvalidLine] = field(default_factory=list)
    lines: int = 0  # valid lines in the file


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


def check_batch_id(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not _BATCH_ID_RE.match(batch_id):
        raise JobValidationError(
            "batch_id", "must be 1-100 characters: letters, digits, '_', '.', '-' (starting with a letter or digit)"
        )
    return batch_id


def job_id_for(batch_id: str, custom_id: str) -> str:
    """The job id of one line: stable, so a resubmitted line finds its record."""
    return f"{batch_id}-{hashlib.sha1(custom_id.encode('utf-8')).hexdigest()[:20]}"


def submit_batch(
    client: Any,
    lines_or_path: Source,
    targets: Optional[Sequence[str]] = None,
    batch_id: Optional[str] = None,
    skip_invalid: bool = False,
    *,
    default_provider: Optional[str] = None,
    source: Optional[str] = None,
    on_progress: Optional[Callable[[int, int, int], None]] = None,
    on_validated: Optional[Callable[[str, int], None]] = None,
    chunk_lines: int = CHUNK_LINES,
    priority: str = BATCH,
    spill: bool = False,
    rate_limit_deadline_s: Optional[float] = None,
    max_cost_usd: Optional[float] = None,
) -> BatchSubmission:
    """Validate the whole input, then enqueue every valid line as one job of the batch.

    Raises `BatchInputError` (nothing enqueued) if any line is bad, unless
    `skip_invalid`; `JobValidationError` for a bad target or batch id;
    `BatchBusyError` if the same batch is being submitted elsewhere.
    `on_validated(batch_id, lines)` runs once the file passed, before
    anything is sent; `on_progress(lines_done, lines, sent)` after each chunk.
    `priority` is the lane of every job: "batch" (default: workers take an
    interactive job first) or "interactive". `spill` and
    `rate_limit_deadline_s` apply to every line (see JobSpec).
    `max_cost_usd`: the batch's spend limit (see `set_spend_limit`), set
    before any line is sent; a resumed submission without it keeps the
    batch's limit.
    """
    try:
        lane = parse_lane(priority, "priority")
    except LaneError as exc:
        raise JobValidationError("priority", str(exc).split(": ", 1)[1]) from None
    limit_nusd = None if max_cost_usd is None else spend_limit_nano(max_cost_usd)
    line_defaults: Dict[str, Any] = {"lane": lane}
    if spill:
        line_defaults["spill"] = True
    if rate_limit_deadline_s is not None:
        line_defaults["rate_limit_deadline_s"] = rate_limit_deadline_s
    # Checked once, as a job would check them, before anything is read.
    JobSpec(id="x", targets=[Target("mock", "m")], prompt="x", **line_defaults).validate()
    targets = parse_targets(targets or [])
    if default_provider is not None:  # None: each line format's own vendor (batch_input.FORMAT_PROVIDERS)
        default_provider = Target.parse(f"{default_provider}:model", "--default-provider").provider
    batch_id = new_batch_id() if batch_id is None else check_batch_id(batch_id)
    if not isinstance(lines_or_path, (str, Path, list, tuple)):
        lines_or_path = list(lines_or_path)  # read twice below: validate, then send
    name = source or source_name(lines_or_path)
    options = dict(targets=targets, default_provider=default_provider,
                   max_prompt_chars=client.settings.max_prompt_chars)

    checked = _check_all(lines_or_path, options)
    invalid, valid = checked.invalid, checked.valid
    if invalid and not skip_invalid:
        raise BatchInputError(f"{name}: {len(invalid)} invalid line(s); nothing was enqueued", invalid, name)
    if not valid:
        raise BatchInputError(f"{name}: no valid line to submit", invalid, name)
    if on_validated:
        on_validated(batch_id, valid)

    submitter = BulkSubmitter(client, batch_id, chunk_lines=chunk_lines, line_defaults=line_defaults)
    submitter.claim()
    done = sent_total = 0

    def progress(chunk: int, sent: int) -> None:
        nonlocal done, sent_total
        done += chunk
        sent_total += sent
        if on_progress:
            on_progress(done, valid, sent_total)

    try:
        pipe = client.redis.pipeline(transaction=True)
        pipe.hsetnx(submitter.batch_key, "created_at", time.time())
        pipe.hset(submitter.batch_key, mapping={
            "input": name, "targets": json.dumps(targets or checked.chains), "lines": valid,
            "invalid": len(invalid), "submit_state": "submitting", "lane": lane,
            **({} if limit_nusd is None else {"max_cost_nusd": limit_nusd}),
        })
        # The refused lines are kept with the batch, so its results still
        # answer every input line (tasks.batch_results).
        refused_key = client.keys.batch_refused(batch_id)
        pipe.delete(refused_key)
        if invalid:
            pipe.rpush(refused_key, *(json.dumps({"line": i.line_no, "custom_id": i.custom_id, "reason": i.reason})
                                      for i in invalid))
            pipe.expire(refused_key, int(client.settings.result_ttl_s * 2))
        pipe.execute()
        if checked.kept is not None:
            valid_lines: Iterable[BatchLine] = (BatchLine(n, cid, json.loads(text)) for n, cid, text in checked.kept)
        else:
            valid_lines = (i for i in iter_batch(lines_or_path, **options) if isinstance(i, BatchLine))
        sent, existing = submitter.run(valid_lines, job_id=lambda cid: job_id_for(batch_id, cid), on_chunk=progress)
        client.redis.hset(submitter.batch_key, mapping={"submit_state": "complete", "submitted_at": time.time()})
    finally:
        try:
            submitter.unclaim()
        except Exception:  # Redis gone: the claim lapses by itself
            pass
    return BatchSubmission(batch_id, sent, existing, invalid, valid)


@dataclass
class _Checked:
    """What the validating pass learnt about the input."""

    invalid: List[InvalidLine] = field(default_factory=list)
    valid: int = 0
    chains: List[str] = field(default_factory=list)  # distinct target lists, for the description
    kept: Optional[List[Tuple[int, str, str]]] = field(default_factory=list)  # (line, custom_id, spec JSON)


def _check_all(source: Source, options: Dict[str, Any]) -> _Checked:
    checked = _Checked()
    kept_bytes = 0
    for item in iter_batch(source, **options):
        if isinstance(item, InvalidLine):
            checked.invalid.append(item)
            continue
        checked.valid += 1
        chain = ",".join(item.spec["targets"])
        if len(checked.chains) < 20 and chain not in checked.chains:
            checked.chains.append(chain)
        # Validating a line costs about ten times what decoding its spec
        # does, so the sending pass reuses this one's specs, kept as compact
        # JSON -- up to KEEP_BYTES; past that (a huge file) it parses again.
        if checked.kept is not None:
            text = json.dumps(item.spec, separators=(",", ":"))
            kept_bytes += len(text) + len(item.custom_id) + 100
            checked.kept.append((item.line_no, item.custom_id, text))
            if kept_bytes > KEEP_BYTES:
                checked.kept = None
    return checked


def spend_limit_nano(max_cost_usd: Any) -> int:
    """A spend limit in USD as the integer nano-dollars the workers compare with; JobValidationError if bad."""
    if isinstance(max_cost_usd, bool) or not isinstance(max_cost_usd, (int, float)) or not 0 < max_cost_usd < 1e9:
        raise JobValidationError("max_cost_usd", f"must be a number of US dollars above 0, not {max_cost_usd!r}")
    return int(round(max_cost_usd * NANO))


def set_spend_limit(client: Any, batch_id: str, max_cost_usd: Optional[float]) -> Dict[str, Any]:
    """Set, change or (None) remove a batch's spend limit, even while it runs; returns its status.

    Once the batch's summed `cost_usd` reaches the limit, each job of it not
    started yet is cancelled when a worker takes it, calling no provider.
    Jobs already running finish, so the batch may end above the limit by
    what they cost. Jobs on models with no known price count nothing."""
    batch_status(client, batch_id)  # BatchNotFound for a typo
    key = client.keys.batch(batch_id)
    if max_cost_usd is None:
        client.redis.hdel(key, "max_cost_nusd")
    else:
        client.redis.hset(key, "max_cost_nusd", spend_limit_nano(max_cost_usd))
    return batch_status(client, batch_id)


def cancel_batch(client: Any, batch_id: str, chunk: int = 1000) -> Dict[str, int]:
    """Cancel every job not started yet; count outcomes by the store's answer.

    Queued and retrying jobs are cancelled (their messages are dropped when
    a worker sees them). Running ones are flagged and told by pub/sub, so
    their workers abandon the call (tasks.cancel); they count as `running`.
    """
    batch_status(client, batch_id)  # BatchNotFound for a typo, not "0 cancelled"
    list_key = client.keys.batch_jobs(batch_id)
    counts: Dict[str, int] = {}
    for start in range(0, client.redis.llen(list_key), chunk):
        ids = [i.decode() for i in client.redis.lrange(list_key, start, start + chunk - 1)]
        pipe = client.redis.pipeline(transaction=False)
        for job_id in ids:
            client.store.cancel(job_id, batch_id, pipe=pipe)
        running = []
        for job_id, outcome in zip(ids, pipe.execute()):
            word = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
            if word == "requested":
                word = "running"
                running.append(job_id)
            counts[word] = counts.get(word, 0) + 1
        if running:
            pipe = client.redis.pipeline(transaction=False)
            for job_id in running:
                pipe.publish(client.keys.cancels, job_id)
            pipe.execute()
    # No `cancelled` event per job: batch jobs do not stream, and a follower
    # of one reads the final record within a second anyway (Client.events).
    return counts
