"""What a worker process needs to run jobs, built once per process on first use.

The Celery app carries only settings; the Redis client, the job store, the
event publisher, the shared health store and the provider instances are
built here lazily (and again after a fork), so importing promptq or
creating the app never opens a connection.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, Callable, Dict, Optional

import redis

from promptq.providers import create_provider
from promptq.providers.base import LLMProvider
from promptq.providers.health_redis import RedisHealthStore

from .cancel import CancelWatch
from .deferral import Deferrer, Mover
from .events import EventPublisher
from .limiter import Limiter
from .limits import configured_limits
from .pacing import Pacer
from .pricing import Pricing, configured_prices
from .round_trips import RoundTrips
from .keys import Keys
from .observer import Observer
from .settings import Settings
from .store import JobStore


class Runtime:
    """Per-process state of a worker: connections, providers, leases."""

    def __init__(self, settings: Settings, app: Any, observer: Optional[Observer] = None):
        self.settings = settings
        self.app = app
        self.keys = Keys(settings.key_prefix)
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            max_connections=settings.effective_broker_max_connections,
            health_check_interval=30,
            socket_keepalive=True,
        )
        self.store = JobStore(self.redis, self.keys, settings.result_ttl_s)
        # Jobs' claims and result writes that are ready together share a round trip.
        self.round_trips = RoundTrips(self.redis)
        self.events = EventPublisher(
            self.redis, self.keys, maxlen=settings.stream_maxlen, ttl_s=settings.stream_ttl_s
        )
        self.health = RedisHealthStore(
            self.redis,
            self.keys.health_prefix,
            failure_threshold=settings.health_failure_threshold,
            cooldown_s=settings.health_cooldown_s,
        )
        self.observer = observer or Observer()
        # Capacity (issue 8): shared budgets, learned pacing, waiting in Redis.
        self.limiter = Limiter(
            self.redis, settings.key_prefix, configured_limits(settings.provider_configs, settings.limit_overrides),
            interactive_reserve=settings.interactive_reserve, burst_s=settings.capacity_burst_s,
            horizon_s=settings.capacity_horizon_s,
        )
        self.pacer = Pacer(self.redis, settings.key_prefix)
        self.pricing = Pricing(configured_prices(settings.provider_configs))
        # Endpoints whose circuit was closed when this process last asked: a
        # job there asks its budget in the round trip that starts it (tasks.run).
        self.closed_circuits: set = set()
        self.deferrer = Deferrer(self.redis, self.keys, app)
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self._providers: Dict[str, LLMProvider] = {}
        self._providers_lock = threading.Lock()
        self.leases: Any = None  # set by tasks.leases.LeaseKeeper.start
        self.cancels = CancelWatch(self.redis, self.keys.cancels, self.keys.job)

    def provider(self, name: str) -> LLMProvider:
        """The provider instance for `name`, built from this worker's configuration."""
        with self._providers_lock:
            instance = self._providers.get(name)
            if instance is None:
                config = self.settings.provider_config(name)
                # One pooled connection per slot, or calls above the pool
                # size open and discard connections.
                config.setdefault("pool_size", self.settings.concurrency)
                if name == "mock":
                    # "Fail N times, then succeed" must count across worker
                    # processes, or a retry on another worker starts at zero.
                    config.setdefault("state_url", self.settings.redis_url)
                    config.setdefault("state_prefix", self.settings.key_prefix)
                instance = create_provider(name, config)
                self._providers[name] = instance
            return instance

    def close(self) -> None:
        self.cancels.stop()
        for instance in self._providers.values():
            instance.close()
        self.redis.close()


_runtimes: Dict[int, Runtime] = {}
_lock = threading.Lock()


def get_runtime(app: Any) -> Runtime:
    """This process's runtime for `app` (rebuilt in a forked child)."""
    key = id(app) ^ os.getpid()
    runtime = _runtimes.get(key)
    if runtime is None:
        with _lock:
            runtime = _runtimes.get(key)
            if runtime is None:
                factory: Callable[[], Optional[Observer]] = getattr(app, "promptq_observer_factory", None) or (lambda: None)
                runtime = Runtime(app.promptq_settings, app, factory())
                from .leases import LeaseKeeper

                LeaseKeeper(runtime).start()
                Mover(runtime.deferrer, runtime.settings.mover_interval_s).start()
                runtime.cancels.start()
                _runtimes[key] = runtime
    return runtime
