"""Parameter normalization: one vocabulary in, each vendor's names out."""

from __future__ import annotations

import pytest

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.params import (
    anthropic_params,
    llama_cli_args,
    ollama_params,
    openai_chat_params,
    validate,
)

COMMON = {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 64, "stop": "END", "seed": 7}


def test_openai_maps_max_tokens_and_drops_top_k():
    body = openai_chat_params(COMMON, "openai", max_tokens_field="max_completion_tokens", supports_top_k=False)
    assert body == {"temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 64, "stop": ["END"], "seed": 7}


def test_openai_compatible_servers_keep_max_tokens_and_top_k():
    body = openai_chat_params(COMMON, "openrouter")
    assert body["max_tokens"] == 64 and body["top_k"] == 40


def test_anthropic_names_and_required_max_tokens():
    body = anthropic_params(COMMON, "claude", default_max_tokens=1024)
    assert body == {"max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"]}
    assert anthropic_params(None, "claude", default_max_tokens=1024) == {"max_tokens": 1024}


def test_ollama_puts_generation_settings_in_options():
    top, options = ollama_params({**COMMON, "num_ctx": 8192, "keep_alive": "5m", "format": "json"}, "ollama")
    assert top == {"keep_alive": "5m", "format": "json"}
    assert options == {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 64,
                       "stop": ["END"], "seed": 7, "num_ctx": 8192}


def test_llama_cli_flags_and_local_stop_strings():
    args, stops = llama_cli_args({**COMMON, "n_gpu_layers": 99, "mlock": True}, "llamacpp", default_max_tokens=512)
    assert args == ["-n", "64", "--temp", "0.2", "--top-p", "0.9", "--top-k", "40", "--seed", "7",
                    "--n-gpu-layers", "99", "--mlock"]
    assert stops == ["END"]


def test_aliases_fold_into_common_names():
    p = validate({"max_completion_tokens": 10, "stop_sequences": ["a", "b"], "num_ctx": 1})
    assert p.common == {"max_tokens": 10, "stop": ["a", "b"]} and p.extras == {"num_ctx": 1}


def test_vendor_extras_pass_through():
    body = openai_chat_params({"presence_penalty": 0.5, "response_format": {"type": "json_object"}}, "openai")
    assert body == {"presence_penalty": 0.5, "response_format": {"type": "json_object"}}


@pytest.mark.parametrize(
    "params, named",
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": float("nan")}, "top_p"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"num_predict": "10"}, "num_predict"),
        ({"stop": [1, 2]}, "stop"),
        ({"seed": "x"}, "seed"),
        ({"logit_bias": object()}, "logit_bias"),
        ({"stream": True}, "stream"),
        ({"model": "other"}, "model"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
    ],
)
def test_bad_parameters_are_invalid_request_naming_the_parameter(params, named):
    with pytest.raises(ProviderError) as info:
        openai_chat_params(params, "openai")
    err = info.value
    assert err.category is ErrorCategory.INVALID_REQUEST and err.retryable is False
    assert repr(named) in str(err)


def test_parameters_must_be_a_mapping():
    with pytest.raises(ProviderError, match="parameters"):
        validate(["temperature"])


def test_none_values_mean_unset_and_integral_floats_are_accepted():
    assert validate({"temperature": None, "max_tokens": 256.0}).common == {"max_tokens": 256}
