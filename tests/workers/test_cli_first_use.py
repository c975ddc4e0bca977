"""The defects a first user hit, each run as the user ran it: `promptq` as a
subprocess against a real Redis and a real worker (issue 9)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid

import pytest

from tests.worker_process import ROOT, wait_for
from tests.workers.test_cli import promptq

pytestmark = pytest.mark.usefixtures("worker")


def run(args, *, env=None, stdin=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "promptq.workers.cli.main", *args],
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=ROOT,
                          capture_output=True, timeout=timeout, input=stdin)


# --- validation: submit refuses what batch submit refuses -------------------------


def test_submit_refuses_a_parameter_of_the_wrong_type_like_a_batch_line(redis_server, tmp_path, client):
    out = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", "--param", "temperature=hot", "x")
    assert out.returncode == 2 and out.stdout == ""
    assert "parameters: invalid parameter 'temperature': expected a number, got str" in out.stderr
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"custom_id": "a", "prompt": "x", "parameters": {"temperature": "hot"}}) + "\n")
    out = promptq(redis_server, "batch", "submit", str(batch), "--to", "openai:gpt-4o-mini")
    assert out.returncode == 2 and "invalid parameter 'temperature': expected a number, got str" in out.stderr
    # The library refuses it the same way, at submit time.
    from promptq.tasks.job import JobValidationError

    with pytest.raises(JobValidationError, match="temperature"):
        client.submit("x", to=["openai:gpt-4o-mini"], parameters={"temperature": "hot"})


def test_invalid_utf8_is_refused_by_submit_as_by_batch_submit(redis_server, tmp_path):
    env = {"PROMPTQ_REDIS_URL": redis_server.url}
    out = run(["submit", "--to", "openai:gpt-4o-mini", "-"], env=env, stdin=b"caf\xe9 au lait")
    assert out.returncode == 2 and b"not UTF-8" in out.stderr and b"Traceback" not in out.stderr
    out = run(["submit", "--to", "openai:gpt-4o-mini", os.fsdecode(b"caf\xe9")], env=env)
    assert out.returncode == 2 and b"not UTF-8" in out.stderr and b"Traceback" not in out.stderr
    batch = tmp_path / "b.jsonl"
    batch.write_bytes(b'{"custom_id": "a", "prompt": "caf\xe9"}\n')
    out = run(["batch", "submit", str(batch), "--to", "openai:gpt-4o-mini"], env=env)
    assert out.returncode == 2 and b"not UTF-8" in out.stderr


def test_messages_from_a_file_and_from_stdin(redis_server, tmp_path):
    # 1.5 MB of messages: far past what an argument list can carry.
    filler = "word " * 1000
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": filler} for i in range(299)]
    messages.append({"role": "user", "content": f"last #{uuid.uuid4().hex[:6]}"})
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(messages))
    assert path.stat().st_size > 1_500_000
    env = {"PROMPTQ_REDIS_URL": redis_server.url, "PROMPTQ_MAX_PROMPT_CHARS": "2000000"}
    out = run(["submit", "--to", "openai:gpt-4o-mini", "--messages", f"@{path}"], env=env)
    assert out.returncode == 0, out.stderr
    result = promptq(redis_server, "result", out.stdout.decode().strip(), "--wait", "--timeout", "30")
    assert result.returncode == 0 and messages[-1]["content"] in result.stdout
    out = run(["submit", "--to", "openai:gpt-4o-mini", "--messages", "-"], env=env, stdin=path.read_bytes())
    assert out.returncode == 0, out.stderr
    out = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", "--messages", f"@{tmp_path / 'nope.json'}")
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_submit_id_of_a_different_job_is_refused(redis_server):
    job_id = f"mine-{uuid.uuid4().hex[:8]}"
    first = promptq(redis_server, "submit", "--id", job_id, "--to", "openai:gpt-4o-mini", "first question")
    assert first.returncode == 0 and first.stdout.strip() == job_id
    again = promptq(redis_server, "submit", "--id", job_id, "--to", "openai:gpt-4o-mini", "first question")
    assert again.returncode == 0 and again.stdout.strip() == job_id  # the same job: idempotent
    other = promptq(redis_server, "submit", "--id", job_id, "--to", "openai:gpt-4o-mini", "another question")
    assert other.returncode == 2 and "different job" in other.stderr and other.stdout == ""


# --- cancel, dlq, result -------------------------------------------------------------


def test_cancel_of_a_running_job_stops_it_and_of_a_finished_one_says_so(redis_server):
    job_id = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini",
                     f"slow [[fault:slow:30]] #{uuid.uuid4().hex[:6]}").stdout.strip()
    wait_for(lambda: promptq(redis_server, "status", job_id).stdout.strip() == "running", 30, 0.1, "the job to run")
    out = promptq(redis_server, "cancel", job_id)
    assert out.returncode == 0 and out.stdout.strip() == "cancelled", out.stderr
    out = promptq(redis_server, "result", job_id)
    assert out.returncode == 5 and "cancelled" in out.stderr
    out = promptq(redis_server, "cancel", job_id)
    assert out.returncode == 2 and "already cancelled" in out.stderr

    done_id = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", "quick").stdout.strip()
    assert promptq(redis_server, "result", done_id, "--wait", "--timeout", "30").returncode == 0
    out = promptq(redis_server, "cancel", done_id)
    assert out.returncode == 2 and "already succeeded" in out.stderr


def test_dlq_requeue_of_an_unknown_id_exits_4(redis_server):
    out = promptq(redis_server, "dlq", "requeue", "no-such-job")
    assert out.returncode == 4 and "no job no-such-job" in out.stderr


# --- stream ----------------------------------------------------------------------------


def test_stream_to_a_file_marks_where_a_failed_attempt_ends(redis_server, fakes, tmp_path):
    openai, _ = fakes
    openai.push("drop:2")  # the first attempt sends two chunks, then the connection drops
    prompt = f"one two three four five six #{uuid.uuid4().hex[:6]}"
    job_id = promptq(redis_server, "submit", "--stream", "--to", "openai:gpt-4o-mini", prompt).stdout.strip()
    out = promptq(redis_server, "stream", job_id, "--timeout", "30")
    assert out.returncode == 0, out.stderr
    first, marker, rest = out.stdout.partition("[promptq: attempt 1 on openai failed; discard the text above")
    assert marker and first.strip() and f"echo: {prompt}" not in first
    assert rest.rstrip().endswith(f"echo: {prompt}")
    held = promptq(redis_server, "stream", job_id, "--hold", "--timeout", "30")
    assert held.returncode == 0 and held.stdout == f"echo: {prompt}\n"


def test_stream_of_a_job_submitted_without_stream_prints_its_text(redis_server):
    prompt = f"not streamed #{uuid.uuid4().hex[:6]}"
    job_id = promptq(redis_server, "submit", "--to", "openai:gpt-4o-mini", prompt).stdout.strip()
    out = promptq(redis_server, "stream", job_id, "--timeout", "30")
    assert out.returncode == 0 and out.stdout == f"echo: {prompt}\n"


def test_stream_exit_code_says_failed_with_or_without_events(redis_server, fakes):
    openai, _ = fakes
    openai.push("invalid")
    job_id = promptq(redis_server, "submit", "--stream", "--to", "openai:gpt-4o-mini",
                     f"refused #{uuid.uuid4().hex[:6]}").stdout.strip()
    out = promptq(redis_server, "stream", job_id, "--timeout", "30")
    assert out.returncode == 1 and "failed" in out.stderr
    out = promptq(redis_server, "stream", job_id, "--events", "--timeout", "30")
    assert out.returncode == 1 and json.loads(out.stdout.splitlines()[-1])["type"] == "error"


# --- Redis URLs ----------------------------------------------------------------------


@pytest.fixture
def not_redis():
    """A TCP port that answers like an HTTP server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(100)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


