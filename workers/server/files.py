"""OpenAI Files (`/v1/files`) on disk, for batch input and output.

A file is `<dir>/<id>.data` plus `<dir>/<id>.json` (its OpenAI `file`
object). Disk rather than Redis: batch files run to hundreds of megabytes,
which would crowd the queue's memory. Uploads over `max_file_bytes` are
refused with 413 before more than that is read. Several `promptq serve`
processes share files only if they share `files_dir`.
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .errors import ApiError

PURPOSES = ("batch", "batch_output")
_CHUNK = 1 << 20


class FileStore:
    def __init__(self, root: Path, max_bytes: int):
        self.root = Path(root) / "files"
        self.max_bytes = max_bytes

    def _paths(self, file_id: str) -> tuple:
        if not file_id.startswith("file-") or not file_id[5:].isalnum():
            raise ApiError(404, f"No such File object: {file_id}", "not_found", param="file_id", code="not_found")
        return self.root / f"{file_id}.data", self.root / f"{file_id}.json"

    def get(self, file_id: str) -> Dict[str, Any]:
        _, meta = self._paths(file_id)
        try:
            return json.loads(meta.read_text())
        except FileNotFoundError:
            raise ApiError(404, f"No such File object: {file_id}", "not_found", param="file_id",
                           code="not_found") from None

    def data_path(self, file_id: str) -> Path:
        self.get(file_id)
        return self._paths(file_id)[0]

    def write(self, filename: str, purpose: str, chunks: Iterable[bytes]) -> Dict[str, Any]:
        """Store a file from byte chunks; 413 (and nothing kept) past the size limit."""
        self.root.mkdir(parents=True, exist_ok=True)
        file_id = f"file-{uuid.uuid4().hex}"
        data, meta = self._paths(file_id)
        size = 0
        try:
            with open(data, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ApiError(413, f"file: larger than the limit of {self.max_bytes} bytes "
                                            f"(promptq serve --max-file-bytes)", param="file", code="file_too_large")
                    out.write(chunk)
        except BaseException:
            data.unlink(missing_ok=True)
            raise
        obj = {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()), "filename": filename,
               "purpose": purpose, "status": "processed", "expires_at": None, "status_details": None}
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, meta)  # the metadata appears only once the data is complete
        return obj

    def write_lines(self, filename: str, purpose: str, lines: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
        return self.write(filename, purpose, ((json.dumps(line) + "\n").encode("utf-8") for line in lines))

    def delete(self, file_id: str) -> Dict[str, Any]:
        data, meta = self._paths(file_id)
        self.get(file_id)
        meta.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self, purpose: Optional[str] = None) -> List[Dict[str, Any]]:
        if not self.root.exists():
            return []
        items = [json.loads(p.read_text()) for p in self.root.glob("file-*.json")]
        items = [i for i in items if purpose is None or i["purpose"] == purpose]
        return sorted(items, key=lambda i: i["created_at"], reverse=True)


def _store(request: Request) -> FileStore:
    return request.app.state.files


async def upload(request: Request) -> Response:
    store = _store(request)
    try:
        length = int(request.headers.get("content-length") or 0)
        if length > store.max_bytes + 64 * 1024:
            raise ApiError(413, f"file: larger than the limit of {store.max_bytes} bytes", param="file",
                           code="file_too_large")
        async with request.form(max_files=1, max_fields=10) as form:
            purpose = form.get("purpose")
            if purpose != "batch":
                raise ApiError(400, f"purpose: must be 'batch', got {purpose!r}", param="purpose",
                               code="invalid_value")
            upload_file = form.get("file")
            if upload_file is None or isinstance(upload_file, str):
                raise ApiError(400, "file: a multipart file field is required", param="file", code="invalid_value")

            def chunks() -> Iterable[bytes]:
                while True:
                    block = upload_file.file.read(_CHUNK)
                    if not block:
                        return
                    yield block

            obj = await anyio.to_thread.run_sync(store.write, upload_file.filename or "upload.jsonl", purpose, chunks())
        return JSONResponse(obj)
    except ApiError as exc:
        return exc.response("openai")


def _one_file(action: Callable[[FileStore, str], Response]) -> Callable[[Request], Awaitable[Response]]:
    """A `/v1/files/{file_id}` handler from what it does with the store and the id (which the store
    checks): an unknown or malformed id, or any other ApiError, is answered in OpenAI's shape."""

    @functools.wraps(action)
    async def handle(request: Request) -> Response:
        try:
            return action(_store(request), request.path_params["file_id"])
        except ApiError as exc:
            return exc.response("openai")

    return handle


@_one_file
def retrieve(store: FileStore, file_id: str) -> Response:
    return JSONResponse(store.get(file_id))


@_one_file
def content(store: FileStore, file_id: str) -> Response:
    return FileResponse(store.data_path(file_id), media_type="application/jsonl")


@_one_file
def delete(store: FileStore, file_id: str) -> Response:
    return JSONResponse(store.delete(file_id))


async def list_files(request: Request) -> Response:
    items = _store(request).list(request.query_params.get("purpose"))
    return JSONResponse({"object": "list", "data": items, "has_more": False,
                         "first_id": items[0]["id"] if items else None, "last_id": items[-1]["id"] if items else None})


ROUTES = [
    Route("/v1/files", upload, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", retrieve, methods=["GET"]),
    Route("/v1/files/{file_id}", delete, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", content, methods=["GET"]),
]
