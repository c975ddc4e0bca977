"""Anthropic's Message Batches line format in a batch file: accepted beside
the OpenAI and plain forms, routed by `--to` or <provider>:params.model, and
every bad line refused with a reason naming the field. The CLI round trip
(real Redis, `promptq batch submit`) is at the end; answering the lines is
tests/workers/test_batch_e2e.py's job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from promptq.tasks.batch import batch_status
from promptq.tasks.batch_input import BatchLine, InvalidLine, iter_batch
from tests.worker_process import ROOT

ANTHROPIC_LINE = {
    "custom_id": "a1",
    "params": {"model": "claude-3-5-haiku-latest", "max_tokens": 256, "system": "Be brief.",
               "messages": [{"role": "user", "content": "Hi there"}],
               "temperature": 0.3, "top_k": 5, "stop_sequences": ["###"]},
}


def jsonl(*objects) -> list:
    return [o if isinstance(o, str) else json.dumps(o) for o in objects]


def parse(lines, **kw):
    return list(iter_batch(lines, **kw))


def with_params(**changes):
    params = {**ANTHROPIC_LINE["params"], **changes}
    return {"custom_id": "a1", "params": {k: v for k, v in params.items() if v is not ...}}


def test_an_anthropic_line_maps_params_to_a_job():
    [line] = parse(jsonl(ANTHROPIC_LINE))
    assert isinstance(line, BatchLine) and line.custom_id == "a1"
    spec = line.spec
    assert spec["targets"] == ["claude:claude-3-5-haiku-latest"]  # its own vendor by default
    assert spec["messages"] == ANTHROPIC_LINE["params"]["messages"] and spec["system_prompt"] == "Be brief."
    assert spec["parameters"] == {"max_tokens": 256, "temperature": 0.3, "top_k": 5, "stop_sequences": ["###"]}
    assert spec["metadata"] == {"input_line": 1}


def test_targets_come_from_to_or_the_default_provider():
    [to] = parse(jsonl(ANTHROPIC_LINE), targets=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    assert to.spec["targets"] == ["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"]
    [other] = parse(jsonl(ANTHROPIC_LINE), default_provider="openrouter")
    assert other.spec["targets"] == ["openrouter:claude-3-5-haiku-latest"]


def test_system_as_text_blocks_and_content_blocks_are_accepted():
    line = with_params(system=[{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
                       messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    [parsed] = parse(jsonl(line))
    assert parsed.spec["system_prompt"] == "One.\n\nTwo."
    assert parsed.spec["messages"][0]["content"] == [{"type": "text", "text": "hi"}]


def test_the_three_formats_mix_in_one_file():
    openai_line = {"custom_id": "o1", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}}
    plain = {"custom_id": "p1", "prompt": "y", "targets": ["mock:m"]}
    lines = parse(jsonl(openai_line, ANTHROPIC_LINE, plain))
    assert [l.spec["targets"] for l in lines] == [["openai:gpt-4o-mini"], ["claude:claude-3-5-haiku-latest"], ["mock:m"]]


@pytest.mark.parametrize("line,reason", [
    ({"custom_id": "a1", "params": "no"}, "params must be an object"),
    (with_params(messages=...), "params.messages is missing"),
    (with_params(max_tokens=...), "params.max_tokens is missing (the Messages API requires it)"),
    (with_params(model=...), "params.model is missing (or give --to)"),
    (with_params(stream=True), "params.stream: a batch line cannot stream"),
    (with_params(messages=[]), "params.messages: must be a non-empty list"),
    (with_params(messages=[{"role": "user", "content": 5}]), "params.messages[0].content: must be a string or a list"),
    (with_params(temperature="hot"), "params: invalid parameter 'temperature'"),
    (with_params(system=[{"type": "image"}]), "params.system[0]: only text blocks are supported"),
    (with_params(system=7), "params.system must be a string or a list of text blocks"),
    ({**ANTHROPIC_LINE, "targets": ["mock:m"]}, "unknown field 'targets' in an Anthropic batch line"),
    ({**ANTHROPIC_LINE, "body": {}}, "unknown field 'params' in an OpenAI batch line"),
])
def test_bad_anthropic_lines_are_refused_naming_the_field(line, reason):
    [parsed] = parse(jsonl(line))
    assert isinstance(parsed, InvalidLine), parsed
    assert parsed.reason.startswith(reason), parsed.reason


def test_promptq_batch_submit_accepts_anthropic_lines(redis_server, client, tmp_path):
    path = tmp_path / "in.jsonl"
    second = {**ANTHROPIC_LINE, "custom_id": "a2"}
    path.write_text("".join(json.dumps(o) + "\n" for o in (ANTHROPIC_LINE, second)))
    env = {**os.environ, "PROMPTQ_REDIS_URL": redis_server.url, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "promptq.workers.cli.main", "batch", "submit", str(path), "-q"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status = batch_status(client, out.stdout.strip())
    assert status["total"] == 2 and status["invalid"] == 0
