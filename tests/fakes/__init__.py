"""Fake LLM provider HTTP servers for promptq's tests.

Each fake is a real HTTP/1.1 server on 127.0.0.1 speaking one vendor's wire
format, with scriptable faults (see ``faults.FAULT_NAMES``)::

    with FakeOpenAI() as server:
        server.push("rate_limit:2")          # next request: 429, Retry-After: 2
        client = make_client(base_url=server.base_url, api_key="sk-test")

Per-request directives in the last user message (``[[fault:NAME:ARG]]``,
``[[reply:TEXT]]``, ``[[chunks:N]]``) let concurrent jobs pick their own fate.
Pytest fixtures live in ``tests.fakes.fixtures``.
"""

import os

from .anthropic_server import FakeAnthropic
from .base import Exchange, FakeServer, RecordedRequest, Reply
from .directives import Directives, ReplyPlan, parse_directives, plan_reply
from .faults import FAULT_NAMES, HTTP_ERROR_FAULTS, Fault, parse_fault
from .llamacpp_server import FakeLlamaServer
from .ollama_server import FakeOllama
from .openai_server import FakeOpenAI
from .openrouter_server import FakeOpenRouter
from .ratelimited_server import RateLimitedOpenAI

LLAMA_CLI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_cli.py")  # the fake llama-cli

__all__ = [
    "FAULT_NAMES", "HTTP_ERROR_FAULTS", "LLAMA_CLI",
    "Directives", "Exchange", "Fault", "FakeAnthropic", "FakeLlamaServer", "FakeOllama",
    "FakeOpenAI", "FakeOpenRouter", "FakeServer", "RateLimitedOpenAI", "RecordedRequest", "Reply", "ReplyPlan",
    "parse_directives", "parse_fault", "plan_reply",
]
