"""Prometheus metrics of a worker: what its providers did, and how the queues stand.

Counters and the latency histogram are fed by the run task through the
`Observer` hooks; circuit state and queue depth are read from Redis when
Prometheus scrapes, so they are right even for providers this worker never
called. Served on `PROMPTQ_METRICS_PORT` (0 = off).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from promptq.tasks.job import KNOWN_PROVIDERS
from promptq.tasks.keys import Keys
from promptq.tasks.lanes import LANES, queue_lists
from promptq.tasks.observer import Observer
from promptq.tasks.settings import Settings

logger = logging.getLogger(__name__)

CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class PrometheusObserver(Observer):
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("promptq_provider_requests", "Provider calls", ["provider", "outcome"], registry=registry)
        self.errors = Counter("promptq_provider_errors", "Provider errors by category", ["provider", "category"], registry=registry)
        self.latency = Histogram(
            "promptq_provider_latency_seconds", "Provider call latency", ["provider"], registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
        )
        self.tokens = Counter("promptq_tokens", "Tokens used", ["provider", "direction"], registry=registry)
        self.cost = Counter("promptq_cost_usd", "Spend at list or configured prices (tasks.pricing)", ["endpoint"],
                            registry=registry)
        self.retries = Counter("promptq_retries", "Retries scheduled", ["provider"], registry=registry)
        self.failovers = Counter("promptq_failovers", "Jobs moved to the next target", ["from_provider", "to_provider"], registry=registry)
        self.jobs = Counter("promptq_jobs", "Jobs finished", ["status"], registry=registry)

    def request_finished(self, provider, *, ok, latency_s, category=None, usage=None):
        self.requests.labels(provider, "success" if ok else "error").inc()
        self.latency.labels(provider).observe(latency_s)
        if category:
            self.errors.labels(provider, category).inc()
        for direction in ("input", "output"):
            count = (usage or {}).get(f"{direction}_tokens")
            if count:
                self.tokens.labels(provider, direction).inc(count)

    def priced(self, endpoint, usd):
        self.cost.labels(endpoint).inc(usd)

    def retried(self, provider, delay_s):
        self.retries.labels(provider).inc()

    def failed_over(self, from_provider, to_provider):
        self.failovers.labels(from_provider, to_provider).inc()

    def job_finished(self, status):
        self.jobs.labels(status).inc()


class RedisStateCollector:
    """Circuit state, queue depth and capacity per provider:model, read at scrape time.

    Circuits and capacity are per endpoint (issue 8): the `provider` label of
    `promptq_circuit_state` and the `endpoint` label of `promptq_capacity_*`
    hold "provider:model"."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._redis: Any = None
        self._health: Any = None

    def _connect(self) -> None:
        if self._redis is None:
            import redis

            from promptq.providers.health_redis import RedisHealthStore

            self._redis = redis.Redis.from_url(self.settings.redis_url)
            self._health = RedisHealthStore(self._redis, self.keys.health_prefix)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        circuit = GaugeMetricFamily("promptq_circuit_state", "0 closed, 1 half-open, 2 open", labels=["provider"])
        depth = GaugeMetricFamily("promptq_queue_depth", "Messages waiting per queue", labels=["queue"])
        cap = {
            "limit": GaugeMetricFamily("promptq_capacity_limit_rpm", "Requests per minute allowed (configured, or learned from headers)",
                                       labels=["endpoint", "source"]),
            "rate": GaugeMetricFamily("promptq_capacity_rate_rpm", "Requests answered in the last minute", labels=["endpoint"]),
            "tokens": GaugeMetricFamily("promptq_capacity_tokens_this_minute", "Tokens used this minute", labels=["endpoint"]),
            "429": CounterMetricFamily("promptq_capacity_rate_limited", "429s answered by the provider", labels=["endpoint"]),
            "waiting": GaugeMetricFamily("promptq_capacity_waiting_jobs", "Jobs waiting for capacity or a retry", labels=["endpoint"]),
            "paused": GaugeMetricFamily("promptq_capacity_paused_seconds", "Seconds every worker still pauses after a 429",
                                        labels=["endpoint"]),
        }
        try:
            self._connect()
            from promptq.tasks.capacity_view import capacity_report

            for name, row in capacity_report(self._redis, self.settings).items():
                circuit.add_metric([name], CIRCUIT_VALUES.get(row["circuit"], 0))
                c = row["capacity"]
                for scope, limit in c["configured"].items():
                    if limit.get("rpm"):
                        cap["limit"].add_metric([name, f"configured:{scope}"], limit["rpm"])
                if c["learned"].get("rpm"):
                    cap["limit"].add_metric([name, "learned"], c["learned"]["rpm"])
                cap["rate"].add_metric([name], c["rate_rpm"])
                cap["tokens"].add_metric([name], c["tokens_this_minute"])
                cap["429"].add_metric([name], c["rate_limited_429s"])
                cap["waiting"].add_metric([name], c["waiting"])
                cap["paused"].add_metric([name], c["paused_s"])
            pipe = self._redis.pipeline(transaction=False)
            queues = [self.keys.queue(p) for p in KNOWN_PROVIDERS]
            for queue in queues:  # every lane's list (tasks.lanes): a batch backlog counts too
                for key in queue_lists(queue).values():
                    pipe.llen(key)
            lengths = iter(pipe.execute())
            for queue in queues:
                depth.add_metric([queue], sum(next(lengths) for _ in LANES))
        except Exception as exc:  # a scrape must not crash on a Redis blip
            from promptq.tasks.redis_wait import is_transient

            logger.warning("metrics: could not read Redis state (%s: %s)", type(exc).__name__, str(exc)[:200],
                           exc_info=not is_transient(exc))
        yield circuit
        yield depth
        yield from cap.values()


def metrics_observer_factory(settings: Settings) -> Optional[Callable[[], Observer]]:
    """A factory the runtime calls once per worker process, or None when off."""
    if not settings.metrics_port:
        return None

    def factory() -> Observer:
        registry = CollectorRegistry()
        observer = PrometheusObserver(registry)
        registry.register(RedisStateCollector(settings))
        try:
            start_http_server(settings.metrics_port, registry=registry)
        except OSError as exc:  # a second process on one host (prefork)
            logger.warning("metrics port %s busy (%s); this process serves none", settings.metrics_port, exc)
        return observer

    return factory
