"""Is this value plain JSON that every part of promptq can carry?

A job travels as JSON through Redis, Celery, Flower and the result files;
what Python's json module would accept on the way in is wider than that:
`NaN`/`Infinity`, lone surrogates (which no UTF-8 encoder will write),
bytes, sets, tuples, non-string keys, and nesting thousands deep (a
RecursionError anywhere that walks it). `check_json` refuses each with the
path of the offending value, walking iteratively so depth itself cannot
crash it; `loads_strict` parses text under the same rules.
"""

from __future__ import annotations

import json
import math
from typing import Any, List, Tuple

#: Deepest nesting accepted (objects and arrays); real chat payloads use < 10.
MAX_DEPTH = 64


class JSONValueError(ValueError):
    """`path` names the offending value; the message says why."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


def _check_str(path: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JSONValueError(path, f"contains a lone surrogate at character {exc.start} (not valid UTF-8)") from None


def check_json(value: Any, path: str = "value", max_depth: int = MAX_DEPTH) -> None:
    """Raise JSONValueError unless `value` is plain, finite, UTF-8-clean JSON nested at most `max_depth` deep."""
    stack: List[Tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if item is None or isinstance(item, bool) or isinstance(item, int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise JSONValueError(where, f"{item!r} is not a JSON number")
            continue
        if isinstance(item, str):
            _check_str(where, item)
            continue
        if isinstance(item, (dict, list, tuple)):  # a tuple is written as a JSON array
            if depth >= max_depth:
                shown = where if len(where) <= 80 else where[:77] + "..."
                raise JSONValueError(shown, f"is nested more than {max_depth} levels deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise JSONValueError(where, f"has a {type(key).__name__} key {key!r}; JSON keys are strings")
                    _check_str(f"{where}.{key!r}", key)
                    stack.append((f"{where}.{key}", child, depth + 1))
            else:
                for i, child in enumerate(item):
                    stack.append((f"{where}[{i}]", child, depth + 1))
            continue
        raise JSONValueError(where, f"a {type(item).__name__} is not a JSON value")


def loads_strict(text: Any, path: str = "value", max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` that refuses NaN/Infinity, too-deep nesting and lone surrogates (ValueError)."""
    def no_constant(name: str) -> Any:
        raise JSONValueError(path, f"{name} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise JSONValueError(path, f"is nested more than {max_depth} levels deep") from None
    check_json(value, path, max_depth)
    return value
