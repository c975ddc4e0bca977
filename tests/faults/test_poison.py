"""Poison messages on a promptq queue: each is moved to `promptq:poison` with
the reason and acknowledged; the worker keeps serving, and a batch submitted
behind them is answered in full. A worker restarted afterwards finds nothing
to trip over (kombu used to restore the message at shutdown, killing every
worker after it)."""

from __future__ import annotations

import base64
import json
import pickle
import uuid

import pytest

from promptq.tasks.poison import read_poison
from tests.worker_process import wait_for

from .conftest import report, assert_batch_answered_once, submit

pytestmark = pytest.mark.faults

QUEUE = "promptq.openai"


def envelope(body: bytes, *, content_type=None, task="promptq.run_job", body_encoding="base64") -> str:
    job_id = uuid.uuid4().hex
    message = {
        "body": base64.b64encode(body).decode() if body_encoding == "base64" else body.decode("latin-1"),
        "content-encoding": "utf-8",
        "headers": {"task": task, "id": job_id, "lang": "py", "argsrepr": "", "kwargsrepr": ""},
        "properties": {"delivery_tag": uuid.uuid4().hex, "body_encoding": body_encoding, "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": QUEUE}},
    }
    if content_type:
        message["content-type"] = content_type
    return json.dumps(message)


def pickled_without_content_type() -> str:
    args = [["x", {"targets": ["openai:gpt-4o-mini"], "prompt": "pickled"}], {}, {}]
    return envelope(pickle.dumps(args))


def non_base64_body() -> str:
    raw = json.loads(envelope(b"{}", content_type="application/json"))
    raw["body"] = "!!! not base64 at all !!!"
    return json.dumps(raw)


POISONS = {
    "pickle without content-type": pickled_without_content_type,
    "raw non-JSON": lambda: b"\x80\x04\x95 this is not JSON",
    "JSON that is not an object": lambda: "[1, 2, 3]",
    "non-base64 body": non_base64_body,
    "JSON body that is not a task": lambda: envelope(b'"just a string"', content_type="application/json"),
}


def test_every_poison_message_is_set_aside_and_the_worker_keeps_serving(redis_aof, openai, client, workers):
    r = redis_aof.client()
    worker = workers("sturdy")
    for make in POISONS.values():
        r.lpush(QUEUE, make())
    batch_id = submit(client, 20)
    results = assert_batch_answered_once(client, batch_id, 20, alive=[worker], timeout_s=60)
    report(f"{len(POISONS)} poison messages ahead of a batch", 20, results, openai)
    wait_for(lambda: r.llen("promptq:poison") >= len(POISONS), 20, message="the undecodable messages in the poison list")
    entries = read_poison(r)
    assert all(e["reason"] and e["message"] for e in entries)
    assert {e["queue"] for e in entries} == {QUEUE}
    assert r.llen(QUEUE) == 0 and r.hlen("unacked") == 0
    assert not any("pickled" in json.dumps(req.body) for req in openai.requests)
    # A restarted worker finds nothing to trip over, and still serves.
    worker.stop()
    again = workers("again")
    batch_id = submit(client, 5)
    assert_batch_answered_once(client, batch_id, 5, alive=[again], timeout_s=60)
    # What an operator sees.
    from click.testing import CliRunner

    from promptq.workers.cli.main import cli

    out = CliRunner().invoke(cli, ["--redis-url", redis_aof.url, "poison", "--limit", "50"])
    assert out.exit_code == 0 and len(out.stdout.splitlines()) == len(entries)
    assert all(f"\t{QUEUE}\t" in line for line in out.stdout.splitlines())
