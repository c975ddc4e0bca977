"""A real `promptq serve` subprocess on a free port, in front of a real
redis-server and a real worker process (mock provider), for the official
openai and anthropic SDKs to talk to."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptq.workers.serve_process import ServeProcess as SharedServeProcess
from tests.worker_process import WorkerProcess

API_KEY = "pq-test-key-0123456789abcdef"
CONFIG = """
[routes.fast]
targets = ["mock:flaky", "mock:good"]

[routes.solo]
targets = ["mock:solo"]
"""


class ServeProcess(SharedServeProcess):
    """`promptq serve` with the test routes and the test client key."""

    def __init__(self, redis_url: str, config_path: Path, files_dir: Path, env=None, args=()):
        super().__init__(redis_url, files_dir, config_path=config_path,
                         env={"PROMPTQ_API_KEYS": API_KEY, **(env or {})}, args=args)


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
