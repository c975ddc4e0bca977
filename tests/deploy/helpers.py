"""Shared readers for the deployment tests: compose.yaml, the Dockerfile, .dockerignore.

There is no Docker engine where these tests run, so the deployment files are
checked statically: the compose spec's JSON schema, plus the cross-references
the schema cannot see (services, volumes, paths, CLI commands, metric names).
"""

from __future__ import annotations

import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / "deploy" / ".env.example"
PROMETHEUS = REPO / "deploy" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "promptq-dashboard.json"

# Variable names that hold secrets: *_API_KEY(S), *_PASSWORD, FLOWER_BASIC_AUTH, ...
# (anchored at the end for KEY/AUTH so PROMPTQ_KEY_PREFIX is not one).
SECRET_NAME = re.compile(r"(?:KEYS?|AUTH|CREDENTIALS?)$|PASSWORD|PASSWD|SECRET|TOKEN", re.IGNORECASE)

# PROMPTQ_* variables `promptq serve` reads (workers/server/config.py) that are
# not fields of tasks.settings.Settings.
SERVER_ENV = ("PROMPTQ_API_KEYS", "PROMPTQ_API_KEYS_FILE", "PROMPTQ_FILES_DIR")
SERVER_CONFIG = REPO / "workers" / "server" / "config.py"

# The providers promptq ships; each has a `promptq.<name>` queue that some
# compose worker must consume, or jobs sent there wait forever.
BUILTIN_PROVIDERS = ("openai", "claude", "openrouter", "ollama", "llamacpp")


@lru_cache(maxsize=None)
def compose() -> Dict[str, Any]:
    # PyYAML's safe loader resolves anchors and `<<` merge keys like compose does.
    with COMPOSE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def services() -> Dict[str, Dict[str, Any]]:
    return compose()["services"]


def is_promptq_service(svc: Dict[str, Any]) -> bool:
    """A service running the promptq image (its ENTRYPOINT is `promptq`)."""
    build = svc.get("build")
    if isinstance(build, dict):
        return Path(build.get("dockerfile", "Dockerfile")).as_posix() == "deploy/Dockerfile"
    if isinstance(build, str):
        return False
    return str(svc.get("image", "")).startswith("promptq:")


def command_tokens(svc: Dict[str, Any]) -> List[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def option_value(tokens: List[str], flag: str) -> Optional[str]:
    for i, tok in enumerate(tokens):
        if tok == flag and i + 1 < len(tokens):
            return tokens[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


def worker_services() -> Dict[str, Dict[str, Any]]:
    return {
        name: svc
        for name, svc in services().items()
        if is_promptq_service(svc) and command_tokens(svc)[:1] == ["worker"]
    }


def environment(svc: Dict[str, Any]) -> Dict[str, Optional[str]]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out: Dict[str, Optional[str]] = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            out[key] = value if sep else None
        return out
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def healthcheck_command(svc: Dict[str, Any]) -> List[str]:
    """The healthcheck as argv-ish tokens (CMD-SHELL strings are shell-split)."""
    test = (svc.get("healthcheck") or {}).get("test")
    if test is None:
        return []
    if isinstance(test, str):
        return shlex.split(test)
    if test[0] == "CMD-SHELL":
        return shlex.split(" ".join(test[1:]))
    if test[0] == "CMD":
        return [str(t) for t in test[1:]]
    return []


def published_ports(svc: Dict[str, Any]) -> List[Tuple[Optional[str], str, str]]:
    """(host_ip, published, target) for each `ports:` entry, short or long syntax."""
    out = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            out.append((entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]
        if spec.startswith("["):  # [::1]:5555:5555
            host, _, rest = spec[1:].partition("]:")
            published, _, target = rest.partition(":")
            out.append((host, published, target))
            continue
        parts = spec.split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append((None, parts[0], parts[1]))
        else:
            out.append((None, "", parts[0]))  # target only: a random host port on all interfaces
    return out


def volume_mounts(svc: Dict[str, Any]) -> List[Tuple[str, Optional[str], str]]:
    """(type, source, target) for each `volumes:` entry, short or long syntax."""
    out = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((entry.get("type", "volume"), entry.get("source"), entry["target"]))
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            out.append(("volume", None, parts[0]))  # anonymous volume
            continue
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append((kind, source, target))
    return out


def env_files(svc: Dict[str, Any]) -> List[Tuple[str, bool]]:
    """(path, required) for each env_file entry."""
    raw = svc.get("env_file")
    if raw is None:
        return []
    items = [raw] if isinstance(raw, (str, dict)) else raw
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append((item["path"], bool(item.get("required", True))))
        else:
            out.append((str(item), True))
    return out


def iter_strings(node: Any, path: str = "") -> Iterator[Tuple[str, str]]:
    """Every string scalar (and mapping key) in a YAML tree, with where it sits."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", str(key)
            yield from iter_strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from iter_strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def parse_duration_s(text: str) -> float:
    """Compose durations: '1m30s', '300s', '10m', '1h'."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a compose duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


# --- Dockerfile -------------------------------------------------------------


def dockerfile_instructions(text: Optional[str] = None) -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8") if text is None else text
    out: List[Tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


# --- .dockerignore ------------------------------------------------------------


def _pattern_regex(pattern: str) -> "re.Pattern[str]":
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_rules(text: Optional[str] = None) -> List[Tuple["re.Pattern[str]", bool]]:
    text = DOCKERIGNORE.read_text(encoding="utf-8") if text is None else text
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/")
        if pattern.startswith("./"):
            pattern = pattern[2:]
        rules.append((_pattern_regex(pattern), negate))
    return rules


def dockerignore_excludes(path: str, rules=None) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent
    folders, decides; a `!` pattern lets the path back in."""
    rules = dockerignore_rules() if rules is None else rules
    parts = Path(path).as_posix().strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for regex, negate in rules:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def hide_refs(text: str) -> Tuple[str, Dict[str, str]]:
    """Swap each `${...}` compose reference for a placeholder word.

    A reference like `${REDIS_PASSWORD:?set it (openssl rand -hex 32)}` holds
    spaces and a `?` that would start a URL's query; hidden, the URL parses.
    Returns (text, {placeholder: reference}).
    """
    refs: Dict[str, str] = {}

    def hide(match: "re.Match[str]") -> str:
        key = f"ref{len(refs)}x"
        refs[key] = match.group(0)
        return key

    return re.sub(r"\$\{[^}]*\}", hide, text), refs


def split_url_with_refs(url: str):
    """urlsplit() for a URL holding references; returns (SplitResult, refs)."""
    from urllib.parse import urlsplit

    hidden, refs = hide_refs(url)
    return urlsplit(hidden), refs
