"""What travels on the queue: a prompt job, validated before it is accepted.

A job is plain JSON. It names *what* to ask (a prompt or chat messages, an
optional system prompt, parameters) and *whom*, as an ordered list of
targets `provider:model`; the first target's queue gets it, and failover
walks down the list. It never carries an API key: keys live only in the
workers' configuration.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence

from promptq.providers.error_handling import ProviderError
from promptq.providers.params import validate as validate_parameters

from .json_check import MAX_DEPTH, JSONValueError, check_json
from .lanes import LANES, LaneError, parse_lane

#: Providers a worker can be built for. A job naming anything else would sit
#: in a queue no worker consumes, so it is refused at submit time.
KNOWN_PROVIDERS = ("openai", "claude", "openrouter", "ollama", "llamacpp", "mock")
_ALIASES = {"anthropic": "claude", "llama.cpp": "llamacpp", "llama_cpp": "llamacpp"}
_ROLES = ("system", "user", "assistant", "tool", "developer")
_SECRET_KEYS = ("api_key", "apikey", "authorization", "x-api-key", "token", "secret")
MAX_METADATA_BYTES = 16 * 1024
#: The fields `validate` walks with tasks.json_check before anything else.
_JSON_FIELDS = ("id", "prompt", "messages", "system_prompt", "parameters", "custom_id", "batch_id", "metadata")


class JobValidationError(ValueError):
    """A job was refused. `field` names the offending field; the message says why."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass(frozen=True)
