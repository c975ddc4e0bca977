"""Batch files: both line formats, every kind of bad line reported by number,
all-or-nothing submission, derived job ids, resumed submissions, and the
hand-built Celery messages compared with what `send_task` writes. Real Redis,
no worker (the worker side is tests/workers/test_batch_e2e.py)."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from promptq.tasks.batch import BatchBusyError, BatchInputError, batch_status, job_id_for, submit_batch
from promptq.tasks.batch_input import BatchLine, InvalidLine, iter_batch
from promptq.tasks.batch_submit import BulkSubmitter, MessageBuilder
from promptq.tasks.job import JobValidationError
from promptq.tasks.lanes import list_key

#: Where a batch's messages wait: the batch lane's list of each queue.
MOCK_BATCH = list_key("promptq.mock", "batch")

OPENAI_LINE = {
    "custom_id": "o1", "method": "POST", "url": "/v1/chat/completions",
    "body": {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "Hi there"}],
             "temperature": 0.2, "max_tokens": 50},
}
PLAIN_LINE = {"custom_id": "p1", "prompt": "Say hi", "system": "Be kind.", "parameters": {"top_p": 0.9},
              "targets": ["ollama:llama3.2", "claude:claude-3-5-haiku-latest"], "metadata": {"team": "x"}}


def jsonl(*objects) -> list:
    return [o if isinstance(o, str) else json.dumps(o) for o in objects]


def parse(lines, **kw):
    return list(iter_batch(lines, **kw))


def test_openai_line_maps_body_to_a_job():
    [line] = parse(jsonl(OPENAI_LINE))
    assert isinstance(line, BatchLine) and (line.line_no, line.custom_id) == (1, "o1")
    spec = line.spec
    assert spec["targets"] == ["openai:gpt-4o-mini"]  # default provider + body.model
    assert spec["messages"] == OPENAI_LINE["body"]["messages"] and spec["prompt"] is None
    assert spec["parameters"] == {"temperature": 0.2, "max_tokens": 50}  # model and messages are not parameters
    assert spec["custom_id"] == "o1" and spec["metadata"] == {"input_line": 1}
    [other] = parse(jsonl(OPENAI_LINE), default_provider="openrouter")
    assert other.spec["targets"] == ["openrouter:gpt-4o-mini"]


def test_to_overrides_body_model_but_not_a_plain_lines_own_targets():
    plain_default = {"custom_id": "p2", "prompt": "no targets of its own"}
    lines = parse(jsonl(OPENAI_LINE, PLAIN_LINE, plain_default), targets=["ollama:llama3.2", "openai:gpt-4o"])
    assert [l.spec["targets"] for l in lines] == [
        ["ollama:llama3.2", "openai:gpt-4o"],
        ["ollama:llama3.2", "claude:claude-3-5-haiku-latest"],
        ["ollama:llama3.2", "openai:gpt-4o"],
    ]


def test_plain_line_fields():
    [line] = parse(jsonl(PLAIN_LINE))
    spec = line.spec
    assert (spec["prompt"], spec["system_prompt"], spec["parameters"]) == ("Say hi", "Be kind.", {"top_p": 0.9})
    assert spec["metadata"] == {"team": "x", "input_line": 1}
    [chat] = parse(jsonl({"custom_id": "c", "messages": [{"role": "user", "content": "yo"}]}), targets=["mock:m"])
    assert chat.spec["messages"] == [{"role": "user", "content": "yo"}]


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n" + json.dumps(PLAIN_LINE) + "\n\n  \n" + json.dumps(OPENAI_LINE) + "\n")
    assert [(l.line_no, l.custom_id) for l in parse(str(path))] == [(2, "p1"), (5, "o1")]


BAD_LINES = [
    ('{"custom_id": "x", "prompt": "unterminated', "invalid JSON"),
    ('["not", "an", "object"]', "must be a JSON object"),
    ({"prompt": "who am I"}, "custom_id is missing"),
    ({"custom_id": 7, "prompt": "numeric id"}, "custom_id must be a non-empty string"),
    ({"custom_id": "a"}, "prompt is missing"),
    ({"custom_id": "a", "prompt": "   ", "targets": ["mock:m"]}, "prompt: must be a non-empty string"),
    ({**OPENAI_LINE, "body": {"model": "gpt-4o-mini"}}, "body.messages is missing"),
    ({**OPENAI_LINE, "url": "/v1/embeddings"}, "url must be '/v1/chat/completions'"),
    ({**OPENAI_LINE, "method": "GET"}, "method must be \"POST\""),
    ({"custom_id": "a", "prompt": "p", "targets": ["nowhere:model"]}, "targets[0]: unknown provider 'nowhere'"),
    ({**OPENAI_LINE, "body": {**OPENAI_LINE["body"], "model": ""}}, "body.model is missing"),
    ({**OPENAI_LINE, "body": {**OPENAI_LINE["body"], "api_key": "sk-leak"}}, "body.api_key: API keys"),
    ({**OPENAI_LINE, "body": {**OPENAI_LINE["body"], "extra_headers": {"Authorization": "Bearer x"}}},
     "body.extra_headers.Authorization: API keys"),
    ({**PLAIN_LINE, "metadata": {"token": "t0k"}}, "metadata.token: API keys"),
    ({**OPENAI_LINE, "body": {**OPENAI_LINE["body"], "temperature": "hot"}},
     "body: invalid parameter 'temperature': expected a number"),
    ({**OPENAI_LINE, "body": {**OPENAI_LINE["body"], "stream": True}}, "body.stream: a batch line cannot stream"),
    ({**OPENAI_LINE, "body": {**OPENAI_LINE["body"], "messages": [{"role": "robot", "content": "x"}]}},
     "body.messages[0].role: must be one of"),
    ({**PLAIN_LINE, "promt": "typo"}, "unknown field 'promt'"),
    ({"custom_id": "a", "prompt": "p", "targets": []}, "no targets"),
]


@pytest.mark.parametrize("bad, reason", BAD_LINES, ids=[r for _, r in BAD_LINES])
def test_each_kind_of_bad_line_is_reported_with_its_number_and_reason(bad, reason):
    items = parse(jsonl({**PLAIN_LINE, "custom_id": "before"}, bad, {**OPENAI_LINE, "custom_id": "after"}))
    assert [type(i) for i in items] == [BatchLine, InvalidLine, BatchLine]
    assert items[1].line_no == 2
    assert reason in items[1].reason, items[1].reason
    assert items[1].format("in.jsonl").startswith(f"in.jsonl:2: ")


def test_duplicate_custom_id_names_both_lines():
    items = parse(jsonl(PLAIN_LINE, OPENAI_LINE, {**PLAIN_LINE, "prompt": "again"}, {"custom_id": "o1"}))
    assert isinstance(items[0], BatchLine) and isinstance(items[1], BatchLine)
    assert items[2] == InvalidLine(3, "duplicate custom_id 'p1' (first on line 1)")
    # Reported as a duplicate even though the line has other problems too.
    assert items[3] == InvalidLine(4, "duplicate custom_id 'o1' (first on line 2)")


def test_invalid_utf8_is_one_bad_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps(PLAIN_LINE).encode() + b"\n{\"custom_id\": \"\xff\"}\n")
    items = parse(str(path))
    assert isinstance(items[0], BatchLine) and "not UTF-8" in items[1].reason and items[1].line_no == 2


# --- submitting ---------------------------------------------------------------------


def test_one_bad_line_means_nothing_is_enqueued(client, redis_client):
    lines = jsonl(PLAIN_LINE, "{oops", OPENAI_LINE, {"custom_id": "p1", "prompt": "dup but otherwise fine"})
    with pytest.raises(BatchInputError) as info:
        submit_batch(client, lines, batch_id="b-all-or-nothing")
    assert [(i.line_no, i.reason.split(":")[0]) for i in info.value.invalid] == [
        (2, "invalid JSON"), (4, "duplicate custom_id 'p1' (first on line 1)")]
    assert redis_client.keys("*") == []


def test_skip_invalid_enqueues_the_good_lines_in_order(client, redis_client, keys, queue_messages):
    plain_to = {"custom_id": "p2", "prompt": "follows --to"}
    lines = jsonl(PLAIN_LINE, "{oops", OPENAI_LINE, plain_to)
    sub = submit_batch(client, lines, targets=["claude:claude-3-5-haiku-latest"], batch_id="b-skip", skip_invalid=True)
    assert (sub.batch_id, sub.submitted, sub.skipped_existing, sub.lines) == ("b-skip", 3, 0, 3)
    assert [i.line_no for i in sub.invalid] == [2]
    ids = [job_id_for("b-skip", c) for c in ("p1", "o1", "p2")]
    assert [i.decode() for i in redis_client.lrange(keys.batch_jobs("b-skip"), 0, -1)] == ids
    status = batch_status(client, "b-skip")
    assert (status["total"], status["queued"], status["invalid"], status["submit_state"]) == (3, 3, 1, "complete")
    # Records and messages were written together: nothing waits in inflight.
    assert redis_client.zcard(keys.inflight) == 0
    ollama, claude = queue_messages(list_key("promptq.ollama", "batch")), queue_messages(list_key("promptq.claude", "batch"))
    assert [m["args"][0] for m in ollama] == ids[:1] and [m["args"][0] for m in claude] == ids[1:]
    for message in ollama + claude:
        job_id, spec = message["args"]
        record = client.store.get(job_id)
        assert record.spec == spec and spec["batch_id"] == "b-skip"
        assert message["kwargs"]["token"] == redis_client.hget(keys.job(job_id), "token").decode()
    assert claude[0]["args"][1]["metadata"] == {"input_line": 3} and claude[0]["args"][1]["custom_id"] == "o1"


def test_job_ids_are_stable_per_batch_and_line():
    assert job_id_for("b1", "x") == job_id_for("b1", "x")
    assert len({job_id_for("b1", "x"), job_id_for("b2", "x"), job_id_for("b1", "y")}) == 3


@pytest.mark.parametrize("bad_id", ["x:jobs", "has space", "", "-lead", "x" * 101])
def test_batch_id_shape_is_checked(client, bad_id):
    with pytest.raises(JobValidationError):
        submit_batch(client, jsonl(PLAIN_LINE), batch_id=bad_id)


def test_resumed_submission_sends_only_what_is_missing(client, redis_client, keys):
    lines = jsonl(*({"custom_id": f"r{i}", "prompt": f"line {i}"} for i in range(10)))
    first = submit_batch(client, lines[:4], targets=["mock:m"], batch_id="b-resume")  # "interrupted" after 4
    second = submit_batch(client, lines, targets=["mock:m"], batch_id="b-resume")
    third = submit_batch(client, lines, targets=["mock:m"], batch_id="b-resume")
    assert (first.submitted, second.submitted, second.skipped_existing) == (4, 6, 4)
    assert (third.submitted, third.skipped_existing) == (0, 10)
    assert redis_client.llen(MOCK_BATCH) == 10
    listed = [i.decode() for i in redis_client.lrange(keys.batch_jobs("b-resume"), 0, -1)]
    assert listed == [job_id_for("b-resume", f"r{i}") for i in range(10)]
    status = batch_status(client, "b-resume")
    assert (status["total"], status["queued"]) == (10, 10)


def test_one_submitter_per_batch_at_a_time(client, redis_client, keys):
    other = BulkSubmitter(client, "b-busy")
    other.claim()  # another process is submitting this batch right now
    with pytest.raises(BatchBusyError):
        submit_batch(client, jsonl(PLAIN_LINE), batch_id="b-busy")
    assert redis_client.llen(keys.batch_jobs("b-busy")) == 0
    other.unclaim()
    assert submit_batch(client, jsonl(PLAIN_LINE), batch_id="b-busy").submitted == 1
    # A finished submission leaves no claim behind: the next one may start at once.
    assert not redis_client.hexists(keys.batch("b-busy"), "submitter")
    assert submit_batch(client, jsonl(PLAIN_LINE), batch_id="b-busy").skipped_existing == 1


def test_submission_is_pipelined_not_a_round_trip_per_line(client, redis_client, monkeypatch):
    sent = []
    real = redis.connection.AbstractConnection.send_packed_command
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                        lambda self, *a, **kw: (sent.append(1), real(self, *a, **kw))[1])
    lines = jsonl(*({"custom_id": f"r{i}", "prompt": f"line {i}"} for i in range(3000)))
    sub = submit_batch(client, lines, targets=["mock:m"], batch_id="b-fast")
    assert sub.submitted == 3000 and redis_client.llen(MOCK_BATCH) == 3000
    # Three chunks of 1000, a handful of round trips each (scripts loaded on first use).
    assert 0 < len(sent) < 40, len(sent)


@pytest.mark.parametrize("lane", ["interactive", "batch"])
def test_built_message_matches_what_send_task_writes(client, redis_client, lane):
    spec = {"id": "j-same", "targets": ["mock:m"], "prompt": "p", "messages": None, "batch_id": "b", "lane": lane}
    client.send("j-same", spec, target_index=0, attempt=1, token="tok")
    # kombu put send_task's message in the lane's own list; the bulk path must name the same key.
    key = list_key("promptq.mock", lane)
    assert redis_client.llen(key) == 1 and redis_client.keys("promptq.mock*") == [key.encode()]
    redis_client.lpush(key, MessageBuilder(client.app).envelope("j-same", spec, "tok", "promptq.mock"))
    built, sent = (json.loads(raw) for raw in redis_client.lrange(key, 0, -1))
    # The batch path splices the record's own JSON of the spec into the body: the same bytes.
    spliced = json.loads(MessageBuilder(client.app).envelope("j-same", spec, "tok", "promptq.mock",
                                                             spec_json=json.dumps(spec)))
    assert base64.b64decode(spliced["body"]) == base64.b64decode(built["body"])
    assert base64.b64decode(built.pop("body")) == base64.b64decode(sent.pop("body"))
    assert built["properties"].pop("delivery_tag") != sent["properties"].pop("delivery_tag")
    # Display-only strings: ours is a plain repr, Celery's a depth-limited one.
    for envelope in (built, sent):
        assert envelope["headers"].pop("argsrepr").startswith("('j-same', {")
        envelope["headers"].pop("kwargsrepr")
    assert built == sent


def test_cli_reports_every_bad_line_as_file_line_reason_and_enqueues_nothing(tmp_path, settings, redis_client):
    from click.testing import CliRunner

    from promptq.workers.cli.main import cli

    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(jsonl(PLAIN_LINE, "{oops", OPENAI_LINE, {"custom_id": "p1", "prompt": "dup"})) + "\n")
    args = ["--redis-url", settings.redis_url, "batch", "submit", str(path), "--to", "mock:m"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr.splitlines()[:2] == [
        f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:4: duplicate custom_id 'p1' (first on line 1)",
    ]
    assert "nothing was enqueued" in out.stderr and "--skip-invalid" in out.stderr
    assert redis_client.keys("*") == []

    out = CliRunner().invoke(cli, args + ["--skip-invalid", "--batch-id", "b-cli", "-q"])
    assert out.exit_code == 0, out.stderr
    assert out.stdout == "b-cli\n"  # the id alone on stdout
    assert "--batch-id b-cli" in out.stderr  # how to resume
    assert redis_client.llen(MOCK_BATCH) == 1 and redis_client.llen(list_key("promptq.ollama", "batch")) == 1
