"""deploy/.env.example documents every setting and variable, and cannot drift.

Its PROMPTQ_* part is generated from `tasks.settings.Settings` by
deploy/gen_env_example.py; these tests fail when the committed file differs
from a fresh render (run the script), and independently check coverage in
case the generator itself skips something.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from typing import Dict

import pytest

from promptq.tasks.settings import Settings

from .helpers import ENV_EXAMPLE, REPO, SERVER_ENV, compose, iter_strings

# The provider variables the CLI/provider layer reads (from the project brief).
PROVIDER_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENROUTER_API_KEY",
    "OPENROUTER_BASE_URL",
    "OLLAMA_HOST",
    "LLAMACPP_BASE_URL",
    "LLAMACPP_API_KEY",
    "LLAMACPP_BINARY",
)
COMPOSE_REQUIRED = ("REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "PROMPTQ_API_KEYS")


@pytest.fixture(scope="module")
def text() -> str:
    return ENV_EXAMPLE.read_text(encoding="utf-8")


def _assignments(text: str, commented: bool) -> Dict[str, str]:
    """NAME=value lines; `commented` picks the `# NAME=value` (default) ones."""
    prefix = r"#\s*" if commented else ""
    return {m.group(1): m.group(2) for m in re.finditer(rf"(?m)^{prefix}([A-Z][A-Z0-9_]*)=(.*)$", text)}


def _generator():
    spec = importlib.util.spec_from_file_location("gen_env_example", REPO / "deploy" / "gen_env_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_file_matches_the_generator(text):
    assert text == _generator().render(), "deploy/.env.example is stale: run python deploy/gen_env_example.py"


def test_every_settings_field_is_documented_with_its_default(text):
    defaults = _assignments(text, commented=True)
    for f in dataclasses.fields(Settings):
        env = "PROMPTQ_" + f.name.upper()
        if env in defaults:
            assert defaults[env] == str(f.default), f"{env} documents {defaults[env]!r}, the default is {f.default!r}"
            # A one-line comment right above it.
            assert re.search(rf"(?m)^# [^\n]*\S[^\n]*\n# {env}=", text), f"{env} has no comment"
        else:
            # Only a field the environment cannot set (a table) may be absent; it is still named.
            assert f.default is dataclasses.MISSING or not isinstance(f.default, (str, int, float, bool)), f"{env} is missing"
            assert f.name in text, f"setting {f.name} is not mentioned"


def test_documented_defaults_load_back_to_the_defaults(text):
    # Uncommenting every line must change nothing: each documented value
    # parses, through Settings.load's own coercion, to the built-in default.
    environ = {k: v for k, v in _assignments(text, commented=True).items() if k.startswith("PROMPTQ_")}
    environ.pop("PROMPTQ_CONFIG", None)
    loaded = Settings.load(environ=environ)
    assert loaded == Settings(), "a documented default does not parse back to the real default"


def test_no_stale_promptq_variables(text):
    known = {"PROMPTQ_" + f.name.upper() for f in dataclasses.fields(Settings)} | {"PROMPTQ_CONFIG"}
    known |= set(SERVER_ENV)  # read by `promptq serve`, not Settings fields
    mentioned = set(re.findall(r"\bPROMPTQ_[A-Z0-9_]+", text))
    # Rate limits per provider are read by name pattern (tasks.limits.env_limits).
    from promptq.tasks.limits import env_limits

    mentioned = {m for m in mentioned if not env_limits({m: "1"})}
    assert not mentioned - known, f".env.example documents settings that do not exist: {sorted(mentioned - known)}"


def test_provider_and_compose_variables_are_listed_and_empty(text):
    live = _assignments(text, commented=False)
    for name in PROVIDER_VARS + COMPOSE_REQUIRED:
        assert name in live, f"{name} is not in deploy/.env.example"
    # An example file is committed: every value in it must be blank.
    filled = {k: v for k, v in live.items() if v.strip()}
    assert not filled, f"deploy/.env.example must not carry values: {sorted(filled)}"


def test_every_variable_compose_interpolates_is_documented(text):
    # ${VAR...} references in the parsed file (comments excluded), but not
    # $${...}, which the container's shell expands.
    used = set()
    for _, value in iter_strings(compose()):
        used |= set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", value))
    assert used, "compose.yaml interpolates nothing?"
    documented = set(_assignments(text, commented=False)) | set(_assignments(text, commented=True))
    missing = used - documented
    assert not missing, f"compose.yaml uses {sorted(missing)}, not documented in deploy/.env.example"
