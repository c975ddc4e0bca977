"""JobSpec / Target validation: every refusal names its field; JSON round trip."""

from __future__ import annotations

import json

import pytest

from promptq.tasks.job import MAX_METADATA_BYTES, JobSpec, JobValidationError, Target


def make(**overrides):
    args = {"targets": ["openai:gpt-4o-mini"], "prompt": "hello"}
    args.update(overrides)
    return JobSpec.create(**args)


def refused(field, **overrides) -> JobValidationError:
    with pytest.raises(JobValidationError) as info:
        make(**overrides)
    assert info.value.field == field, f"expected field {field!r}, got {info.value.field!r}: {info.value}"
    assert str(info.value).startswith(f"{field}: ")
    return info.value


# --- targets -------------------------------------------------------------------


def test_empty_targets_refused():
    refused("targets", targets=[])


def test_targets_as_a_single_string_refused():
    refused("targets", targets="openai:gpt-4o")


@pytest.mark.parametrize("bad", ["gpt-4o", "openai", "", 42, None])
def test_target_without_provider_colon_model_refused(bad):
    err = refused("targets[0]", targets=[bad])
    assert "provider:model" in str(err)


def test_target_with_empty_model_refused():
    err = refused("targets[1]", targets=["openai:gpt-4o", "claude:  "])
    assert "names no model" in str(err)


def test_unknown_provider_refused_and_known_ones_listed():
    err = refused("targets[0]", targets=["gemini:pro"])
    assert "'gemini'" in str(err) and "openai" in str(err) and "mock" in str(err)


def test_model_tag_with_colons_keeps_everything_after_first_colon():
    assert Target.parse("ollama:llama3.2:1b") == Target("ollama", "llama3.2:1b")
    assert Target.parse("ollama:hf.co/x/y:Q4_K_M") == Target("ollama", "hf.co/x/y:Q4_K_M")
    assert str(Target.parse("ollama:llama3.2:1b")) == "ollama:llama3.2:1b"


@pytest.mark.parametrize(
    "text, provider",
    [("anthropic:claude-3-5-haiku-latest", "claude"), ("Anthropic:x", "claude"),
     ("llama.cpp:m", "llamacpp"), ("llama_cpp:m", "llamacpp"), (" OpenAI :gpt-4o", "openai")],
)
def test_provider_aliases_and_case_are_normalised(text, provider):
    assert Target.parse(text).provider == provider


def test_target_objects_are_accepted_as_is():
    spec = make(targets=[Target("mock", "m"), "claude:c"])
    assert spec.targets == [Target("mock", "m"), Target("claude", "c")]


# --- prompt / messages ------------------------------------------------------------


def test_prompt_and_messages_together_refused():
    refused("prompt", messages=[{"role": "user", "content": "x"}])


def test_neither_prompt_nor_messages_refused():
    refused("prompt", prompt=None)


def test_blank_prompt_refused():
    refused("prompt", prompt="   \n")


def test_prompt_over_limit_refused():
    err = refused("prompt", prompt="x" * 11, max_prompt_chars=10)
    assert "11 chars" in str(err)
    assert make(prompt="x" * 10, max_prompt_chars=10).prompt == "x" * 10


@pytest.mark.parametrize(
    "messages, field",
    [
        ([], "messages"),
        ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], "messages[1].role"),
        ([{"content": "b"}], "messages[0].role"),
        ([{"role": "user", "content": 7}], "messages[0].content"),
        ([{"role": "system", "content": "only rules"}], "messages"),
    ],
)
def test_bad_messages_refused(messages, field):
    refused(field, prompt=None, messages=messages)


@pytest.mark.parametrize("messages, field", [("hi", "messages"), (["hi"], "messages[0]"), ([1], "messages[0]")])
def test_non_object_messages_refused_by_from_dict(messages, field):
    with pytest.raises(JobValidationError) as info:
        JobSpec.from_dict({"id": "j", "targets": ["mock:m"], "messages": messages})
    assert info.value.field == field


@pytest.mark.parametrize(
    "overrides, field",
    [({"prompt": None, "messages": "hi"}, "messages"), ({"prompt": None, "messages": [1]}, "messages[0]"),
     ({"parameters": ["temperature"]}, "parameters"), ({"metadata": "team=x"}, "metadata")],
)
def test_create_refuses_non_object_shapes_naming_the_field(overrides, field):
    refused(field, **overrides)


def test_messages_total_size_limit():
    msgs = [{"role": "user", "content": "x" * 6}, {"role": "assistant", "content": "y" * 6}]
    err = refused("messages", prompt=None, messages=msgs, max_prompt_chars=10)
    assert "12 chars" in str(err)


def test_valid_messages_with_every_role_accepted():
    msgs = [{"role": r, "content": "c"} for r in ("system", "developer", "user", "assistant", "tool")]
    msgs.append({"role": "user", "content": [{"type": "text", "text": "parts"}]})
    assert make(prompt=None, messages=msgs).messages == msgs


def test_system_prompt_must_be_a_string():
    refused("system_prompt", system_prompt=["be brief"])


# --- parameters / metadata --------------------------------------------------------