class Target:
    """One provider and the model to ask there."""

    provider: str
    model: str

    @classmethod
    def parse(cls, text: str, field_name: str = "targets") -> "Target":
        # Split on the first colon only: Ollama models carry tags ("llama3.2:1b").
        if not isinstance(text, str) or ":" not in text:
            raise JobValidationError(field_name, f"{text!r} is not 'provider:model'")
        provider, model = text.split(":", 1)
        provider = _ALIASES.get(provider.strip().lower(), provider.strip().lower())
        if provider not in KNOWN_PROVIDERS:
            raise JobValidationError(
                field_name, f"unknown provider {provider!r} (known: {', '.join(KNOWN_PROVIDERS)})"
            )
        if not model.strip():
            raise JobValidationError(field_name, f"{text!r} names no model")
        return cls(provider, model.strip())

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class JobSpec:
    """An accepted job. Build it with `JobSpec.create(...)`, which validates."""

    id: str
    targets: List[Target]
    prompt: Optional[str] = None
    messages: Optional[List[Dict[str, Any]]] = None
    system_prompt: Optional[str] = None
    parameters: Dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    custom_id: Optional[str] = None
    batch_id: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    max_retries: Optional[int] = None
    created_at: float = 0.0
    #: "interactive" (default) or "batch": which priority lane (tasks.lanes).
    lane: str = "interactive"
    #: Capacity (issue 8): how long this job may wait for a rate limit before
    #: it fails with `rate_limited` (None = the worker's setting, 24 h), and
    #: whether it may spill to its next target when the current one has no room.
    rate_limit_deadline_s: Optional[float] = None
    spill: bool = False

    @classmethod
    def create(
        cls,
        *,
        targets: Sequence[Any],
        prompt: Optional[str] = None,
        messages: Optional[Sequence[Mapping[str, Any]]] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Mapping[str, Any]] = None,
        stream: bool = False,
        custom_id: Optional[str] = None,
        batch_id: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        max_retries: Optional[int] = None,
        job_id: Optional[str] = None,
        max_prompt_chars: int = 1_000_000,
        lane: Optional[str] = None,
        rate_limit_deadline_s: Optional[float] = None,
        spill: bool = False,
    ) -> "JobSpec":
        spec = cls(
            id=job_id or uuid.uuid4().hex,
            targets=_parse_targets(targets),
            prompt=prompt,
            # Copy only well-shaped values; anything else goes to validate()
            # as it is, so the refusal names the field instead of a TypeError.
            messages=[dict(m) if isinstance(m, Mapping) else m for m in messages]
            if isinstance(messages, (list, tuple)) else messages,
            system_prompt=system_prompt,
            parameters=dict(parameters) if isinstance(parameters, Mapping) else (parameters or {}),
            stream=stream,
            custom_id=custom_id,
            batch_id=batch_id,
            metadata=dict(metadata) if isinstance(metadata, Mapping) else (metadata or {}),
            max_retries=max_retries,
            created_at=time.time(),
            lane=_lane(lane, "priority"),
            rate_limit_deadline_s=rate_limit_deadline_s,
            spill=spill,
        )
        spec.validate(max_prompt_chars=max_prompt_chars)
        return spec

    def validate(self, *, max_prompt_chars: int = 1_000_000) -> None:
        """Raise `JobValidationError` naming the first field that is wrong."""
        # First, before anything below walks the values recursively: plain,
        # finite, UTF-8-clean JSON of sane depth (tasks.json_check).
        # One walk over the fields (a call per field cost more than the walk).
        try:
            check_json({name: getattr(self, name) for name in _JSON_FIELDS}, "", MAX_DEPTH + 1)
        except JSONValueError as exc:
            path = exc.path.lstrip(".")
            name = re.split(r"[.\[]", path, maxsplit=1)[0]
            reason = str(exc)[len(exc.path) + 2:]
            raise JobValidationError(name, reason if path == name else f"{reason} (at {path})") from None
        if not isinstance(self.id, str) or not self.id or len(self.id) > 200 or any(c.isspace() for c in self.id):
            raise JobValidationError("id", "must be a non-empty string without spaces, at most 200 chars")
        if not self.targets:
            raise JobValidationError("targets", "at least one 'provider:model' target is required")
        has_prompt = self.prompt is not None
        has_messages = self.messages is not None
        if has_prompt == has_messages:
            raise JobValidationError("prompt", "give exactly one of prompt or messages")
        if has_prompt:
            if not isinstance(self.prompt, str) or not self.prompt.strip():
                raise JobValidationError("prompt", "must be a non-empty string")
            if len(self.prompt) > max_prompt_chars:
                raise JobValidationError("prompt", f"is {len(self.prompt)} chars, the limit is {max_prompt_chars}")
        else:
            _validate_messages(self.messages, max_prompt_chars)
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise JobValidationError("system_prompt", "must be a string")
        if not isinstance(self.parameters, dict):
            raise JobValidationError("parameters", "must be an object")
        _refuse_secrets("parameters", self.parameters)
        if not isinstance(self.stream, bool):
            raise JobValidationError("stream", "must be true or false")
        for name in ("custom_id", "batch_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value or len(value) > 512):
                raise JobValidationError(name, "must be a non-empty string of at most 512 chars")
        if not isinstance(self.metadata, dict):
            raise JobValidationError("metadata", "must be an object")
        _refuse_secrets("metadata", self.metadata)
        if self.max_retries is not None and (
            not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool) or not 0 <= self.max_retries <= 100
        ):
            raise JobValidationError("max_retries", "must be an integer from 0 to 100")
        if self.lane not in LANES:
            raise JobValidationError("lane", f"{self.lane!r} is not a lane (use {' or '.join(LANES)})")
        if self.rate_limit_deadline_s is not None and (
            isinstance(self.rate_limit_deadline_s, bool) or not isinstance(self.rate_limit_deadline_s, (int, float))
            or not 0 < self.rate_limit_deadline_s <= 30 * 24 * 3600
        ):
            raise JobValidationError("rate_limit_deadline_s", "must be a number of seconds above 0, at most 30 days")
        if not isinstance(self.spill, bool):
            raise JobValidationError("spill", "must be true or false")
        # check_json above made both serialisable; only metadata's size is left to measure.
        if self.metadata:
            size = len(json.dumps(self.metadata))
            if size > MAX_METADATA_BYTES:
                raise JobValidationError("metadata", f"is {size} bytes, the limit is {MAX_METADATA_BYTES}")

        try:
            # The same check a provider makes before a call, here at submit
            # time: a bad type is refused now, not dead-lettered later.
            validate_parameters(self.parameters)
        except ProviderError as exc:
            raise JobValidationError("parameters", str(exc)) from None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "targets": [str(t) for t in self.targets],
            "prompt": self.prompt,
            "messages": self.messages,
            "system_prompt": self.system_prompt,
            "parameters": self.parameters,
            "stream": self.stream,
            "custom_id": self.custom_id,
            "batch_id": self.batch_id,
            "metadata": self.metadata,
            "max_retries": self.max_retries,
            "created_at": self.created_at,
            "lane": self.lane,
            # Only when set: most jobs carry neither, and the record stays as it was.
            **({"rate_limit_deadline_s": self.rate_limit_deadline_s} if self.rate_limit_deadline_s is not None else {}),
            **({"spill": True} if self.spill else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "JobSpec":
        """Rebuild and re-validate a job read from the queue or a file."""
        if not isinstance(data, Mapping):
            raise JobValidationError("job", f"must be an object, got {type(data).__name__}")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise JobValidationError(sorted(unknown)[0], "is not a job field")
        spec = cls(
            id=data.get("id") or "",
            targets=_parse_targets(data.get("targets") or []),
            prompt=data.get("prompt"),
            messages=data.get("messages"),
            system_prompt=data.get("system_prompt"),
            parameters=data.get("parameters") or {},
            stream=data.get("stream", False),
            custom_id=data.get("custom_id"),
            batch_id=data.get("batch_id"),
            metadata=data.get("metadata") or {},
            max_retries=data.get("max_retries"),
            created_at=float(data.get("created_at") or time.time()),
            lane=data.get("lane") or "interactive",
            rate_limit_deadline_s=data.get("rate_limit_deadline_s"),
            spill=data.get("spill", False),
        )
        spec.validate()
        return spec


def _lane(value: Any, field_name: str) -> str:
    try:
        return parse_lane(value, field_name)
    except LaneError as exc:
        raise JobValidationError(field_name, str(exc).split(": ", 1)[1]) from None


def _parse_targets(targets: Any) -> List[Target]:
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
        raise JobValidationError("targets", "must be a list of 'provider:model' strings")
    out = []
    for i, target in enumerate(targets):
        out.append(target if isinstance(target, Target) else Target.parse(target, f"targets[{i}]"))
    return out


def _validate_messages(messages: Any, max_chars: int) -> None:
    if not isinstance(messages, list) or not messages:
        raise JobValidationError("messages", "must be a non-empty list")
    total = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise JobValidationError(where, "must be an object with role and content")
        if message.get("role") not in _ROLES:
            raise JobValidationError(f"{where}.role", f"must be one of {', '.join(_ROLES)}")
        content = message.get("content")
        if not isinstance(content, (str, list)):
            raise JobValidationError(f"{where}.content", "must be a string or a list of content parts")
        total += len(json.dumps(content)) if isinstance(content, list) else len(content)
    if total > max_chars:
        raise JobValidationError("messages", f"hold {total} chars, the limit is {max_chars}")
    if all(m.get("role") == "system" for m in messages):
        raise JobValidationError("messages", "need at least one non-system message")


_SECRET_NAMES = {k.replace("-", "_") for k in _SECRET_KEYS}


def _refuse_secrets(where: str, data: Any) -> None:
    # Keys belong to worker configuration; a job that carries one would put
    # it in Redis, in Flower and in every event. Refuse it outright, however
    # deeply it is nested (extra_headers.Authorization is the usual way in).
    if isinstance(data, Mapping):
        for key, value in data.items():
            path = f"{where}.{key}"
            if isinstance(key, str) and key.lower().replace("-", "_") in _SECRET_NAMES:
                raise JobValidationError(path, "API keys and tokens belong in worker configuration, not in a job")
            _refuse_secrets(path, value)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _refuse_secrets(f"{where}[{i}]", value)
