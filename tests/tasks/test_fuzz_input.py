"""Fuzzed input on every way in: batch lines, the CLI's --param/--messages/
--metadata, Client.submit, JobStore.create, job ids. Deep nesting, non-JSON
values (NaN, bytes, sets), lone surrogates and non-JSON extra keys are each
refused with a message naming where; nothing escapes as a traceback, and
--skip-invalid skips such a line like any other."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from promptq.tasks.batch_input import BatchLine, InvalidLine, iter_batch
from promptq.tasks.job import JobSpec, JobValidationError
from promptq.tasks.json_check import MAX_DEPTH, JSONValueError

DEEP = "[" * 5000 + "]" * 5000


def deep_dict(depth):
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def spec(**overrides):
    args = {"targets": ["openai:gpt-4o-mini"], "prompt": "hello"}
    args.update(overrides)
    return JobSpec.create(**args)


# --- batch lines ------------------------------------------------------------------

BAD_LINES = {
    "deep nesting": '{"custom_id": "d", "prompt": "p", "parameters": {"x": ' + DEEP + "}}",
    "deep array line": DEEP,
    "NaN": '{"custom_id": "n", "prompt": "p", "parameters": {"temperature": NaN}}',
    "Infinity": '{"custom_id": "i", "prompt": "p", "parameters": {"top_p": -Infinity}}',
    "lone surrogate": '{"custom_id": "s", "prompt": "bad \\ud800 text"}',
    "surrogate key": '{"custom_id": "k", "prompt": "p", "metadata": {"\\udfff": 1}}',
    "not an object": "[1, 2, 3]",
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_each_bad_line_is_one_invalid_line_and_skippable(name):
    good = json.dumps({"custom_id": "ok", "prompt": "fine"})
    items = list(iter_batch([good, BAD_LINES[name], good.replace("ok", "ok2")], targets=["mock:m"]))
    assert [type(i) for i in items] == [BatchLine, InvalidLine, BatchLine], items
    assert items[1].line_no == 2 and items[1].reason
    assert "Traceback" not in items[1].reason and len(items[1].reason) < 300


def test_deep_nesting_is_named_in_the_reason():
    (item,) = iter_batch([BAD_LINES["deep nesting"]], targets=["mock:m"])
    assert isinstance(item, InvalidLine) and f"more than {MAX_DEPTH} levels" in item.reason


@given(st.text(max_size=300))
@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_text_line_is_valid_or_invalid_never_a_crash(text):
    for item in iter_batch([text], targets=["mock:m"]):
        assert isinstance(item, (BatchLine, InvalidLine))
        if isinstance(item, BatchLine):
            json.dumps(item.spec, allow_nan=False).encode("utf-8")


# --- JobSpec / Client.submit -------------------------------------------------------


@pytest.mark.parametrize("field, kwargs", [
    ("parameters", {"parameters": {"stop": {1, 2}}}),
    ("parameters", {"parameters": {"logit_bias": b"\x00"}}),
    ("parameters", {"parameters": {"temperature": float("nan")}}),
    ("parameters", {"parameters": deep_dict(5000)}),
    ("metadata", {"metadata": {"when": float("inf")}}),
    ("metadata", {"metadata": deep_dict(200)}),
    ("messages", {"prompt": None, "messages": [{"role": "user", "content": [deep_dict(3000)]}]}),
    ("messages", {"prompt": None, "messages": [{"role": "user", "content": "hi", "extra": {1, 2}}]}),
    ("prompt", {"prompt": "lone \ud800 surrogate"}),
    ("system_prompt", {"system_prompt": "\udc00"}),
    ("id", {"job_id": "job-\ud800"}),
    ("custom_id", {"custom_id": "c\udfff"}),
])
def test_submit_refuses_non_json_values_with_the_field(field, kwargs):
    with pytest.raises(JobValidationError) as info:
        spec(**kwargs)
    assert info.value.field == field, str(info.value)


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary(max_size=4))
json_like = st.recursive(
    json_leaves,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4),
                               st.frozensets(st.integers(), max_size=2)),
    max_leaves=20,
)


@given(json_like)
@hsettings(max_examples=300)
def test_any_parameters_are_accepted_as_json_or_refused_by_name(value):
    try:
        job = spec(parameters={"x": value}, metadata={"m": value})
    except JobValidationError as exc:
        # Refused by name: the field, or a path inside it (a key-named entry
        # such as parameters.x.token is refused where it sits).
        assert re.split(r"[.\[]", exc.field)[0] in ("parameters", "metadata"), exc.field
        return
    json.dumps(job.to_dict(), allow_nan=False).encode("utf-8")  # what was accepted can be stored


# --- JobStore.create, Client.submit end to end ----------------------------------------


def test_store_create_refuses_a_spec_that_is_not_json(store, redis_client):
    bad = {"id": "j1", "targets": ["mock:m"], "prompt": "p", "messages": None, "extra": {1, 2}}
    with pytest.raises(JSONValueError, match="job"):
        store.create(bad, "t")
    assert redis_client.keys("*") == []  # nothing half written


def test_client_submit_refuses_deep_nesting_and_writes_nothing(client, redis_client):
    with pytest.raises(JobValidationError, match="levels deep"):
        client.submit("p", to=["mock:m"], parameters={"x": deep_dict(10_000)})
    with pytest.raises(JobValidationError, match="surrogate"):
        client.submit("p", to=["mock:m"], job_id="id-\udc80")
    assert redis_client.keys("promptq:job:*") == []


# --- the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, where", [
    (["--param", "x=" + DEEP], "--param"),
    (["--metadata", '{"a": ' + DEEP + "}"], "--metadata"),
    (["--metadata", '{"a": NaN}'], "--metadata"),
    (["--messages", '[{"role": "user", "content": "\\ud800"}]'], "--messages"),
])
def test_cli_submit_refuses_with_a_message_not_a_traceback(args, where, settings, redis_client):
    from click.testing import CliRunner

    from promptq.workers.cli.main import cli

    prompt = [] if "--messages" in args else ["hello"]
    out = CliRunner().invoke(cli, ["--redis-url", settings.redis_url, "submit", *prompt, "--to", "mock:m", *args])
    assert out.exit_code == 2, (out.exit_code, out.stderr, out.exception)
    assert "Traceback" not in out.stderr and (where in out.stderr or "messages" in out.stderr)
    assert redis_client.keys("promptq:job:*") == []


def test_skip_invalid_submits_the_rest_of_a_fuzzed_file(client, redis_client):
    from promptq.tasks.batch import BatchInputError, submit_batch
    from promptq.tasks.lanes import queue_lists

    def queued():  # a batch's jobs go to its lane's list
        return sum(redis_client.llen(key) for key in queue_lists("promptq.mock").values())

    lines = [json.dumps({"custom_id": f"ok{i}", "prompt": "fine"}) for i in range(2)]
    lines[1:1] = BAD_LINES.values()
    with pytest.raises(BatchInputError) as info:
        submit_batch(client, lines, targets=["mock:m"])
    assert len(info.value.invalid) == len(BAD_LINES)
    assert queued() == 0  # nothing enqueued without --skip-invalid
    done = submit_batch(client, lines, targets=["mock:m"], skip_invalid=True)
    assert (done.submitted, len(done.invalid)) == (2, len(BAD_LINES))
    assert queued() == 2
