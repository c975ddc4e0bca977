"""Options every command shares, and the exit codes scripts can rely on."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Optional

import click

from promptq.tasks.settings import Settings, SettingsError

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2  # also click's own code for bad arguments
EXIT_TIMEOUT = 3
EXIT_NOT_FOUND = 4
EXIT_CANCELLED = 5
EXIT_UNAVAILABLE = 6  # Redis did not answer


class State:
    """Lazily built settings and client, so `--help` needs no Redis."""

    def __init__(self, redis_url: Optional[str], config: Optional[str]):
        self.redis_url = redis_url
        self.config = config
        self._settings: Optional[Settings] = None
        self._client: Any = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                settings = Settings.load(config_path=self.config)
                if self.redis_url:
                    settings = settings.with_overrides(redis_url=self.redis_url)
            except SettingsError as exc:
                raise click.UsageError(str(exc)) from None
            self._settings = settings
        return self._settings

    @property
    def client(self) -> Any:
        if self._client is None:
            from promptq.tasks.client import Client

            self._client = Client(self.settings)
        return self._client


pass_state = click.make_pass_decorator(State)


def fail(message: str, code: int) -> None:
    click.echo(f"promptq: {message}", err=True)
    sys.exit(code)


def redis_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an unreachable Redis into one clear line and EXIT_UNAVAILABLE."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.ConnectionError as exc:
            fail(f"cannot reach Redis ({exc}); set PROMPTQ_REDIS_URL or --redis-url", EXIT_UNAVAILABLE)

    return wrapper
