"""Fixtures for the provider tests: the fake vendor servers and llama-cli, and
a clock the tests move by hand. `redis_server` and `redis_client` (a clean
client per test) come from tests/conftest.py."""

from __future__ import annotations

import pytest

from promptq.providers.mock_provider import reset_fault_counters
from tests.fakes.fixtures import *  # noqa: F401,F403 - registers fake_openai, fake_anthropic, ...


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(autouse=True)
def _fresh_mock_counters():
    # The mock's per-prompt call counts live in this process; tests must not share them.
    reset_fault_counters()
    yield
    reset_fault_counters()
