"""Checks every JSON value from outside must pass before anything else reads it.

Python's ``json`` accepts text that cannot go any further: a lone surrogate escape (``"\\ud800"``)
becomes a ``str`` that UTF-8 cannot encode (tokenizers and runtimes fail on it), ``NaN``/``Infinity``
are not JSON, and a value nested a few hundred levels deep makes recursive code (``copy.deepcopy``,
``jsonschema``, ``json.dumps``) raise ``RecursionError``. ``check_json_value`` walks a value without
recursion and names the first such place, so callers can answer with an error naming the field.
"""

from __future__ import annotations

import math
from typing import Any

MAX_JSON_DEPTH = 100  # levels of objects/arrays in one value (a request body counts from its root)
_SURROGATE_PROBLEM = "holds a lone UTF-16 surrogate (e.g. \\ud800 without its pair), which is not valid Unicode text"


class JSONValueError(ValueError):
    """A value that cannot be used as is; ``field`` says where (``messages[0].content``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a surrogate code point that is not half of a pair (not encodable as UTF-8)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes, safe to put into a message or a field path."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if has_lone_surrogate(text) else text


def join_field(field: str, key: str | int) -> str:
    """``field`` + ``[index]`` or ``.key`` (a key is made printable); a path from the root has no leading dot."""
    if isinstance(key, int):
        return f"{field}[{key}]"
    key = printable(key)
    return f"{field}.{key}" if field else key


def check_json_value(value: Any, *, field: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise ``JSONValueError`` at the first string or key with a lone surrogate, non-finite number, or
    object/array more than ``max_depth`` levels deep (``value`` itself, if an object or array, is the first level)."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if has_lone_surrogate(item):
                raise JSONValueError(where, _SURROGATE_PROBLEM)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JSONValueError(where, f"{item!r} is not a JSON number")
        elif isinstance(item, dict):
            if depth >= max_depth:
                raise JSONValueError(where, f"nested more than {max_depth} levels deep")
            children = []
            for key, child in item.items():
                if isinstance(key, str) and has_lone_surrogate(key):
                    raise JSONValueError(join_field(where, key), "the key " + _SURROGATE_PROBLEM)
                children.append((child, join_field(where, key), depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, (list, tuple)):
            if depth >= max_depth:
                raise JSONValueError(where, f"nested more than {max_depth} levels deep")
            stack.extend((child, join_field(where, index), depth + 1)
                         for index, child in reversed(list(enumerate(item))))
