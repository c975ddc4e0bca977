"""The HTTP batches' own descriptions (OpenAI `batch`, Anthropic `message_batch`), one JSON file each.

The jobs, counters and results are promptq's batch (tasks/batch.py), read
through `AsyncClient`; what the HTTP APIs add on top (input file, endpoint,
metadata, status timestamps, output file ids) lives here, beside the files.
Writes are atomic (write, then rename); a lock per batch keeps one process
from finalising a batch twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import ApiError

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class BatchBook:
    def __init__(self, root: Path, kind: str):
        self.root = Path(root) / kind
        self.kind = kind
        self.locks: Dict[str, asyncio.Lock] = {}

    def lock(self, batch_id: str) -> asyncio.Lock:
        return self.locks.setdefault(batch_id, asyncio.Lock())

    def _path(self, batch_id: str) -> Path:
        if not _ID_RE.match(batch_id):
            raise ApiError(404, f"No such batch: {batch_id}", "not_found", code="not_found")
        return self.root / f"{batch_id}.json"

    def get(self, batch_id: str) -> Dict[str, Any]:
        try:
            return json.loads(self._path(batch_id).read_text())
        except FileNotFoundError:
            raise ApiError(404, f"No such batch: {batch_id}", "not_found", code="not_found") from None

    def put(self, obj: Dict[str, Any]) -> Dict[str, Any]:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(obj["id"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)
        return obj

    def update(self, batch_id: str, **changes: Any) -> Dict[str, Any]:
        obj = self.get(batch_id)
        obj.update(changes)
        return self.put(obj)

    def list(self, limit: int = 20, after: Optional[str] = None) -> List[Dict[str, Any]]:
        if not self.root.exists():
            return []
        items = sorted((json.loads(p.read_text()) for p in self.root.glob("*.json")),
                       key=lambda o: (o["created_at"], o["id"]), reverse=True)
        if after:
            ids = [o["id"] for o in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return items[:limit]
