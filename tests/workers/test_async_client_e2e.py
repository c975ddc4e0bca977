"""AsyncClient against a real redis-server and a real worker process (mock
provider): a job, a streamed job with a failover, a rate-limit retry, a
cancel, and a batch -- the same outcomes the blocking Client gets."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from promptq.tasks.async_client import AsyncClient
from promptq.tasks.client_core import JobFailedError
from promptq.tasks.settings import Settings
from promptq.tasks.store import JobStatus
from tests.worker_process import WorkerProcess


@pytest.fixture(scope="module")
def mock_worker(redis_server):
    with WorkerProcess(redis_server.url, ["mock"], name="async-e2e") as proc:
        yield proc


def run(redis_server, body):
    async def main():
        async with AsyncClient(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url})) as client:
            return await body(client)

    return asyncio.run(main())


def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_submit_and_result(redis_server, mock_worker):
    async def body(client):
        handle = await client.submit(f"hello {tag()}", to=["mock:m"])
        return await handle.result(timeout=30)

    record = run(redis_server, body)
    assert record.status is JobStatus.SUCCEEDED and record.text.startswith("mock reply to: hello")
    assert record.result["usage"]["output_tokens"] > 0


def test_stream_fails_over_without_splicing(redis_server, mock_worker):
    async def body(client):
        handle = await client.submit(f"one two three [[fault@flaky:auth]] {tag()}", to=["mock:flaky", "mock:good"],
                                     stream=True)
        pieces = [p async for p in client.stream(handle.id, timeout=30)]
        events = [e["type"] async for e in client.events(handle.id, timeout=30)]
        return pieces, events, await client.result(handle.id, timeout=30)

    pieces, events, record = run(redis_server, body)
    assert "".join(pieces) == record.text and record.result["target"] == "mock:good"
    assert events[0] == "failover" and events[-1] == "done"


def test_rate_limit_is_retried(redis_server, mock_worker):
    async def body(client):
        handle = await client.submit(f"retry me [[fault:rate_limit:0.2:once]] {tag()}", to=["mock:m"])
        return await handle.result(timeout=30)

    record = run(redis_server, body)
    assert record.status is JobStatus.SUCCEEDED
    assert [a["outcome"] for a in record.attempts] == ["error", "succeeded"]


def test_failed_job_raises_from_stream(redis_server, mock_worker):
    async def body(client):
        handle = await client.submit(f"no [[fault:invalid]] {tag()}", to=["mock:m"], stream=True)
        with pytest.raises(JobFailedError):
            async for _ in client.stream(handle.id, timeout=30):
                pass
        return await client.status(handle.id)

    assert run(redis_server, body).status is JobStatus.FAILED


def test_batch_submit_status_results_and_cancel(redis_server, mock_worker):
    lines = [f'{{"custom_id": "r{i}", "prompt": "line {i} {tag()}"}}' for i in range(5)]

    async def body(client):
        sub = await client.submit_batch(lines, ["mock:m"], max_cost_usd=5)
        for _ in range(300):
            status = await client.batch_status(sub.batch_id)
            if status["finished"]:
                break
            await asyncio.sleep(0.1)
        results = [line async for line in client.iter_results(sub.batch_id, chunk=2)]
        lifted = await client.set_spend_limit(sub.batch_id, None)
        return sub, status, results, await client.cancel_batch(sub.batch_id), lifted

    sub, status, results, cancelled, lifted = run(redis_server, body)
    assert status["succeeded"] == 5 and sub.submitted == 5
    # The mock costs nothing, so a limit never stops it; lifted, there is none.
    assert (status["cost_usd"], status["max_cost_usd"], status["spend_limit_reached"]) == (0, 5, False)
    assert lifted["max_cost_usd"] is None
    assert [r["custom_id"] for r in results] == [f"r{i}" for i in range(5)]
    assert all(r["response"]["status_code"] == 200 for r in results)
    assert cancelled == {"succeeded": 5}
