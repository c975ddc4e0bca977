"""Configuration, read once at the entry point into one typed object.

Sources, later wins: built-in defaults, a TOML file (`PROMPTQ_CONFIG` or the
`config_path` argument), then `PROMPTQ_*` environment variables. Provider
keys and URLs are *not* copied here from the environment: each provider
reads its own ecosystem's variables (`OPENAI_API_KEY`, `OLLAMA_HOST`, ...)
when the worker builds it, so a key lives only in the worker's environment
or in the `[providers.NAME]` table of the worker's config file.

Example config file::

    redis_url = "redis://:secret@redis:6379/0"
    max_retries = 4

    [providers.openai]
    base_url = "https://api.openai.com/v1"
    timeout = 120

    [providers.mock]
    latency_s = 0.05

    # Named fallback chains; `promptq serve` routes a request's `model` by them.
    [routes.fast]
    targets = ["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"]
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Sequence

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SettingsError(ValueError):
    """A setting has a value promptq cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Every knob promptq has. Field name = env var without `PROMPTQ_`, upper-cased."""

    #: Broker, job records, health and pub/sub all live in this Redis.
    redis_url: str = DEFAULT_REDIS_URL
    #: Prefix of every Redis key and queue name promptq owns.
    key_prefix: str = "promptq"
    #: Retries on one target before the job fails over to the next target.
    max_retries: int = 3
    #: No countdown is longer than this, whatever a provider asks for.
    retry_cap_s: float = 300.0
    #: Redis redelivers an unacknowledged message after this long. It must
    #: stay above retry_cap_s, or a waiting retry would be delivered twice.
    visibility_timeout_s: float = 3600.0
    #: A job whose worker stopped heart-beating for this long is re-queued.
    #: With the heartbeat below, a dead worker is noticed within
    #: lease_ttl_s + heartbeat_s = 8 s (bench/heartbeat_cost.py measures the
    #: Redis cost). A worker stalled longer than this (a Redis or GC pause)
    #: is presumed dead: its job may then run twice (see README, Guarantees).
    lease_ttl_s: float = 6.0
    #: How often a worker refreshes its leases and looks for dead ones.
    heartbeat_s: float = 2.0
    #: Finished job records (and their results) expire after this long.
    result_ttl_s: float = 7 * 24 * 3600.0
    #: Stream replay buffer: at most this many events per job, kept this long.
    stream_maxlen: int = 10_000
    stream_ttl_s: float = 24 * 3600.0
    #: Worker defaults; `promptq worker` flags override them.
    providers: str = "mock"
    pool: str = "threads"
    #: LLM calls mostly wait, so slots, not CPU, bound throughput (see bench/).
    concurrency: int = 200
    #: Broker connections per worker (0 = automatic); must exceed concurrency.
    broker_max_connections: int = 0
    #: Circuit breaker: consecutive failures that open it, and its cooldown.
    health_failure_threshold: int = 5
    health_cooldown_s: float = 30.0
    #: Prometheus metrics port of a worker (0 = off).
    metrics_port: int = 0
    #: Largest prompt (characters) a job may carry.
    max_prompt_chars: int = 1_000_000
    #: Capacity (tasks.limits / limiter / pacing / deferral). A job that
    #: waits for a rate limit fails with `rate_limited` only after this long
    #: (a job's or batch's `rate_limit_deadline_s` overrides it).
    rate_limit_deadline_s: float = 24 * 3600.0
    #: Share of every budget the batch lane may not use, kept for interactive jobs.
    interactive_reserve: float = 0.2
    #: Burst a budget allows from idle, in seconds of its rate.
    capacity_burst_s: float = 1.0
    #: How far ahead a job may reserve its turn in a budget and wait for it.
    capacity_horizon_s: float = 2.0
    #: A `spill` job moves to its next target after waiting this long for capacity.
    spill_after_s: float = 10.0
    #: How often a worker moves due waiting jobs back to their queues.
    mover_interval_s: float = 0.1
    #: Per-provider configuration from the config file (keys may include
    #: api_key; never logged, never put in a job).
    provider_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    #: Named routes from the config file's `[routes.NAME]` tables: an ordered
    #: list of `provider:model` targets each (checked when loaded).
    routes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: `PROMPTQ_LIMIT_<PROVIDER>_<RPM|TPM|CONCURRENCY>` from the environment.
    limit_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.retry_cap_s >= self.visibility_timeout_s:
            raise SettingsError(
                f"retry_cap_s ({self.retry_cap_s}) must be below visibility_timeout_s "
                f"({self.visibility_timeout_s}): Redis would redeliver a waiting retry"
            )
        if self.pool not in ("threads", "gevent", "prefork", "solo", "eventlet"):
            raise SettingsError(f"pool must be threads, gevent, prefork or solo, not {self.pool!r}")
        for name in ("max_retries", "concurrency", "stream_maxlen", "health_failure_threshold"):
            if getattr(self, name) < (0 if name == "max_retries" else 1):
                raise SettingsError(f"{name} must be positive, not {getattr(self, name)!r}")
        if 0 < self.broker_max_connections <= self.concurrency:
            raise SettingsError(
                f"broker_max_connections ({self.broker_max_connections}) must exceed concurrency "
                f"({self.concurrency}), or every slot waits on a connection; 0 sizes it automatically"
            )
        for name in ("result_ttl_s", "stream_ttl_s", "heartbeat_s", "lease_ttl_s"):
            if getattr(self, name) < 1 and name.endswith("ttl_s"):
                raise SettingsError(f"{name} must be at least 1 second, not {getattr(self, name)!r}")
        if self.heartbeat_s * 2 > self.lease_ttl_s:
            raise SettingsError("lease_ttl_s must be at least twice heartbeat_s")
        if not 0 <= self.interactive_reserve < 1:
            raise SettingsError(f"interactive_reserve must be from 0 to below 1, not {self.interactive_reserve!r}")
        for name in ("rate_limit_deadline_s", "capacity_burst_s", "capacity_horizon_s", "mover_interval_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, not {getattr(self, name)!r}")
        from .limits import LimitConfigError, configured_limits
        from .pricing import PriceConfigError, configured_prices

        try:
            configured_limits(self.provider_configs, self.limit_overrides)
            configured_prices(self.provider_configs)
        except (LimitConfigError, PriceConfigError) as exc:
            raise SettingsError(str(exc)) from None

    @property
    def effective_broker_max_connections(self) -> int:
        # kombu's Redis transport defaults to 10 per channel; a threads or
        # gevent pool of hundreds acking late stalls on that.
        return self.broker_max_connections or max(64, self.concurrency * 2 + 16)

    def provider_config(self, name: str) -> Dict[str, Any]:
        """The config dict handed to `create_provider(name, ...)`."""
        config = dict(self.provider_configs.get(name, {}))
        # Limits and prices are the queue's business (tasks.limits,
        # tasks.pricing), not the provider's.
        config.pop("limits", None)
        config.pop("models", None)
        config.pop("prices", None)
        return config

    def with_overrides(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls,
        environ: Optional[Mapping[str, str]] = None,
        config_path: Optional[str] = None,
    ) -> "Settings":
        """Defaults, then the config file, then `PROMPTQ_*` variables."""
        environ = os.environ if environ is None else environ
        values: Dict[str, Any] = {}
        path = config_path or environ.get("PROMPTQ_CONFIG")
        if path:
            values.update(_read_config_file(path))
        from .limits import env_limits

        limits = env_limits(environ)
        if limits:
            values["limit_overrides"] = limits
        for f in fields(cls):
            if f.name in ("provider_configs", "routes", "limit_overrides"):
                continue
            raw = environ.get("PROMPTQ_" + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, f.type, raw)
        return cls(**values)


def _read_config_file(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name: f for f in fields(Settings)}
    values: Dict[str, Any] = {}
    providers = data.pop("providers", {})
    if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
        raise SettingsError(f"{path}: [providers.NAME] entries must be tables")
    values["provider_configs"] = providers
    routes = data.pop("routes", {})
    if routes:
        values["routes"] = _read_routes(path, routes)
    for key, value in data.items():
        if key not in known:
            raise SettingsError(f"{path}: unknown setting {key!r}")
        values[key] = _coerce(key, known[key].type, value)
    return values


def _read_routes(path: str, routes: Any) -> Dict[str, list]:
    from .job import JobValidationError, Target

    if not isinstance(routes, dict):
        raise SettingsError(f"{path}: [routes.NAME] entries must be tables")
    out: Dict[str, list] = {}
    for name, table in routes.items():
        where = f"{path}: [routes.{name}]"
        if not isinstance(table, dict) or set(table) != {"targets"}:
            raise SettingsError(f"{where} must hold exactly one key, targets = [\"provider:model\", ...]")
        targets = table["targets"]
        if not isinstance(targets, list) or not targets:
            raise SettingsError(f"{where}: targets must be a non-empty list of 'provider:model'")
        try:
            out[name] = [str(Target.parse(t, f"{where} targets[{i}]")) for i, t in enumerate(targets)]
        except JobValidationError as exc:
            raise SettingsError(str(exc)) from None
    return out


def _coerce(name: str, type_name: Any, raw: Any) -> Any:
    kind = str(type_name)
    # TOML gives typed values: refuse `true` for a number or 3.9 for a count
    # rather than quietly making them 1 and 3.
    if isinstance(raw, bool) or (kind == "int" and isinstance(raw, float)):
        raise SettingsError(f"setting {name} must be {kind}, got {raw!r}")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "str":
            return str(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"setting {name} must be {kind}, got {raw!r}") from None
    return raw
