"""A module's worth of real parts: fake OpenAI and Anthropic servers on
loopback, and one real worker process consuming both providers' queues."""

from __future__ import annotations

import pytest

from promptq.providers.health_redis import RedisHealthStore
from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.worker_process import WorkerProcess

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"


def provider_env(openai: FakeOpenAI, anthropic: FakeAnthropic) -> dict:
    return {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": openai.base_url,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": anthropic.base_url,
    }


@pytest.fixture(scope="module")
def fakes():
    with FakeOpenAI(api_key=OPENAI_KEY) as openai, FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic:
        yield openai, anthropic


@pytest.fixture(scope="module")
def worker(redis_server, fakes):
    openai, anthropic = fakes
    with WorkerProcess(redis_server.url, ["openai", "claude"], env=provider_env(openai, anthropic), name="e2e") as proc:
        yield proc


@pytest.fixture
def client(redis_server):
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_slate(redis_server, request):
    """Each test starts with healthy providers, nothing learned about their
    limits (a 429 teaches a pace that lasts a day: a later test's 200 calls
    would be paced by an earlier test's rate limit) and no scripted faults."""
    fakes_ = request.getfixturevalue("fakes") if "fakes" in request.fixturenames else None
    client = redis_server.client()
    RedisHealthStore(client, "promptq:health").reset()
    learned = [*client.scan_iter(match="promptq:pace:*"), *client.scan_iter(match="promptq:cap:*")]
    if learned:
        client.delete(*learned)
    if fakes_:
        for server in fakes_:
            server.reset()
    yield
    client.close()
