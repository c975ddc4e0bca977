"""A real `promptq serve` subprocess on a free port, in front of a real
redis-server and a real worker process (mock provider), for the official
openai and anthropic SDKs to talk to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.worker_process import WorkerProcess, wait_for

API_KEY = "pq-test-key-0123456789abcdef"
CONFIG = """
[routes.fast]
targets = ["mock:flaky", "mock:good"]

[routes.solo]
targets = ["mock:solo"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """`promptq serve` as a subprocess, stopped by PID."""

    def __init__(self, redis_url: str, config_path: Path, files_dir: Path, env=None, args=()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PROMPTQ_REDIS_URL": redis_url, "PROMPTQ_API_KEYS": API_KEY, **(env or {})}
        self.args = ["--config", str(config_path), "serve", "--port", str(self.port), "--files-dir", str(files_dir),
                     "--log-level", "warning", *args]
        self.log_path = Path(tempfile.mkstemp(prefix="promptq-serve-", suffix=".log")[1])
        self.files_dir = Path(files_dir)

    def start(self) -> "ServeProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "promptq.workers.cli.main", *self.args],
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"promptq serve exited {self.proc.returncode}: {self.log()}")
            try:
                return httpx.get(f"{self.base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30, 0.1, "promptq serve to answer /health")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@pytest.fixture(scope="session")
def server_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "promptq.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def mock_worker(redis_server, fakes):
    """The mock provider, plus OpenAI pointed at the fake server (for its slow streams)."""
    from tests.workers.conftest import provider_env

    with WorkerProcess(redis_server.url, ["mock", "openai"], env=provider_env(*fakes), name="serve") as proc:
        yield proc


@pytest.fixture(scope="module")
def server(redis_server, mock_worker, server_config, tmp_path_factory):
    proc = ServeProcess(redis_server.url, server_config, tmp_path_factory.mktemp("files")).start()
    yield proc
    proc.stop()


@pytest.fixture
def openai_client(server):
    import openai

    with openai.OpenAI(base_url=f"{server.base}/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def anthropic_client(server):
    import anthropic

    with anthropic.Anthropic(base_url=server.base, api_key=API_KEY, max_retries=0) as client:
        yield client
