"""Fault injection: real redis-server (AOF, restartable), real worker processes
killed with SIGKILL, a fake OpenAI over HTTP that counts every call.

Every test ends with `assert_batch_answered_once`: each job of its batch has
exactly one line in `batch results`, every one a success, and every worker
it started is still alive. Provider calls per job are counted from the fake
server's log, so duplicates are reported, not guessed.
"""

from __future__ import annotations

import collections
import json
import uuid
from typing import Dict, Iterable, List

import pytest

from promptq.tasks.batch import iter_results, submit_batch
from promptq.tasks.batch_results import batch_status
from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.redis_server import RedisServer
from tests.worker_process import WorkerProcess, wait_for

KEY = "sk-test-faults-0123456789"
TARGET = "openai:gpt-4o-mini"

pytestmark = pytest.mark.faults


@pytest.fixture
def redis_aof():
    """A private redis-server per test: these tests stop, kill and fill it."""
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
def openai():
    with FakeOpenAI(api_key=KEY, latency_s=0.05) as server:
        yield server


@pytest.fixture
def client(redis_aof):
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_aof.url}))
    yield client
    client.close()


@pytest.fixture
def workers(redis_aof, openai):
    """`start(name, **env)` starts a worker on the openai queue; all are stopped at the end."""
    started: List[WorkerProcess] = []

    def start(name: str = "w", concurrency: int = 8, **env: str) -> WorkerProcess:
        proc = WorkerProcess(redis_aof.url, ["openai"], env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai.base_url,
                                                               **env}, name=name, concurrency=concurrency)
        started.append(proc)
        return proc.start()

    start.started = started  # type: ignore[attr-defined]
    yield start
    for proc in started:
        proc.stop()


def lines(n: int, tag: str = "") -> List[str]:
    tag = tag or uuid.uuid4().hex[:6]
    return [json.dumps({"custom_id": f"c{i}", "prompt": f"job {tag} #{i}"}) + "\n" for i in range(n)]


def submit(client: Client, n: int, tag: str = "") -> str:
    return submit_batch(client, lines(n, tag), targets=[TARGET]).batch_id


def calls_per_prompt(openai: FakeOpenAI) -> Dict[str, int]:
    counts: Dict[str, int] = collections.Counter()
    for request in openai.requests:
        messages = (request.body or {}).get("messages") or []
        counts[messages[-1]["content"] if messages else ""] += 1
    return counts


def duplicate_calls(openai: FakeOpenAI) -> int:
    return sum(n - 1 for n in calls_per_prompt(openai).values() if n > 1)


def assert_batch_answered_once(client: Client, batch_id: str, n: int, alive: Iterable[WorkerProcess] = (),
                               timeout_s: float = 120.0) -> List[dict]:
    try:
        wait_for(lambda: batch_status(client, batch_id).get("finished"), timeout_s, 0.2,
                 f"batch {batch_id} to finish ({n} jobs)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_stuck(client, batch_id)}") from None
    results = list(iter_results(client, batch_id))
    ids = collections.Counter(r["custom_id"] for r in results)
    assert len(results) == n and set(ids) == {f"c{i}" for i in range(n)}, (len(results), ids.most_common(3))
    assert max(ids.values()) == 1
    failed = [r for r in results if r.get("error") or (r.get("response") or {}).get("status_code") != 200]
    assert not failed, failed[:3]
    for proc in alive:
        assert proc.proc is not None and proc.proc.poll() is None, f"worker {proc.name} died:\n{proc.log()}"
    return results


def _stuck(client: Client, batch_id: str) -> str:
    """What an unfinished batch's jobs are doing, for the failure message."""
    status = batch_status(client, batch_id)
    lines = [f"batch status: {status}"]
    r = client.redis
    for raw in r.lrange(client.keys.batch_jobs(batch_id), 0, -1):
        record = client.store.get(raw.decode() if isinstance(raw, bytes) else raw)
        if record is not None and not record.status.terminal:
            fields = r.hgetall(client.keys.job(record.id))
            lines.append(f"{record.id}: {record.status.value} worker={record.worker} "
                         f"fields={ {k.decode(): v.decode()[:60] for k, v in fields.items() if k != b'spec'} }")
    lines.append(f"inflight: {r.zrange(client.keys.inflight, 0, -1, withscores=True)[:10]}")
    lines.append(f"processing lists: {[(k, r.llen(k)) for k in r.keys('promptq:processing:*')][:10]}")
    return "\n".join(lines[:60])


def report(fault: str, submitted: int, results: List[dict], openai: FakeOpenAI) -> None:
    """One line per fault: `pytest tests/faults -s -q | grep '^FAULT'` prints the table."""
    print(f"\nFAULT {fault}: submitted {submitted}, answered {len(results)}, lost {submitted - len(results)}, "
          f"duplicate provider calls {duplicate_calls(openai)}")
