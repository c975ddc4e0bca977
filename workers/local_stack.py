"""A whole promptq on one machine: a private Redis and worker processes.

The demo, the examples and the tests start workers the same way, as real
`promptq worker` subprocesses stopped by PID. A worker is ready when its lease
keeper has written its first heartbeat to Redis (`promptq:workers`), which
happens only after Celery reports the worker ready: a condition, not a sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Optional

import redis

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition, timeout_s: float = 30.0, interval_s: float = 0.05, message: str = "condition"):
    """Poll `condition()` until it returns a truthy value; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


class WorkerProcess:
    """One `promptq worker` subprocess."""

    def __init__(
        self,
        redis_url: str,
        providers: Iterable[str],
        *,
        env: Optional[Dict[str, str]] = None,
        pool: str = "threads",
        concurrency: int = 8,
        name: str = "test",
    ):
        self.redis_url = redis_url
        self.providers = ",".join(providers)
        self.pool = pool
        self.concurrency = concurrency
        self.name = name
        self.env = {**os.environ, "PROMPTQ_REDIS_URL": redis_url, **(env or {})}
        self.proc: Optional[subprocess.Popen] = None
        self._last_log = ""
        self.log_path = Path(tempfile.mkstemp(prefix=f"promptq-worker-{name}-", suffix=".log")[1])

    @property
    def worker_name(self) -> str:
        assert self.proc is not None
        return f"{socket.gethostname()}:{self.proc.pid}"

    def command(self) -> list:
        """The worker's command line: `promptq worker ...` as a user runs it."""
        return [
            sys.executable, "-P", "-m", "promptq.workers.cli.main", "worker", "--providers", self.providers,
            "--pool", self.pool, "--concurrency", str(self.concurrency), "--name", self.name,
            "--loglevel", "INFO",
        ]

    def start(self, timeout_s: float = 60.0) -> "WorkerProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.redis_url)
        prefix = self.env.get("PROMPTQ_KEY_PREFIX") or "promptq"
        try:
            wait_for(
                lambda: self._check_alive() and client.hexists(f"{prefix}:workers", self.worker_name),
                timeout_s, 0.1, f"worker {self.name} to be ready (log: {self.log_path})",
            )
        finally:
            client.close()
        return self

    def _check_alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()}")
        return True

    def log(self) -> str:
        """The tail of the worker's output (kept in memory once `stop` removed the file)."""
        if self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-8000:]
        return self._last_log

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acks, like a machine that lost power."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return
        # Two SIGTERMs: Celery's warm then cold shutdown, bounded by the wait.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log and not log.closed:
            log.close()
        # Nothing left behind in the temporary directory.
        if self.log_path.exists():
            self._last_log = self.log()
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "WorkerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalStack:
    """Redis (the configured one, or a private one) plus worker processes."""

    def __init__(self, redis_url: Optional[str] = None, env: Optional[Dict[str, str]] = None):
        self.redis_url = redis_url if redis_url is not None else os.environ.get("PROMPTQ_REDIS_URL")
        self.env = dict(env or {})
        self.redis_server = None
        self.workers: list = []

    @property
    def private_redis(self) -> bool:
        return self.redis_server is not None

    def start(self) -> "LocalStack":
        if not self.redis_url:
            from .embedded_redis import RedisServer

            self.redis_server = RedisServer().start()
            self.redis_url = self.redis_server.url
        return self

    def add_worker(self, providers: Iterable[str], **kwargs) -> WorkerProcess:
        worker = WorkerProcess(self.redis_url, providers, env={**self.env, **kwargs.pop("env", {})}, **kwargs)
        self.workers.append(worker)
        return worker.start()

    def stop(self) -> None:
        for worker in reversed(self.workers):
            worker.stop()
        self.workers.clear()
        if self.redis_server is not None:
            self.redis_server.stop()
            self.redis_server = None

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
