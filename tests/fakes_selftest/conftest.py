"""Fixtures for the fakes' own tests.

The vendor fixtures (``fake_openai`` ...) come from the ``tests.fakes.fixtures``
plugin that tests/conftest.py loads; these add a parametrised ``vendor`` so
one test runs against all five servers.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.fakes import FakeServer
from tests.fakes_selftest.vendors import VENDORS, Vendor


@pytest.fixture(params=sorted(VENDORS))
def vendor(request) -> Vendor:
    return VENDORS[request.param]


@pytest.fixture
def server(vendor: Vendor) -> Iterator[FakeServer]:
    with vendor.factory() as fake:
        yield fake
