"""`promptq serve` as a subprocess on a free loopback port, stopped by PID.

The tests of the HTTP front and the gateway benchmark start it the same way:
ready when `/health` answers 200 (a condition, not a sleep), and a front that
exits while starting is reported with the tail of its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional, Sequence

from .embedded_redis import free_port
from .local_stack import wait_for


class ServeProcess:
    def __init__(self, redis_url: str, files_dir: Path, *, config_path: Optional[Path] = None,
                 env: Optional[Dict[str, Optional[str]]] = None, args: Sequence[str] = ()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # `env` adds to this process's environment; a None value unsets a name.
        merged = {**os.environ, "PROMPTQ_REDIS_URL": redis_url, **(env or {})}
        self.env = {name: value for name, value in merged.items() if value is not None}
        config = ["--config", str(config_path)] if config_path else []
        self.args = [*config, "serve", "--port", str(self.port), "--files-dir", str(files_dir),
                     "--log-level", "warning", *args]
        self.files_dir = Path(files_dir)
        self.log_path = Path(tempfile.mkstemp(prefix="promptq-serve-", suffix=".log")[1])
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "ServeProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "promptq.workers.cli.main", *self.args],
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"promptq serve exited {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=1) as reply:
                    return reply.status == 200
            except (urllib.error.URLError, OSError):
                return False

        wait_for(up, 30, 0.1, "promptq serve to answer /health")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
