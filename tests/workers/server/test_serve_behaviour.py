"""`promptq serve` as an operator and a careless client meet it: binding
without keys, a disconnect that does (or does not) cancel its job, promptq's
own 429, and keys that never reach the log."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx
import openai
import pytest

from promptq.tasks.client import Client
from promptq.tasks.settings import Settings
from promptq.workers.server.config import ServerConfigError, from_environ, is_loopback

from .conftest import API_KEY, ServeProcess
from tests.worker_process import wait_for


def tag() -> str:
    return uuid.uuid4().hex[:8]


def test_refuses_a_public_address_without_keys(redis_server):
    out = subprocess.run([sys.executable, "-P", "-m", "promptq.workers.cli.main", "serve", "--host", "0.0.0.0",
                          "--port", "1"], env={"PROMPTQ_REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "refusing to bind 0.0.0.0 without API keys" in out.stderr


def test_keys_from_env_and_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# ops keys\nfile-key-0123456789abcdef\n\n")
    config = from_environ({"PROMPTQ_API_KEYS": "env-key-0123456789abcdef, "}, keys_file=str(keys), host="0.0.0.0")
    config.check_bind()  # keys given: any address is allowed
    assert len(config.key_digests) == 2 and "env-key" not in repr(config)
    with pytest.raises(ServerConfigError, match="shorter than 16"):
        from_environ({"PROMPTQ_API_KEYS": "short"})
    with pytest.raises(ServerConfigError, match="refusing to bind"):
        from_environ({}, host="10.0.0.1").check_bind()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")


def slow_body(cancel: bool, stream: bool) -> dict:
    # Ten seconds of chunks unless something stops it.
    words = " ".join(f"w{i}" for i in range(200))
    slow = "[[fault:slow_stream:0.05]]" if stream else "[[fault:slow:10]]"
    body = {"model": "openai:gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": f"{words} {slow} {tag()}"}]}
    if cancel:
        body["promptq"] = {"cancel_on_disconnect": True}
    return body


@pytest.mark.parametrize("cancel", [True, False])
def test_disconnect_cancels_only_when_asked(server, redis_server, cancel):
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    try:
        with httpx.stream("POST", f"{server.base}/v1/chat/completions", json=slow_body(cancel, stream=True),
                          headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as response:
            job_id = response.headers["x-promptq-job-id"]
            lines = response.iter_lines()
            wait_for(lambda: 'w3' in next(lines), 30, 0, "streamed text")
        # The connection is closed here.
        if cancel:
            record = client.result(job_id, timeout=30)
            assert record.status.value == "cancelled"
        else:
            wait_for(lambda: client.status(job_id).status.value != "queued", 10, 0.05, "job to run")
            record = client.result(job_id, timeout=60)
            assert record.status.value == "succeeded" and "w199" in record.text
    finally:
        client.close()


def test_promptq_refuses_with_429_and_retry_after(redis_server, mock_worker, server_config, tmp_path):
    busy = ServeProcess(redis_server.url, server_config, tmp_path, args=["--max-open-requests", "1"]).start()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    plain = {"model": "mock:m", "messages": [{"role": "user", "content": f"x {tag()}"}]}
    try:
        # An open stream holds the one place until it ends.
        with httpx.stream("POST", f"{busy.base}/v1/chat/completions", json=slow_body(False, stream=True),
                          headers=headers, timeout=30) as stream:
            lines = stream.iter_lines()
            wait_for(lambda: "w3" in next(lines), 30, 0, "streamed text")
            refused = httpx.post(f"{busy.base}/v1/chat/completions", headers=headers, json=plain)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "promptq_busy"
            for _ in lines:  # to the end of the stream
                pass
        answered = wait_for(lambda: (r := httpx.post(f"{busy.base}/v1/chat/completions", headers=headers,
                                                     json=plain, timeout=30)).status_code == 200 and r, 10, 0.1,
                            "the place to be given back")
        assert answered.json()["choices"][0]["message"]["content"].startswith("mock reply to:")
    finally:
        busy.stop()


def test_invalid_json_is_400(server):
    response = httpx.post(f"{server.base}/v1/chat/completions", content=b"{not json",
                          headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = httpx.get(f"{server.base}/v1/nothing", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 404 and json.loads(response.text)["error"]["code"] == "unknown_url"


def test_non_streamed_disconnect_cancels_when_asked(server, redis_server):
    key = f"idem-{tag()}"
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key, "x-promptq-cancel-on-disconnect": "1"}
    # Rate-limited for ten seconds: the job waits (retrying) when the client gives up after two.
    body = {"model": "mock:m", "messages": [{"role": "user", "content": f"[[fault:rate_limit:10:once]] {tag()}"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base}/v1/chat/completions", json=body, headers=headers, timeout=httpx.Timeout(30, read=2.0))
    # The same key names the same job: asking again answers with it, not a new one.
    again = wait_for(lambda: (r := httpx.post(f"{server.base}/v1/chat/completions", json=body, headers=headers,
                                              timeout=30)).status_code != 200 and r, 10, 0.2, "the cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "cancelled"
    client = Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_server.url}))
    try:
        assert client.status(again.headers["x-promptq-job-id"]).status.value == "cancelled"
    finally:
        client.close()


def test_idempotent_retry_follows_the_first_job(openai_client):
    key = f"idem-{tag()}"
    messages = [{"role": "user", "content": f"once only {tag()}"}]
    first = openai_client.chat.completions.with_raw_response.create(
        model="mock:m", messages=messages, extra_headers={"Idempotency-Key": key})
    second = openai_client.chat.completions.with_raw_response.create(
        model="mock:m", messages=messages, extra_headers={"Idempotency-Key": key})
    assert first.headers["x-promptq-job-id"] == second.headers["x-promptq-job-id"]
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    # The same key for another request is refused, not answered with the first one's result.
    with pytest.raises(openai.ConflictError) as info:
        openai_client.chat.completions.create(model="mock:m", messages=messages, stream=True,
                                              extra_headers={"Idempotency-Key": key})
    assert info.value.code == "idempotency_key_reused"
