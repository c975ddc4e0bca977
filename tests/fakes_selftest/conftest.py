"""Fixtures for the fakes' own tests.

The vendor fixtures from ``tests.fakes.fixtures`` are imported here so these
tests run before (and independently of) the project-wide conftest.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.fakes.fixtures import (  # noqa: F401 - re-exported as fixtures
    fake_anthropic, fake_llama_cli, fake_llamacpp, fake_ollama, fake_openai, fake_openrouter,
)
from tests.fakes_selftest.vendors import VENDORS, Vendor
from tests.fakes import FakeServer


@pytest.fixture(params=sorted(VENDORS))
def vendor(request) -> Vendor:
    return VENDORS[request.param]


@pytest.fixture
def server(vendor: Vendor) -> Iterator[FakeServer]:
    with vendor.factory() as fake:
        yield fake
