"""The top-level `promptq` package: its names, its cheap import, one class per name."""

from __future__ import annotations

import subprocess
import sys

import pytest

import promptq

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", promptq.__all__)
def test_every_public_name_resolves(name):
    assert getattr(promptq, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        promptq.no_such_thing  # noqa: B018


def test_import_promptq_is_cheap():
    probe = "import sys, promptq; print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'redis')))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_seed_import_path_is_the_same_module():
    # The seed tests import `providers.*`; that must be promptq's module, not a twin.
    import providers.error_handling as seed
    from promptq.providers import error_handling

    assert seed is error_handling
    assert seed.ProviderError is promptq.ProviderError


def test_stray_top_level_imports_are_refused():
    with pytest.raises(ImportError, match="import promptq.tasks"):
        __import__("tasks.client")
