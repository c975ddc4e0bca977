"""The ASGI app of `promptq serve`: routes, authentication, and the AsyncClient it runs on.

Starlette rather than FastAPI: the front validates through promptq's own
JobSpec (which names the bad field), so a second validation layer would add
per-request cost and nothing else; uvicorn with uvloop and httptools serves it.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from promptq.tasks.async_client import AsyncClient
from promptq.tasks.settings import Settings

from . import anthropic_messages, batches, files, message_batches, openai_chat
from .auth import authorised
from .batch_book import BatchBook
from .config import ServerConfig
from .errors import ApiError
from .jobs import ServerState
from .routing import Router


def dialect(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


class RequireKey:
    """401 in the caller's dialect unless a configured key is presented (pure ASGI: no buffering of streams)."""

    def __init__(self, app: ASGIApp, config: ServerConfig):
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health" and not authorised(self.config, Request(scope)):
            error = ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY or x-api-key)",
                             "authentication", code="invalid_api_key")
            await error.response(dialect(scope["path"]))(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    return ApiError(status, f"{request.method} {request.url.path}: no such route", "not_found",
                    code="unknown_url").response(dialect(request.url.path))


def create_app(config: ServerConfig, settings: Optional[Settings] = None, *, client: Any = None) -> ASGIApp:
    settings = settings or Settings.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        aclient = client or AsyncClient(settings)
        app.state.promptq = ServerState(config, aclient, Router(settings.routes))
        app.state.files = files.FileStore(config.files_dir, config.max_file_bytes)
        app.state.openai_batches = BatchBook(config.files_dir, "batches")
        app.state.anthropic_batches = BatchBook(config.files_dir, "message_batches")
        try:
            yield
        finally:
            if client is None:
                await aclient.aclose()

    routes = [
        Route("/health", health),
        Route("/v1/models", openai_chat.models),
        Route("/v1/models/{model:path}", openai_chat.model),
        Route("/v1/chat/completions", openai_chat.chat_completions, methods=["POST"]),
        Route("/v1/messages", anthropic_messages.messages, methods=["POST"]),
        *files.ROUTES,
        *batches.ROUTES,
        *message_batches.ROUTES,
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    return RequireKey(app, config)


def app_from_environ() -> ASGIApp:
    """For `uvicorn --factory` (several worker processes): configuration from the environment."""
    from .config import from_environ

    return create_app(from_environ(), Settings.load())
