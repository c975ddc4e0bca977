"""A real Flower against promptq's app sees the running worker and its tasks,
and keeps its API behind basic auth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import pytest
import requests

from tests.redis_server import free_port
from tests.worker_process import ROOT, wait_for

pytestmark = pytest.mark.usefixtures("worker")

AUTH = ("ops", "s3cret-flower")


@pytest.fixture(scope="module")
def flower(redis_server, worker):
    port = free_port()
    env = {**os.environ, "PROMPTQ_REDIS_URL": redis_server.url, "PYTHONPATH": str(ROOT),
           "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "promptq.workers.cli.main", "flower", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"flower exited: {log.read().decode(errors='replace')[-3000:]}")
        try:
            return requests.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 60, 0.2, "Flower to answer /healthcheck")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_flower_lists_the_running_worker(flower, worker):
    def worker_listed():
        reply = requests.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=AUTH, timeout=10)
        assert reply.status_code == 200, reply.text
        return [name for name in reply.json() if name.startswith("e2e@")]

    names = wait_for(worker_listed, 30, 0.5, "Flower to list the worker")
    info = requests.get(f"{flower}/api/workers", params={"workername": names[0]}, auth=AUTH, timeout=10).json()
    queues = {q["name"] for q in info[names[0]]["active_queues"]}
    assert {"promptq.openai", "promptq.claude"} <= queues


def test_flower_sees_a_job_as_a_task(flower, client):
    handle = client.submit("seen by flower", to=["openai:gpt-4o-mini"])
    assert client.result(handle.id, timeout=30).status.value == "succeeded"

    def task_seen():
        reply = requests.get(f"{flower}/api/task/info/{handle.id}", auth=AUTH, timeout=10)
        return reply.status_code == 200 and reply.json().get("state") == "SUCCESS" and reply.json()

    task = wait_for(task_seen, 30, 0.5, "Flower to record the task")
    assert task["name"] == "promptq.run_job"
    assert "sk-" not in str(task)  # no key in what Flower shows


def test_flower_api_requires_auth(flower):
    assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401
