"""A worker's Prometheus endpoint counts what its providers did and reads the
circuits and queue depths every worker shares."""

from __future__ import annotations

import re

import pytest
import requests

from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.redis_server import free_port
from tests.worker_process import WorkerProcess, wait_for

KEY = "sk-test-metrics-0123456789"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format, 0 if absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)\{([^}]*)\} (\S+)$", line)
        if match and match.group(1) == name:
            got = ",".join(sorted(match.group(2).split(",")))
            if got == want:
                return float(match.group(3))
    return 0.0


@pytest.fixture
def client(redis_server):
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    yield client
    client.close()


def test_metrics_count_requests_errors_retries_and_queue_depth(redis_server, client):
    port = free_port()
    with FakeOpenAI(api_key=KEY) as openai:
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai.base_url, "PROMPTQ_METRICS_PORT": str(port)}
        with WorkerProcess(redis_server.url, ["openai"], env=env, name="metrics"):
            openai.push("server")
            handle = client.submit("count me", to=["openai:gpt-4o-mini"])
            assert client.result(handle.id, timeout=30).status.value == "succeeded"
            # Waiting in a queue nobody here consumes: shows up as depth.
            parked = client.submit("parked", to=["ollama:llama3.2"])

            def scraped():
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                return text if sample(text, "promptq_jobs_total", status="succeeded") >= 1 else None

            text = wait_for(scraped, 20, 0.2, "metrics to show the finished job")
            parked.cancel()  # so no later worker on promptq.ollama runs it
    assert sample(text, "promptq_provider_requests_total", provider="openai", outcome="success") == 1
    assert sample(text, "promptq_provider_requests_total", provider="openai", outcome="error") == 1
    assert sample(text, "promptq_provider_errors_total", provider="openai", category="server") == 1
    assert sample(text, "promptq_retries_total", provider="openai") == 1
    assert sample(text, "promptq_tokens_total", provider="openai", direction="output") > 0
    # One success on gpt-4o-mini, at its list price (tasks.pricing).
    assert 0 < sample(text, "promptq_cost_usd_total", endpoint="openai:gpt-4o-mini") < 0.01
    assert sample(text, "promptq_provider_latency_seconds_count", provider="openai") == 2
    assert sample(text, "promptq_queue_depth", queue="promptq.ollama") >= 1
    # Circuits and capacity are per provider:model (issue 8).
    assert 'promptq_circuit_state{provider="openai:gpt-4o-mini"} 0.0' in text
    assert sample(text, "promptq_capacity_limit_rpm", endpoint="openai:gpt-4o-mini", source="learned") == 500
    assert sample(text, "promptq_capacity_waiting_jobs", endpoint="openai:gpt-4o-mini") == 0
    assert sample(text, "promptq_capacity_rate_limited_total", endpoint="openai:gpt-4o-mini") == 0


def test_queue_depth_counts_both_lanes(redis_server, client):
    from promptq.workers.metrics import RedisStateCollector

    client.redis.flushall()
    client.submit("now", to=["ollama:llama3.2"])
    client.submit("later", to=["ollama:llama3.2"], priority="batch")
    client.submit("later too", to=["ollama:llama3.2"], priority="batch")
    collector = RedisStateCollector(client.settings)
    depth = {s.labels["queue"]: s.value for family in collector.collect() if family.name == "promptq_queue_depth"
             for s in family.samples}
    client.redis.flushall()
    assert depth["promptq.ollama"] == 3 and depth["promptq.openai"] == 0
