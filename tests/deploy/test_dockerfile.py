"""deploy/Dockerfile and .dockerignore, read statically (no Docker engine here).

A COPY whose source is missing, or filtered out by .dockerignore, fails only
at `docker build` time; a secret in an ARG/ENV stays in the image history.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from .helpers import (
    DOCKERFILE,
    REPO,
    SECRET_NAME,
    dockerfile_instructions,
    dockerignore_excludes,
    dockerignore_rules,
)



def _copy_sources(instructions):
    """Context paths each COPY/ADD reads (COPY --from=stage reads a stage, not the context)."""
    out = []
    for word, rest in instructions:
        if word not in ("COPY", "ADD"):
            continue
        if rest.startswith("["):
            args = json.loads(rest)
        else:
            args = shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [a for a in args if not a.startswith("--")]
        out.extend(paths[:-1])  # the last one is the destination
    return out


def _arg_defaults(instructions):
    defaults = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            defaults[key.strip()] = value.strip().strip('"')
    return defaults


def test_copy_sources_exist_and_pass_dockerignore():
    sources = _copy_sources(dockerfile_instructions())
    assert sources, "the Dockerfile copies nothing from the build context"
    rules = dockerignore_rules()
    for src in sources:
        path = REPO / src
        assert path.exists(), f"COPY {src}: no such file or folder in the build context"
        assert not dockerignore_excludes(src, rules), f"COPY {src}: .dockerignore keeps it out of the build context"
        if path.is_dir():
            for py in path.rglob("*.py"):
                rel = py.relative_to(REPO).as_posix()
                if "__pycache__" not in rel:
                    assert not dockerignore_excludes(rel, rules), f".dockerignore drops {rel}, which COPY {src} needs"


def test_copy_checker_sees_a_missing_source():
    fake = [("COPY", "pyproject.toml no-such-dir ./"), ("COPY", "--from=build /wheels /wheels")]
    assert _copy_sources(fake) == ["pyproject.toml", "no-such-dir"]
    assert not (REPO / "no-such-dir").exists()


def test_pyproject_package_folders_are_copied():
    # `pip install .` needs the folder of every package pyproject maps.
    import tomllib

    with (REPO / "pyproject.toml").open("rb") as fh:
        folders = set(tomllib.load(fh)["tool"]["setuptools"]["package-dir"].values())
    copied = {Path(s).as_posix().strip("/") for s in _copy_sources(dockerfile_instructions())}
    assert {"promptq", "providers", "tasks", "workers"} <= folders
    for folder in folders:
        assert folder in copied, f"pyproject.toml maps a package onto {folder}/, but the Dockerfile does not COPY it"
    assert "pyproject.toml" in copied


def test_secrets_and_junk_stay_out_of_the_build_context():
    rules = dockerignore_rules()
    for path in (".env", "deploy/.env.example", ".venv/bin/python", "tests/deploy/test_compose.py",
                 ".git/config", "providers/__pycache__/x.cpython-311.pyc", "dump.rdb"):
        assert dockerignore_excludes(path, rules), f"{path} would be sent to the Docker daemon"
    # And the matcher itself can fail:
    assert not dockerignore_excludes(".env", dockerignore_rules("*\n!.env\n"))


def test_base_image_user_and_entrypoint():
    ins = dockerfile_instructions()
    args = _arg_defaults(ins)
    froms = [rest.split()[0] for word, rest in ins if word == "FROM"]
    resolved = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), f) for f in froms]
    assert resolved and resolved[-1] == "python:3.11-slim", f"runtime image is {resolved[-1:]}, not python:3.11-slim"

    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the runtime stage runs as root: add a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["promptq"], f"ENTRYPOINT must be [\"promptq\"], is {entry}"
    # The runtime stage installs promptq (from the wheels built from `.`).
    assert any(word == "RUN" and "pip install" in rest and "promptq" in rest for word, rest in final)
    assert any(word == "RUN" and re.search(r"pip (wheel|install)\b.*[\"' ]\.(?:\$\{[^}]*\})?[\"']?(\s|$)", rest) for word, rest in ins), (
        "the image must be built from the repo with pip (`pip install .` / `pip wheel .`)"
    )


def test_no_secrets_baked_into_the_image():
    for word, rest in dockerfile_instructions():
        if word in ("ARG", "ENV"):
            # ENV may set several: ENV A=1 B=2
            for assignment in shlex.split(rest):
                name = assignment.split("=", 1)[0]
                assert not SECRET_NAME.search(name), f"{word} {name}: secrets go in at run time, never into the image"
        if word in ("COPY", "ADD"):
            assert ".env" not in shlex.split(rest)[:-1], "never COPY a .env into the image"


@pytest.mark.parametrize("text, expected", [("FROM a\nRUN x \\\n  y\n", [("FROM", "a"), ("RUN", "x y")])])
def test_instruction_parser(text, expected):
    assert [(w, " ".join(r.split())) for w, r in dockerfile_instructions(text)] == expected


def test_dockerfile_exists():
    assert DOCKERFILE.is_file()