def test_non_json_parameters_refused():
    err = refused("parameters", parameters={"temperature": 0.2, "stop": {1, 2}})
    assert "JSON" in str(err)


def test_non_json_metadata_refused():
    refused("metadata", metadata={"when": object()})


def test_parameters_must_be_an_object():
    with pytest.raises(JobValidationError) as info:
        JobSpec.from_dict({"id": "j", "targets": ["mock:m"], "prompt": "p", "parameters": ["t", 1]})
    assert info.value.field == "parameters"


@pytest.mark.parametrize("key", ["api_key", "API_KEY", "apikey", "Authorization", "x-api-key", "X-Api-Key", "token", "secret"])
@pytest.mark.parametrize("where", ["parameters", "metadata"])
def test_secrets_refused_in_parameters_and_metadata(where, key):
    err = refused(f"{where}.{key}", **{where: {key: "sk-live-123"}})
    assert "worker configuration" in str(err)


def test_ordinary_keys_that_merely_contain_secret_words_are_fine():
    spec = make(parameters={"max_tokens": 50, "top_p": 0.9}, metadata={"token_budget": 3, "secretary": "x"})
    assert spec.parameters["max_tokens"] == 50 and spec.metadata["secretary"] == "x"


def test_nested_secret_in_parameters_refused():
    refused("parameters.extra_headers.Authorization",
            parameters={"extra_headers": {"Authorization": "Bearer sk-live-123"}})


def test_metadata_size_cap():
    # {"k": "<n chars>"} encodes to n + 9 bytes.
    at_limit = {"k": "x" * (MAX_METADATA_BYTES - 9)}
    assert len(json.dumps(at_limit)) == MAX_METADATA_BYTES
    assert make(metadata=at_limit).metadata == at_limit
    err = refused("metadata", metadata={"k": "x" * (MAX_METADATA_BYTES - 8)})
    assert str(MAX_METADATA_BYTES) in str(err)


# --- scalars ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 101, 2.5, "3", True])
def test_max_retries_out_of_bounds_refused(value):
    refused("max_retries", max_retries=value)


@pytest.mark.parametrize("value", [0, 100, None])
def test_max_retries_bounds_accepted(value):
    assert make(max_retries=value).max_retries == value


@pytest.mark.parametrize("job_id", ["has space", "tab\there", "x" * 201])
def test_bad_id_refused(job_id):
    refused("id", job_id=job_id)


def test_id_generated_when_not_given():
    a, b = make(), make()
    assert len(a.id) == 32 and a.id != b.id


def test_stream_must_be_bool():
    refused("stream", stream="yes")


@pytest.mark.parametrize("name", ["custom_id", "batch_id"])
def test_custom_and_batch_ids_must_be_short_non_empty_strings(name):
    refused(name, **{name: ""})
    refused(name, **{name: "x" * 513})
    assert getattr(make(**{name: "x" * 512}), name) == "x" * 512


# --- round trip ---------------------------------------------------------------------


def test_round_trip_through_json():
    spec = make(
        targets=["ollama:llama3.2:1b", "anthropic:claude-3-5-haiku-latest"],
        prompt=None,
        messages=[{"role": "user", "content": "hi"}],
        system_prompt="be brief",
        parameters={"temperature": 0.1},
        stream=True,
        custom_id="line-7",
        batch_id="b1",
        metadata={"team": "search"},
        max_retries=2,
        job_id="job-1",
    )
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["targets"] == ["ollama:llama3.2:1b", "claude:claude-3-5-haiku-latest"]
    again = JobSpec.from_dict(data)
    assert again == spec
    assert again.to_dict() == spec.to_dict()


def test_from_dict_rejects_unknown_fields():
    data = make().to_dict()
    data["api_key"] = "sk-1"
    data["zzz"] = 1
    with pytest.raises(JobValidationError) as info:
        JobSpec.from_dict(data)
    assert info.value.field == "api_key"
    assert "not a job field" in str(info.value)


def test_from_dict_revalidates():
    data = make().to_dict()
    data["targets"] = ["nobody:x"]
    with pytest.raises(JobValidationError) as info:
        JobSpec.from_dict(data)
    assert info.value.field == "targets[0]"


def test_from_dict_refuses_non_objects():
    with pytest.raises(JobValidationError) as info:
        JobSpec.from_dict(["id", "targets"])
    assert info.value.field == "job"


# --- the checks a batch line gets, for every job (issue 9) --------------------------


def test_parameter_types_are_checked_at_submit_as_for_a_batch_line():
    err = refused("parameters", parameters={"temperature": "hot"})
    assert "invalid parameter 'temperature': expected a number, got str" in str(err)
    refused("parameters", parameters={"max_tokens": 0})
    assert make(parameters={"temperature": 0.2, "max_tokens": 16}).parameters["max_tokens"] == 16


def test_text_that_was_not_utf8_is_refused():
    # What Python makes of argv bytes that are not UTF-8 (surrogateescape).
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert "UTF-8" in str(refused("prompt", prompt=bad))
    refused("system_prompt", system_prompt=bad)
    refused("metadata", metadata={"note": bad})
    refused("messages", prompt=None, messages=[{"role": "user", "content": bad}])
