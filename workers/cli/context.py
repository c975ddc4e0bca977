"""Options every command shares, and the exit codes scripts can rely on."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

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
            check_redis_url(settings.redis_url)
            self._settings = settings
        return self._settings

    @property
    def client(self) -> Any:
        if self._client is None:
            from promptq.tasks.client import Client

            # A port where something silent listens would hang the client's
            # first read forever (it has no read timeout, rightly, for long
            # waits): one bounded PING first turns that into exit 6.
            ping_redis(self.settings.redis_url)
            self._client = Client(self.settings)
        return self._client


pass_state = click.make_pass_decorator(State)


def fail(message: str, code: int) -> None:
    click.echo(f"promptq: {message}", err=True)
    sys.exit(code)


def redis_location(url: str) -> str:
    """host:port/db of a Redis URL, without its password (for messages)."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or url
        return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"
    except ValueError:
        return "?"


def check_redis_url(url: str) -> None:
    """A URL redis-py cannot parse is one line and EXIT_UNAVAILABLE, before any command runs."""
    from redis.connection import parse_url

    try:
        parse_url(url)
    except ValueError as exc:
        shown = url if "@" not in url else "<a URL with credentials>"
        fail(f"PROMPTQ_REDIS_URL / --redis-url {shown!r} is not a Redis URL: {exc}", EXIT_UNAVAILABLE)


def is_redis_unusable(exc: BaseException) -> bool:
    """True for errors that mean "this Redis cannot be used", not a promptq bug."""
    import redis

    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.exceptions.InvalidResponse)):
        return True
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        return any(word in text for word in ("DB index", "NOAUTH", "WRONGPASS", "invalid password", "LOADING"))
    try:
        from kombu.exceptions import OperationalError
    except ImportError:  # pragma: no cover - kombu is a dependency
        return False
    return isinstance(exc, OperationalError)


def redis_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an unreachable or unusable Redis into one clear line and EXIT_UNAVAILABLE."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_redis_unusable(exc):
                raise
            state = click.get_current_context().find_object(State)
            where = redis_location(state.settings.redis_url) if state is not None else "Redis"
            import redis

            verb = "reach" if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) else "use"
            fail(f"cannot {verb} Redis at {where} ({exc}); set PROMPTQ_REDIS_URL or --redis-url", EXIT_UNAVAILABLE)

    return wrapper


def ping_redis(url: str, timeout_s: float = 3.0) -> None:
    """PING with bounded waits; raises redis errors (see `redis_errors`)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()


@redis_errors
def require_redis(state: State) -> None:
    """One clear line (exit 6) for a Redis the worker cannot use, instead of Celery's traceback."""
    ping_redis(state.settings.redis_url)
