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


def _surrogate(text: str) -> Any:
    """The UnicodeEncodeError of a string holding a lone surrogate, else None."""
    if text.isascii():  # O(1) in CPython: most keys and values
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc
    return None


def _path(where: Any, root: str) -> str:
    """The path of a value: built only for an error (per value, it was most of the check's cost)."""
    parts = []
    while where is not None:
        where, key = where
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return root + "".join(reversed(parts))


def check_json(value: Any, path: str = "value", max_depth: int = MAX_DEPTH) -> None:
    """Raise JSONValueError unless `value` is plain, finite, UTF-8-clean JSON nested at most `max_depth` deep."""
    # (item, depth, where): `where` is (parent's where, key or index), None at the root.
    stack: List[Tuple[Any, int, Any]] = [(value, 0, None)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            bad = _surrogate(item)
            if bad is not None:
                raise JSONValueError(_path(where, path),
                                     f"contains a lone surrogate at character {bad.start} (not valid UTF-8)")
            continue
        if item is None or isinstance(item, bool) or isinstance(item, int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise JSONValueError(_path(where, path), f"{item!r} is not a JSON number")
            continue
        if isinstance(item, (dict, list, tuple)):  # a tuple is written as a JSON array
            if depth >= max_depth:
                shown = _path(where, path)
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                raise JSONValueError(shown, f"is nested more than {max_depth} levels deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise JSONValueError(_path(where, path),
                                             f"has a {type(key).__name__} key {key!r}; JSON keys are strings")
                    bad = _surrogate(key)
                    if bad is not None:
                        raise JSONValueError(f"{_path(where, path)}.{key!r}",
                                             f"contains a lone surrogate at character {bad.start} (not valid UTF-8)")
                    stack.append((child, depth + 1, (where, key)))
            else:
                for i, child in enumerate(item):
                    stack.append((child, depth + 1, (where, i)))
            continue
        raise JSONValueError(_path(where, path), f"a {type(item).__name__} is not a JSON value")


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
