"""Generation parameters: one vocabulary in, each vendor's names out.

Callers (jobs, the seed's `execute(..., parameters=...)`) speak a small common
vocabulary; each vendor spells it differently::

    common        OpenAI                 llama-server /   Anthropic        Ollama options   llama-cli
                                         OpenRouter
    temperature   temperature            temperature      temperature      temperature      --temp
    top_p         top_p                  top_p            top_p            top_p            --top-p
    top_k         (unsupported)          top_k            top_k            top_k            --top-k
    max_tokens    max_completion_tokens  max_tokens       max_tokens       num_predict      -n
    stop          stop                   stop             stop_sequences   stop             (cut locally)
    seed          seed                   seed             (unsupported)    seed             --seed

A common parameter the vendor lacks is dropped (logged at debug level): a
fallback chain sends the same parameters to every provider, and Anthropic
refusing `seed` with a 400 would turn a harmless hint into a failover. Any
other key is a vendor extra and passes through untouched, so callers keep
access to everything a vendor offers. Values of the wrong type are refused
with INVALID_REQUEST naming the parameter, before any request is sent.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .error_handling import ErrorCategory, ProviderError

logger = logging.getLogger(__name__)

COMMON = ("temperature", "top_p", "top_k", "max_tokens", "stop", "seed")

# Other names callers use for the common parameters (the vendors' own, mostly).
ALIASES = {
    "max_completion_tokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "max_new_tokens": "max_tokens",
    "num_predict": "max_tokens",
    "n_predict": "max_tokens",
    "stop_sequences": "stop",
    "temp": "temperature",
}

# Keys promptq itself sets from the job; a parameter must not override them.
RESERVED = frozenset({"model", "messages", "prompt", "system", "stream", "stream_options"})


@dataclass
class Params:
    """Validated parameters: the common ones by their common name, plus extras."""

    common: Dict[str, Any] = field(default_factory=dict)
    extras: Dict[str, Any] = field(default_factory=dict)


def _invalid(name: str, why: str, provider: Optional[str]) -> ProviderError:
    return ProviderError(
        f"invalid parameter {name!r}: {why}",
        category=ErrorCategory.INVALID_REQUEST,
        provider=provider,
        retryable=False,
    )


def _number(name: str, value: Any, provider: Optional[str]) -> float:
    # bool is an int subclass; True as a temperature is a caller bug.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _invalid(name, f"expected a number, got {type(value).__name__}", provider)
    if value < 0:
        raise _invalid(name, "must not be negative", provider)
    return value


def _integer(name: str, value: Any, provider: Optional[str], *, minimum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON round trips may turn 256 into 256.0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, f"expected an integer, got {type(value).__name__}", provider)
    if value < minimum:
        raise _invalid(name, f"must be at least {minimum}", provider)
    return value


def _stop(name: str, value: Any, provider: Optional[str]) -> List[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return [s for s in value if s]
    raise _invalid(name, "expected a string or a list of strings", provider)


def _json_safe(name: str, value: Any, provider: Optional[str]) -> Any:
    """Extras go into a JSON body, so refuse what JSON cannot carry."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(name, "must be a finite number", provider)
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(name, v, provider) for v in value]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise _invalid(name, "object keys must be strings", provider)
        return {k: _json_safe(name, v, provider) for k, v in value.items()}
    raise _invalid(name, f"type {type(value).__name__} cannot be sent", provider)


def validate(parameters: Optional[Mapping[str, Any]], provider: Optional[str] = None) -> Params:
    """Check types and fold aliases into the common names."""
    out = Params()
    if parameters is None:
        return out
    if not isinstance(parameters, Mapping):
        raise _invalid("parameters", f"expected an object, got {type(parameters).__name__}", provider)
    for raw_name, value in parameters.items():
        if not isinstance(raw_name, str):
            raise _invalid(str(raw_name), "parameter names must be strings", provider)
        if raw_name in RESERVED:
            raise _invalid(raw_name, "it is set by promptq from the job, not by parameters", provider)
        if value is None:
            continue  # "not set", as JSON producers often send it
        name = ALIASES.get(raw_name, raw_name)
        if name in out.common:
            raise _invalid(raw_name, f"given twice (as {name!r} too)", provider)
        if name in ("temperature", "top_p"):
            out.common[name] = _number(raw_name, value, provider)
        elif name == "max_tokens":
            out.common[name] = _integer(raw_name, value, provider, minimum=1)
        elif name == "top_k":
            out.common[name] = _integer(raw_name, value, provider, minimum=0)
        elif name == "seed":
            out.common[name] = _integer(raw_name, value, provider, minimum=-(2**63))
        elif name == "stop":
            out.common[name] = _stop(raw_name, value, provider)
        else:
            out.extras[raw_name] = _json_safe(raw_name, value, provider)
    return out


