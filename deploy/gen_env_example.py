#!/usr/bin/env python3
"""Writes deploy/.env.example; its PROMPTQ_* part is generated from tasks/settings.py.

    python deploy/gen_env_example.py           # rewrite deploy/.env.example
    python deploy/gen_env_example.py --check   # exit 1 if it is out of date

Why generated: every field of `tasks.settings.Settings` is a `PROMPTQ_<FIELD>`
variable, and a hand-kept list drifts the day someone adds a field. Here the
names, the defaults and the comments (the `#:` lines above each field) all
come from the dataclass and its source, and tests/deploy/test_env_example.py
fails when the committed file differs from what this script renders.

The PROMPTQ_* lines are written commented out, holding the built-in default:
a copied `.env` then pins only what its owner changed, and picks up new
defaults when the code changes. The variables compose.yaml requires
(REDIS_PASSWORD, FLOWER_BASIC_AUTH, PROMPTQ_API_KEYS) and the provider variables are left
uncommented and empty, to be filled in (providers treat empty as unset).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "deploy" / ".env.example"

# (name, comment) — the variables compose.yaml interpolates with `${VAR:?}`.
COMPOSE_REQUIRED: List[Tuple[str, str]] = [
    (
        "REDIS_PASSWORD",
        "Required. Password of the compose Redis; it is embedded in redis:// URLs, "
        "so keep it URL-safe: openssl rand -hex 32",
    ),
    (
        "FLOWER_BASIC_AUTH",
        "Required. Flower's basic auth as user:password (several: comma-separated; "
        "no commas inside a password). Flower is published on 127.0.0.1:5555 only.",
    ),
    (
        "PROMPTQ_API_KEYS",
        "Required. Keys the clients of `promptq serve` send (Authorization: Bearer KEY), comma-separated, "
        "16+ characters each: openssl rand -hex 32. Not a provider's key. serve is published on "
        "127.0.0.1:8000 only.",
    ),
]

# (name, comment) — each provider reads its own ecosystem's variables; empty = unset.
PROVIDER_VARS: List[Tuple[str, str]] = [
    ("OPENAI_API_KEY", "OpenAI API key; needed by workers consuming promptq.openai."),
    ("OPENAI_BASE_URL", "Default https://api.openai.com/v1 (any OpenAI-compatible endpoint)."),
    ("ANTHROPIC_API_KEY", "Anthropic API key; needed by workers consuming promptq.claude."),
    ("ANTHROPIC_BASE_URL", "Default https://api.anthropic.com (the provider adds /v1/messages)."),
    ("OPENROUTER_API_KEY", "OpenRouter API key; needed by workers consuming promptq.openrouter."),
    ("OPENROUTER_BASE_URL", "Default https://openrouter.ai/api/v1."),
    (
        "OLLAMA_HOST",
        "Default http://127.0.0.1:11434; compose's worker-local defaults to "
        "http://host.docker.internal:11434 (the host). With `--profile local` set http://ollama:11434.",
    ),
    (
        "LLAMACPP_BASE_URL",
        "llama-server URL incl. /v1. Default http://127.0.0.1:8080/v1; compose's worker-local "
        "defaults to http://host.docker.internal:8080/v1.",
    ),
    ("LLAMACPP_API_KEY", "Optional; llama-server's --api-key."),
    (
        "LLAMACPP_BINARY",
        "CLI mode only: llama-cli name or path (default llama-cli). The promptq image does not ship llama.cpp.",
    ),
]

# Extra words for settings that compose.yaml sets or overrides, so nobody
# wonders why their .env value has no effect inside the stack.
COMPOSE_NOTES: Dict[str, str] = {
    "redis_url": "(compose.yaml sets it from REDIS_PASSWORD for its services.)",
    "metrics_port": "(compose.yaml sets 9808 for its workers.)",
    "providers": "(compose's workers pass --providers, which wins.)",
    "pool": "(compose's workers pass --pool, which wins.)",
    "concurrency": "(compose's workers pass --concurrency, which wins.)",
}

CONFIG_VAR_COMMENT = (
    "Optional TOML config file (sources, later wins: defaults, this file, PROMPTQ_* variables). "
    "Provider tables ([providers.NAME]) can only be set there."
)


def _load_settings_module():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from promptq.tasks import settings

    return settings


def field_comments(settings_module) -> Dict[str, str]:
    """The `#:` comment above each Settings field, joined into one line.

    A field with no comment of its own shares the comment of the field just
    above it (settings.py groups `stream_maxlen` and `stream_ttl_s` that way).
    """
    path = Path(settings_module.__file__)
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    cls = next(
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings"
    )
    comments: Dict[str, str] = {}
    previous = ""
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        block: List[str] = []
        i = node.lineno - 2  # the line above, 0-based
        while i >= 0 and lines[i].strip().startswith("#:"):
            block.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        text = " ".join(part for part in block if part) or previous
        comments[node.target.id] = text
        previous = text
    return comments


def format_default(value) -> str:
    # str() round-trips through Settings.load's coercion for str, int and
    # float (repr of a float keeps its ".0", so it still reads as a float).
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_settings(settings_module) -> List[Tuple[str, str, str]]:
    """(env var, default, comment) for every field settable from the environment."""
    comments = field_comments(settings_module)
    names = {f.name for f in dataclasses.fields(settings_module.Settings)}
    unknown = set(COMPOSE_NOTES) - names
    if unknown:
        raise SystemExit(f"COMPOSE_NOTES names unknown settings: {sorted(unknown)}")
    rows = []
    for f in dataclasses.fields(settings_module.Settings):
        if f.default is dataclasses.MISSING or not isinstance(f.default, (str, int, float, bool)):
            continue  # e.g. provider_configs: a table, only from the config file
        comment = comments.get(f.name, "")
        if f.name in COMPOSE_NOTES:
            comment = f"{comment} {COMPOSE_NOTES[f.name]}".strip()
        rows.append(("PROMPTQ_" + f.name.upper(), format_default(f.default), comment))
    return rows


def file_only_fields(settings_module) -> List[str]:
    return [
        f.name
        for f in dataclasses.fields(settings_module.Settings)
        if f.default is dataclasses.MISSING or not isinstance(f.default, (str, int, float, bool))
    ]


def render() -> str:
    settings = _load_settings_module()
    out: List[str] = [
        "# promptq — example environment. Generated by deploy/gen_env_example.py;",
        "# edit that script (or the comments in tasks/settings.py), not this file.",
        "#",
        "# For compose: cp deploy/.env.example .env   (at the repository root, next to",
        "# compose.yaml). compose reads .env to fill ${VARS} in compose.yaml, and the",
        "# workers load it as their environment. .env holds secrets: never commit it.",
        "",
        "# --- required by compose.yaml " + "-" * 48,
    ]
    for name, comment in COMPOSE_REQUIRED:
        out += [f"# {comment}", f"{name}=", ""]
    out.append("# --- providers (read by each provider from the worker's environment) " + "-" * 9)
    for name, comment in PROVIDER_VARS:
        out += [f"# {comment}", f"{name}=", ""]
    out += [
        "# --- promptq settings: PROMPTQ_ + the Settings field, upper-cased " + "-" * 12,
        "# Shown with their built-in defaults; uncomment a line to change it.",
        "",
        f"# {CONFIG_VAR_COMMENT}",
        "# PROMPTQ_CONFIG=",
        "",
    ]
    for name, default, comment in env_settings(settings):
        out += [f"# {comment}", f"# {name}={default}", ""]
    for name in file_only_fields(settings):
        if name == "limit_overrides":
            out += [
                "# limit_overrides: rate limits per provider (README, \"Rate limits and capacity\"); per model",
                "# only in the PROMPTQ_CONFIG file ([providers.NAME.models.\"MODEL\".limits]).",
                "# Per provider: PROMPTQ_LIMIT_OPENAI_RPM, PROMPTQ_LIMIT_OPENAI_TPM and",
                "# PROMPTQ_LIMIT_OPENAI_CONCURRENCY (any provider's name in place of OPENAI).",
                "",
            ]
            continue
        out += [
            f"# {name}: not read from the environment; set it in the PROMPTQ_CONFIG file.",
            "",
        ]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python deploy/gen_env_example.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