@pytest.fixture
def silent_port():
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


def test_bad_redis_urls_exit_6_with_one_line(redis_server, not_redis, silent_port):
    db_out_of_range = redis_server.url.rsplit("/", 1)[0] + "/99"
    for url in ("notaurl", db_out_of_range, not_redis):
        for args in (["status", "abc"], ["submit", "--to", "mock:m", "hi"], ["worker", "--providers", "mock"],
                     ["flower"], ["demo"]):
            out = run(args, env={"PROMPTQ_REDIS_URL": url})
            stderr = out.stderr.decode()
            assert out.returncode == 6, (url, args, stderr)
            assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, (url, args, stderr)
    # Something that accepts and never answers: a bounded wait, not a hang.
    out = run(["status", "abc"], env={"PROMPTQ_REDIS_URL": silent_port})
    assert out.returncode == 6 and len(out.stderr.decode().strip().splitlines()) == 1, out.stderr


# --- workers -----------------------------------------------------------------------


def test_worker_without_a_key_refuses_to_start_and_takes_no_job(redis_server, client):
    handle = client.submit(f"for openrouter #{uuid.uuid4().hex[:6]}", to=["openrouter:x/y"])
    env = {"PROMPTQ_REDIS_URL": redis_server.url, "OPENROUTER_API_KEY": ""}
    out = run(["worker", "--providers", "openrouter"], env=env, timeout=60)
    assert out.returncode == 2 and b"set OPENROUTER_API_KEY" in out.stderr
    assert client.status(handle.id).status.value == "queued"
    assert client.redis.llen("promptq.openrouter") >= 1
    # With another provider it can serve, it starts without that queue, and says so.
    out = run(["worker", "--providers", "openrouter,mock", "--dry-run"], env=env, timeout=60)
    assert out.returncode == 0 and b"-Q promptq.mock " in out.stdout
    assert b"NOT consuming promptq.openrouter" in out.stderr and b"set OPENROUTER_API_KEY" in out.stderr
    client.cancel(handle.id)


def test_worker_accepts_provider_aliases_and_names_nodes_apart(redis_server):
    env = {"PROMPTQ_REDIS_URL": redis_server.url, "ANTHROPIC_API_KEY": "sk-ant-x"}
    first = run(["worker", "--providers", "anthropic", "--dry-run"], env=env)
    second = run(["worker", "--providers", "anthropic", "--dry-run"], env=env)
    assert first.returncode == 0, first.stderr
    assert b"-Q promptq.claude " in first.stdout
    node = lambda out: out.stdout.split(b" -n ")[1].split()[0]  # noqa: E731
    assert node(first) != node(second) and node(first).endswith(b"@%h")