def _dropped(provider: Optional[str], names: List[str]) -> None:
    if names:
        logger.debug("%s does not support %s; not sent", provider, ", ".join(names))


def openai_chat_params(
    parameters: Optional[Mapping[str, Any]],
    provider: Optional[str],
    *,
    max_tokens_field: str = "max_tokens",
    supports_top_k: bool = True,
) -> Dict[str, Any]:
    """Body fields for an OpenAI-style chat completion.

    OpenAI itself wants `max_completion_tokens` (its `max_tokens` is
    deprecated and refused by reasoning models); OpenRouter and llama-server
    read `max_tokens`.
    """
    p = validate(parameters, provider)
    body: Dict[str, Any] = {}
    dropped = []
    for name, value in p.common.items():
        if name == "max_tokens":
            body[max_tokens_field] = value
        elif name == "top_k" and not supports_top_k:
            dropped.append(name)
        elif name == "stop":
            if value:
                body["stop"] = value
        else:
            body[name] = value
    _dropped(provider, dropped)
    body.update(p.extras)
    return body


def anthropic_params(
    parameters: Optional[Mapping[str, Any]], provider: Optional[str], *, default_max_tokens: int
) -> Dict[str, Any]:
    """Body fields for Anthropic Messages; `max_tokens` is required there."""
    p = validate(parameters, provider)
    body: Dict[str, Any] = {"max_tokens": p.common.get("max_tokens", default_max_tokens)}
    for name in ("temperature", "top_p", "top_k"):
        if name in p.common:
            body[name] = p.common[name]
    if p.common.get("stop"):
        body["stop_sequences"] = p.common["stop"]
    _dropped(provider, ["seed"] if "seed" in p.common else [])
    body.update(p.extras)
    return body


# Ollama /api/chat fields that live beside `options`, not inside it.
OLLAMA_TOP_LEVEL = frozenset({"format", "keep_alive", "think", "tools", "raw", "template"})


def ollama_params(
    parameters: Optional[Mapping[str, Any]], provider: Optional[str]
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(top-level body fields, `options`) for Ollama's /api/chat.

    Unknown extras are model options (num_ctx, repeat_penalty, mirostat...),
    which is where Ollama keeps nearly every knob.
    """
    p = validate(parameters, provider)
    options: Dict[str, Any] = {}
    top: Dict[str, Any] = {}
    for name, value in p.common.items():
        if name == "max_tokens":
            options["num_predict"] = value
        elif name == "stop":
            if value:
                options["stop"] = value
        else:
            options[name] = value
    for name, value in p.extras.items():
        if name == "options":
            if not isinstance(value, Mapping):
                raise _invalid(name, "expected an object", provider)
            options.update(value)
        elif name in OLLAMA_TOP_LEVEL:
            top[name] = value
        else:
            options[name] = value
    return top, options


def llama_cli_args(
    parameters: Optional[Mapping[str, Any]], provider: Optional[str], *, default_max_tokens: int
) -> Tuple[List[str], List[str]]:
    """(command-line flags, stop strings) for llama-cli.

    Stop strings are returned for the caller: it passes each as `-r` (llama.cpp
    then stops there) and still cuts the output at the first one. Extras become `--name value`
    flags (underscores as dashes; `True` as a bare flag), the way llama-cli
    spells its options.
    """
    p = validate(parameters, provider)
    c = p.common
    args = ["-n", str(c.get("max_tokens", default_max_tokens))]
    flags = {"temperature": "--temp", "top_p": "--top-p", "top_k": "--top-k", "seed": "--seed"}
    for name, flag in flags.items():
        if name in c:
            args += [flag, str(c[name])]
    for name, value in p.extras.items():
        if isinstance(value, (dict, list)):
            raise _invalid(name, "llama-cli flags take a single value", provider)
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False:
            args += [flag, str(value)]
    return args, list(c.get("stop", []))
