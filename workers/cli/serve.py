"""`promptq serve`: the OpenAI- and Anthropic-compatible HTTP front (extra `[server]`)."""

from __future__ import annotations

from typing import Optional

import click

from .context import EXIT_USAGE, State, fail, pass_state


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs API keys.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--api-keys-file", type=click.Path(dir_okay=False), default=None,
              help="File of accepted bearer keys, one per line (also PROMPTQ_API_KEYS, comma-separated).")
@click.option("--files-dir", type=click.Path(file_okay=False), default=None,
              help="Where batch files live (default .promptq/files, or PROMPTQ_FILES_DIR).")
@click.option("--max-file-bytes", type=int, default=None, help="Largest upload accepted (default 200 MB).")
@click.option("--max-open-requests", type=int, default=None,
              help="Requests waiting on jobs at once; past it, 429 with Retry-After (default 10000).")
@click.option("--request-timeout", "request_timeout_s", type=float, default=None,
              help="Seconds a request waits for its job before 504; the job goes on (default 600).")
@click.option("--keepalive", "keepalive_s", type=float, default=None,
              help="Seconds of silence before a streamed response gets a keep-alive (default 15).")
@click.option("--workers", "processes", type=int, default=1, show_default=True, help="uvicorn worker processes.")
@click.option("--log-level", default="info", show_default=True)
@pass_state
def serve(state: State, host: str, port: int, api_keys_file: Optional[str], files_dir: Optional[str],
          max_file_bytes: Optional[int], max_open_requests: Optional[int], request_timeout_s: Optional[float],
          keepalive_s: Optional[float], processes: int, log_level: str) -> None:
    """Serve the OpenAI and Anthropic APIs at http://HOST:PORT/v1 in front of the queue."""
    try:
        import uvicorn

        from promptq.workers.server.app import create_app
        from promptq.workers.server.config import ServerConfigError, from_environ
    except ImportError as exc:
        fail(f"promptq serve needs the server extra: pip install 'promptq[server]' ({exc.name} is missing)", EXIT_USAGE)
    try:
        config = from_environ(keys_file=api_keys_file, host=host, port=port, files_dir=files_dir,
                              max_file_bytes=max_file_bytes, max_open_requests=max_open_requests,
                              request_timeout_s=request_timeout_s, keepalive_s=keepalive_s)
        config.check_bind()
    except ServerConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    settings = state.settings
    auth = f"{len(config.key_digests)} API key(s)" if config.auth_required else "no API keys (loopback only)"
    click.echo(f"promptq serve: http://{host}:{port}/v1 ({auth}; routes: {', '.join(settings.routes) or 'none'})",
               err=True)
    if processes > 1:
        # Each uvicorn worker process builds its own app (and AsyncClient) from the environment.
        import os

        os.environ["PROMPTQ_REDIS_URL"] = settings.redis_url
        if state.config:
            os.environ["PROMPTQ_CONFIG"] = state.config
        os.environ["PROMPTQ_FILES_DIR"] = str(config.files_dir)
        if api_keys_file:
            os.environ["PROMPTQ_API_KEYS_FILE"] = api_keys_file
        uvicorn.run("promptq.workers.server.app:app_from_environ", factory=True, host=host, port=port,
                    workers=processes, log_level=log_level)
        return
    uvicorn.run(create_app(config, settings), host=host, port=port, log_level=log_level)


COMMANDS = [serve]
