"""A job record as the producer sees it, and how Redis replies become one.

Pure: no Redis client here. `JobStore.get` and both producer shells
(`Client`, `AsyncClient`) read a record's hash and attempts list in one
pipeline and hand the replies to `JobRecord.from_replies`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    #: Waiting for capacity (a rate limit), in the deferred set (tasks.deferral).
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


TERMINAL = ("succeeded", "failed", "cancelled")


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass
class JobRecord:
    """A job as the producer sees it."""

    id: str
    status: JobStatus
    spec: Dict[str, Any]
    target_index: int = 0
    attempt: int = 1
    result: Optional[Dict[str, Any]] = None
    error: Optional[Dict[str, Any]] = None
    attempts: List[Dict[str, Any]] = field(default_factory=list)
    created_at: Optional[float] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    worker: Optional[str] = None

    @property
    def text(self) -> Optional[str]:
        return self.result.get("text") if self.result else None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "provider": (self.result or {}).get("provider"),
            "model": (self.result or {}).get("model"),
            "text": self.text,
            "usage": (self.result or {}).get("usage"),
            "finish_reason": (self.result or {}).get("finish_reason"),
            "error": self.error,
            "attempts": self.attempts,
            "targets": self.spec.get("targets"),
            "custom_id": self.spec.get("custom_id"),
            "batch_id": self.spec.get("batch_id"),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "worker": self.worker,
        }


def record_from_replies(job_id: str, fields: Dict[Any, Any], attempts: List[Any]) -> Optional[JobRecord]:
    """A record from the replies of HGETALL (job hash) and LRANGE (attempts); None if there is no hash."""
    if not fields:
        return None
    f = {_text(k): _text(v) for k, v in fields.items()}
    return JobRecord(
        id=job_id,
        status=JobStatus(f.get("status", "queued")),
        spec=json.loads(f.get("spec") or "{}"),
        target_index=int(f.get("target_index") or 0),
        attempt=int(f.get("attempt") or 1),
        result=json.loads(f["result"]) if f.get("result") else None,
        error=json.loads(f["error"]) if f.get("error") else None,
        attempts=[json.loads(a) for a in attempts],
        created_at=_float(f.get("created_at")),
        started_at=_float(f.get("started_at")),
        finished_at=_float(f.get("finished_at")),
        worker=f.get("worker"),
    )


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _float(value: Optional[str]) -> Optional[float]:
    return float(value) if value not in (None, "") else None
