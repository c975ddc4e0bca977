"""Worker processes for tests: the product's own (workers.local_stack), with
lease settings fast enough that a killed worker's jobs return in seconds."""

from promptq.workers.local_stack import ROOT, WorkerProcess as _WorkerProcess, wait_for

FAST_ENV = {
    "PROMPTQ_HEARTBEAT_S": "0.5",
    "PROMPTQ_LEASE_TTL_S": "3",
    "PROMPTQ_HEALTH_COOLDOWN_S": "2",
}


class WorkerProcess(_WorkerProcess):
    def __init__(self, redis_url, providers, *, env=None, **kwargs):
        super().__init__(redis_url, providers, env={**FAST_ENV, **(env or {})}, **kwargs)


__all__ = ["FAST_ENV", "ROOT", "WorkerProcess", "wait_for"]
