"""Provider names to classes: built-ins, aliases and third-party plugins.

A provider is registered as a dotted path `"module:Class"` and imported only
when first created, so `import providers` stays cheap and a provider module
with heavy or optional dependencies costs nothing until it is used.
Built-ins register exactly as third parties do (simonw/llm's plugin model):
`register_provider("mine", "my_pkg.provider:MyProvider")`, or an installed
distribution's entry point in the group `promptq.providers`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from importlib import metadata
from typing import Any, Dict, Iterable, List, Optional, Type, Union

from .base import LLMProvider

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "promptq.providers"

_BUILTINS = {
    "openai": "promptq.providers.openai_provider:OpenAIProvider",
    "claude": "promptq.providers.claude_provider:ClaudeProvider",
    "openrouter": "promptq.providers.openrouter_provider:OpenRouterProvider",
    "ollama": "promptq.providers.ollama_provider:OllamaProvider",
    "llamacpp": "promptq.providers.llamacpp_provider:LlamaCppProvider",
    "mock": "promptq.providers.mock_provider:MockProvider",
}
_BUILTIN_ALIASES = {"anthropic": "claude", "llama.cpp": "llamacpp", "llama_cpp": "llamacpp"}

_targets: Dict[str, Union[str, type]] = dict(_BUILTINS)
_aliases: Dict[str, str] = dict(_BUILTIN_ALIASES)
_lock = threading.Lock()
_entry_points_loaded = False


def _normalize(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a provider name must be a non-empty string, not {name!r}")
    return name.strip().lower()


def register_provider(
    name: str, target: Union[str, Type[LLMProvider]], *, aliases: Iterable[str] = ()
) -> None:
    """Make `create_provider(name)` build `target` ("module:Class" or a class)."""
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"target must be 'module:Class', not {target!r}")
    canonical = _normalize(name)
    with _lock:
        _targets[canonical] = target
        for alias in aliases:
            _aliases[_normalize(alias)] = canonical


def unregister_provider(name: str) -> None:
    """Remove a registered provider and its aliases (built-ins included)."""
    canonical = resolve_name(name)
    with _lock:
        _targets.pop(canonical, None)
        for alias in [a for a, c in _aliases.items() if c == canonical]:
            del _aliases[alias]


def _load_entry_points() -> None:
    # Read once: installed plugins do not change while a process runs.
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    try:
        found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken distribution must not break the built-ins
        logger.warning("could not read %s entry points: %s", ENTRY_POINT_GROUP, exc)
        return
    for ep in found:
        with _lock:
            _targets.setdefault(_normalize(ep.name), ep.value)


def resolve_name(name: str) -> str:
    """The canonical name for `name` or one of its aliases (not checked to exist)."""
    key = _normalize(name)
    return _aliases.get(key, key)


def known_providers() -> List[str]:
    """Canonical names of every registered provider, sorted."""
    _load_entry_points()
    return sorted(_targets)


def provider_class(name: str) -> Type[LLMProvider]:
    """Import and return the class registered under `name` (or an alias)."""
    canonical = resolve_name(name)
    if canonical not in _targets:
        _load_entry_points()
    target = _targets.get(canonical)
    if target is None:
        raise ValueError(f"unknown provider {name!r}; known providers: {', '.join(known_providers())}")
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"provider {canonical!r} is registered as {target!r}, which cannot be imported: {exc}"
        ) from exc
    return cls


def create_provider(name: str, config: Optional[Dict[str, Any]] = None) -> LLMProvider:
    """Build the provider registered under `name` from a config dict.

    Raises ValueError naming the known providers when `name` is unknown.
    """
    return provider_class(name)(dict(config or {}))


__all__ = [
    "ENTRY_POINT_GROUP",
    "create_provider",
    "known_providers",
    "provider_class",
    "register_provider",
    "resolve_name",
    "unregister_provider",
]
