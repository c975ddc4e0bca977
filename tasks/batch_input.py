"""Reading a batch file: JSONL lines in three formats, each checked on its own.

Three line formats are accepted, and may be mixed in one file::

    # the OpenAI Batch API input format (chat completions only)
    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [...], "temperature": 0.2}}

    # Anthropic's Message Batches request format
    {"custom_id": "r2", "params": {"model": "claude-3-5-haiku-latest", "max_tokens": 256,
     "system": "...", "messages": [...], "temperature": 0.2, "stop_sequences": [...]}}

    # the plain form
    {"custom_id": "r3", "prompt": "...", "system": "...", "parameters": {...},
     "targets": ["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"], "metadata": {...}}

Targets: a plain line's own `targets` win, then `--to`. An OpenAI or
Anthropic line goes to `--to` when it is given (an override: `body.model`
names an OpenAI model that means nothing to Claude), else to
`<default provider>:<model>`, the default provider being the line format's
own vendor (openai, claude) unless one is given.

Nothing here touches Redis. `iter_batch` yields a `BatchLine` or an
`InvalidLine` per non-blank line, so a caller can validate a whole file
first and then read it again to submit it, without holding a million specs
in memory. Every problem a line has is reported with its line number; a
line is never half accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .job import JobSpec, JobValidationError, Target
from .json_check import JSONValueError, loads_strict

OPENAI_URL = "/v1/chat/completions"
_OPENAI_KEYS = {"custom_id", "method", "url", "body"}
_ANTHROPIC_KEYS = {"custom_id", "params"}
#: The provider an OpenAI / Anthropic line's model belongs to, without --default-provider.
FORMAT_PROVIDERS = {"openai": "openai", "anthropic": "claude"}
_PLAIN_KEYS = {"custom_id", "prompt", "messages", "system", "parameters", "targets", "metadata", "max_retries"}
# Body fields that are not generation parameters: promptq sets them itself.
_BODY_RESERVED = {"model", "messages", "stream", "stream_options"}
#: Metadata key holding the line's number in the input file.
LINE_KEY = "input_line"
# A placeholder until the batch id is known; JobSpec.validate wants an id.
_PLACEHOLDER_ID = "pending"

Source = Union[str, Path, Iterable[Union[str, bytes]]]


@dataclass(frozen=True)
class BatchLine:
    """A valid line: its number, its custom_id, and the job spec (id and batch_id still to fill in)."""

    line_no: int
    custom_id: str
    spec: Dict[str, Any]


@dataclass(frozen=True)
class InvalidLine:
    """A refused line and why, in words a person can act on."""

    line_no: int
    reason: str
    custom_id: Optional[str] = None  # when the line had a usable one

    def format(self, source: str) -> str:
        """`FILE:LINE: reason`, the shape compilers use, so editors can jump to it."""
        return f"{source}:{self.line_no}: {self.reason}"


def source_name(source: Source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "<lines>"


def parse_targets(targets: Sequence[str]) -> List[str]:
    """Check `--to` values once, up front: a bad one is a usage error, not N bad lines."""
    return [str(Target.parse(t, "--to")) for t in targets]


def iter_batch(
    source: Source,
    *,
    targets: Optional[Sequence[str]] = None,
    default_provider: Optional[str] = None,
    max_prompt_chars: int = 1_000_000,
) -> Iterator[Union[BatchLine, InvalidLine]]:
    """Each non-blank line of `source` (a path, or an iterable of lines) as valid or invalid.

    A list of lines can be read twice; a path is re-opened each time. Any
    other iterable is read once, so callers that need two passes pass a list.
    """
    targets = list(targets or [])
    seen: Dict[str, int] = {}
    for line_no, raw in _numbered_lines(source):
        custom_id, item = _parse_line(line_no, raw, targets, default_provider, max_prompt_chars)
        if custom_id is not None:
            # Checked before anything else about the line: the duplicate is
            # the problem to report even if the line has others too.
            first = seen.setdefault(custom_id, line_no)
            if first != line_no:
                item = InvalidLine(line_no, f"duplicate custom_id {custom_id!r} (first on line {first})")
            elif isinstance(item, InvalidLine):
                item = InvalidLine(item.line_no, item.reason, custom_id)
        if item is not None:
            yield item


def _numbered_lines(source: Source) -> Iterator[tuple]:
    if isinstance(source, (str, Path)):
        # Binary, decoded per line: one bad byte is one bad line, not a crash.
        with open(source, "rb") as fh:
            yield from enumerate(fh, 1)
    else:
        yield from enumerate(source, 1)


def _parse_line(
    line_no: int, raw: Union[str, bytes], targets: List[str], default_provider: Optional[str], max_prompt_chars: int
) -> Tuple[Optional[str], Union[BatchLine, InvalidLine, None]]:
    """(the line's custom_id if it has a usable one, the line as valid, invalid or blank)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, InvalidLine(line_no, f"not UTF-8 ({exc.reason} at byte {exc.start})")
    if not raw.strip():
        return None, None
    try:
        obj = loads_strict(raw, "line")
    except JSONValueError as exc:
        reason = str(exc)[len(exc.path) + 2:]
        where = exc.path[len("line"):].lstrip(".")
        return None, InvalidLine(line_no, f"invalid JSON{f' at {where}' if where else ''}: {reason}")
    except ValueError as exc:
        return None, InvalidLine(line_no, f"invalid JSON: {getattr(exc, 'msg', exc)} (column {getattr(exc, 'colno', '?')})")
    if not isinstance(obj, dict):
        return None, InvalidLine(line_no, f"a line must be a JSON object, not {type(obj).__name__}")
    custom_id = obj.get("custom_id")
    if custom_id is None:
        return None, InvalidLine(line_no, "custom_id is missing")
    if not isinstance(custom_id, str) or not custom_id.strip() or len(custom_id) > 512:
        return None, InvalidLine(line_no, "custom_id must be a non-empty string of at most 512 chars")
    openai_form = bool(_OPENAI_KEYS & (set(obj) - {"custom_id"}))
    try:
        if "params" in obj and not openai_form:
            spec = _anthropic_spec(obj, targets, default_provider or FORMAT_PROVIDERS["anthropic"], line_no,
                                   max_prompt_chars)
        elif openai_form:
            spec = _openai_spec(obj, targets, default_provider or FORMAT_PROVIDERS["openai"], line_no,
                                max_prompt_chars)
        else:
            spec = _plain_spec(obj, targets, line_no, max_prompt_chars)
    except _LineError as exc:
        return custom_id, InvalidLine(line_no, str(exc))
    return custom_id, BatchLine(line_no, custom_id, spec)


class _LineError(ValueError):
    pass


def _openai_spec(obj: Dict[str, Any], targets: List[str], default_provider: str, line_no: int,
                 max_chars: int) -> Dict[str, Any]:
    unknown = sorted(set(obj) - _OPENAI_KEYS)
    if unknown:
        raise _LineError(f"unknown field {unknown[0]!r} in an OpenAI batch line")
    if obj.get("method") != "POST":
        raise _LineError(f"method must be \"POST\", got {obj.get('method')!r}")
    if obj.get("url") != OPENAI_URL:
        raise _LineError(f"url must be {OPENAI_URL!r} (only chat completions are supported), got {obj.get('url')!r}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise _LineError("body must be an object")
    if "messages" not in body:
        raise _LineError("body.messages is missing")
    if body.get("stream"):
        raise _LineError("body.stream: a batch line cannot stream")
    n = body.get("n")
    if n not in (None, 1):
        raise _LineError("body.n: only one choice per line is supported")
    model = body.get("model")
    if not targets:
        if not isinstance(model, str) or not model.strip():
            raise _LineError("body.model is missing (or give --to)")
        line_targets: Any = [f"{default_provider}:{model}"]
    else:
        line_targets = targets
    parameters = {k: v for k, v in body.items() if k not in _BODY_RESERVED and k != "n"}
    return _spec(
        line_no, max_chars, renames={"parameters": "body", "messages": "body.messages", "targets[0]": "body.model"},
        targets=line_targets, messages=body["messages"], parameters=parameters, custom_id=obj["custom_id"],
    )


def _anthropic_spec(obj: Dict[str, Any], targets: List[str], default_provider: str, line_no: int,
                    max_chars: int) -> Dict[str, Any]:
    """A Message Batches request: `params` is a Messages API request body."""
    unknown = sorted(set(obj) - _ANTHROPIC_KEYS)
    if unknown:
        raise _LineError(f"unknown field {unknown[0]!r} in an Anthropic batch line (it has custom_id and params)")
    params = obj.get("params")
    if not isinstance(params, dict):
        raise _LineError("params must be an object")
    if "messages" not in params:
        raise _LineError("params.messages is missing")
    if "max_tokens" not in params:
        raise _LineError("params.max_tokens is missing (the Messages API requires it)")
    if params.get("stream"):
        raise _LineError("params.stream: a batch line cannot stream")
    model = params.get("model")
    if not targets:
        if not isinstance(model, str) or not model.strip():
            raise _LineError("params.model is missing (or give --to)")
        line_targets: Any = [f"{default_provider}:{model}"]
    else:
        line_targets = targets
    parameters = {k: v for k, v in params.items() if k not in _BODY_RESERVED and k != "system"}
    return _spec(
        line_no, max_chars,
        renames={"parameters": "params", "messages": "params.messages", "targets[0]": "params.model",
                 "system_prompt": "params.system"},
        targets=line_targets, messages=params["messages"], system_prompt=_system_text(params.get("system")),
        parameters=parameters, custom_id=obj["custom_id"],
    )


def _system_text(system: Any) -> Optional[str]:
    """Anthropic's `system`: a string, or a list of text blocks (joined)."""
    if system is None or isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _LineError("params.system must be a string or a list of text blocks")
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _LineError(f"params.system[{i}]: only text blocks are supported")
        texts.append(block["text"])
    return "\n\n".join(texts)


def _plain_spec(obj: Dict[str, Any], targets: List[str], line_no: int, max_chars: int) -> Dict[str, Any]:
    unknown = sorted(set(obj) - _PLAIN_KEYS)
    if unknown:
        raise _LineError(f"unknown field {unknown[0]!r} (a plain line has {', '.join(sorted(_PLAIN_KEYS))})")
    if obj.get("prompt") is None and obj.get("messages") is None:
        raise _LineError("prompt is missing (give prompt or messages)")
    line_targets = obj.get("targets", targets) or None
    if line_targets is None:
        raise _LineError("no targets: give --to or a targets field")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _LineError("metadata must be an object")
    return _spec(
        line_no, max_chars, renames={"system_prompt": "system"},
        targets=line_targets, prompt=obj.get("prompt"), messages=obj.get("messages"),
        system_prompt=obj.get("system"), parameters=obj.get("parameters"), metadata=metadata,
        max_retries=obj.get("max_retries"), custom_id=obj["custom_id"],
    )


def _spec(line_no: int, max_chars: int, renames: Dict[str, str], metadata: Optional[Dict[str, Any]] = None,
          **fields: Any) -> Dict[str, Any]:
    """Build and validate the job spec, naming fields as the line spells them."""
    try:
        spec = JobSpec.create(
            job_id=_PLACEHOLDER_ID, batch_id=_PLACEHOLDER_ID, max_prompt_chars=max_chars,
            metadata={**(metadata or {}), LINE_KEY: line_no}, **fields,
        )
    except JobValidationError as exc:
        message = str(exc)[len(exc.field) + 2:]
        raise _LineError(f"{_rename(exc.field, renames)}: {message}") from None
    # The placeholders keep to_dict's key order; the submitter overwrites them.
    return spec.to_dict()


def _rename(field_name: str, renames: Dict[str, str]) -> str:
    for ours, theirs in renames.items():
        if field_name == ours or field_name.startswith(ours + ".") or field_name.startswith(ours + "["):
            return theirs + field_name[len(ours):]
    return field_name
