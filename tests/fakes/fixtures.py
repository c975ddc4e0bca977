"""Pytest fixtures for the fake provider servers.

Load with ``pytest_plugins = ["tests.fakes.fixtures"]`` in tests/conftest.py.
Each fixture is function-scoped: a fresh server per test, started before and
stopped after it, so no fault or recorded request leaks between tests.
The fake ``llama-cli`` script's path is ``fake_llama_cli`` (a list of argv
words: ``[sys.executable, ".../llama_cli.py"]``).
"""

from __future__ import annotations

import sys
from typing import Iterator

import pytest

from . import LLAMA_CLI
from .anthropic_server import FakeAnthropic
from .llamacpp_server import FakeLlamaServer
from .ollama_server import FakeOllama
from .openai_server import FakeOpenAI
from .openrouter_server import FakeOpenRouter


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def fake_openrouter() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter() as server:
        yield server


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def fake_llamacpp() -> Iterator[FakeLlamaServer]:
    with FakeLlamaServer() as server:
        yield server


@pytest.fixture
def fake_llama_cli() -> list[str]:
    return [sys.executable, LLAMA_CLI]
