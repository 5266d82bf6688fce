"""JSON Schema from untrusted function definitions: bounded, local, and checked without ever blocking.

A function's ``parameters`` come from whoever sends the request, so before anything recursive reads
them (``jsonschema``'s meta-schema check, the grammar builder, argument validation):

- ``check_schema_structure`` bounds them — at most ``MAX_SCHEMA_NODES`` subschemas, nested at most
  ``MAX_SCHEMA_DEPTH`` levels (counted through ``$ref``s) — and accepts only references that are local
  JSON pointers (``#/$defs/city``) resolving to a schema inside the same ``parameters``: a URL or file
  reference is refused, never fetched;
- ``check_pattern`` bounds every ``pattern`` and ``patternProperties`` key before any engine compiles
  it: its length, its group nesting and its size once bounded repeats are expanded
  (``(?:a{65535}){65535}`` would expand to 4e9 items in memory);
- ``schema_validator`` validates with a registry that has nothing to retrieve (a reference that is not
  local fails instead of making a request) and matches ``pattern``/``patternProperties`` with the
  ``regex`` engine under a time budget, releasing the GIL (Python's ``re`` backtracks exponentially on
  patterns like ``^(a|a)*$`` while holding the GIL, which would stall every thread, event loop included).

Limits and the reasons for them: docs/SERVER.md, "Input limits".
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import referencing
from jsonschema import Draft202012Validator, ValidationError, validators

MAX_SCHEMA_DEPTH = 32  # subschemas nested in one function's parameters (through $refs too)
MAX_SCHEMA_NODES = 2000  # subschemas in one function's parameters, as written
MAX_EXPANDED_NODES = 20000  # subschemas visited when $refs are followed (a DAG of refs can fan out)
MAX_PATTERN_SECONDS = 1.0  # time all pattern matches of one validation (or one grammar build) may take
MAX_PATTERN_LENGTH = 1000  # characters in one pattern or patternProperties key
MAX_PATTERN_NESTING = 32  # groups nested in one pattern (the regex parsers recurse on them)
MAX_PATTERN_EXPANSION = 10_000  # pattern items once bounded repeats are expanded, as regex compilers do
COMPILED_PATTERNS = 64  # compiled patterns kept between requests (the regex module's own cache is not used)
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose value is a schema, a list of schemas, or an object of schemas (2020-12 and draft 7).
_SCHEMA_VALUES = frozenset({"items", "additionalItems", "additionalProperties", "unevaluatedItems",
                            "unevaluatedProperties", "contains", "propertyNames", "not", "if", "then", "else",
                            "contentSchema"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"})


class SchemaLimitError(ValueError):
    """A schema the server will not process; ``path`` is where, relative to the schema (``.properties.city.$ref``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class PatternTimeout(Exception):
    """Pattern matching ran out of its time budget."""


# --- structure -----------------------------------------------------------------------------------


def subschemas(schema: dict) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(JSON pointer parts, subschema)`` for each schema directly inside ``schema``
    (``("properties", "city")``, ``("anyOf", "0")``, ``("items",)``)."""
    for keyword, value in schema.items():
        if keyword in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                if isinstance(sub, (dict, bool)):
                    yield (keyword, name), sub
        elif keyword in _SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                yield (keyword, str(index)), sub
        elif keyword in _SCHEMA_VALUES:
            if isinstance(value, list):  # draft 7's tuple form of items
                for index, sub in enumerate(value):
                    yield (keyword, str(index)), sub
            else:
                yield (keyword,), value


def field_of(parts: tuple[str, ...]) -> str:
    """Pointer parts -> the field suffix the errors use: ``.properties.city``, ``.anyOf[0]``."""
    out = ""
    for index, part in enumerate(parts):
        if index > 0 and parts[index - 1] in _SCHEMA_LISTS | {"items", "additionalItems"} and part.isdigit():
            out += f"[{part}]"
        else:
            out += f".{part}"
    return out


def ref_pointer(ref: Any) -> tuple[str, ...]:
    """A local reference (``#`` or ``#/json/pointer``, percent-decoded) as pointer parts;
    ``LookupError`` when it is not one."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise LookupError("not a local reference")
    pointer = unquote(ref[1:])
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise LookupError("not a JSON pointer")
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))


def resolve_local_ref(root: Any, ref: Any) -> Any:
    """The value a local reference names in ``root``; ``LookupError`` when it is not local or names nothing."""
    node = root
    for part in ref_pointer(ref):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise LookupError(f"no {part!r}")
    return node


def check_schema_structure(root: dict) -> None:
    """Raise ``SchemaLimitError`` for a schema over the size or depth limits, or with a reference that is
    not a local JSON pointer to one of its own subschemas. Never recurses (safe on any input)."""
    nodes = _written_subschemas(root)
    _check_expanded_depth(root, nodes)


def _written_subschemas(root: dict) -> dict[tuple[str, ...], Any]:
    """Every subschema as written, by pointer; checks the count, ``$id`` and every reference."""
    nodes: dict[tuple[str, ...], Any] = {}
    refs: list[tuple[tuple[str, ...], str, Any]] = []
    stack: list[tuple[Any, tuple[str, ...]]] = [(root, ())]
    uses_patterns = uses_unevaluated = False
    while stack:
        node, parts = stack.pop()
        nodes[parts] = node
        if len(nodes) > MAX_SCHEMA_NODES:
            raise SchemaLimitError("", f"more than {MAX_SCHEMA_NODES} subschemas; simplify the schema")
        if not isinstance(node, dict):
            continue
        if "$id" in node and parts:
            raise SchemaLimitError(field_of(parts) + ".$id", "$id is accepted on the parameters schema only "
                                   "(inside, it would change what references resolve against)")
        refs.extend((parts, keyword, node[keyword]) for keyword in REF_KEYWORDS if keyword in node)
        if isinstance(node.get("pattern"), str):
            check_pattern(node["pattern"], path=field_of(parts) + ".pattern")
        if isinstance(node.get("patternProperties"), dict):
            for key in node["patternProperties"]:
                check_pattern(key, path=field_of(parts + ("patternProperties",)) + f"[{key[:40]!r}]")
        uses_patterns = uses_patterns or "patternProperties" in node
        uses_unevaluated = uses_unevaluated or "unevaluatedProperties" in node
        stack.extend(reversed([(sub, parts + where) for where, sub in subschemas(node)]))
    if uses_patterns and uses_unevaluated:
        raise SchemaLimitError("", "unevaluatedProperties together with patternProperties is not supported")
    for parts, keyword, ref in refs:
        _check_ref(ref, nodes=nodes, path=f"{field_of(parts)}.{keyword}")
    _check_ref_cycles(nodes)
    return nodes


def _check_ref_cycles(nodes: dict[tuple[str, ...], Any]) -> None:
    """Refuse a chain of ``$ref``s that comes back to where it started without descending into any
    subschema (``a: {$ref: #/$defs/a}``, a↔b): a validator or a grammar would follow it forever."""
    target = {parts: ref_pointer(node["$ref"]) for parts, node in nodes.items()
              if isinstance(node, dict) and isinstance(node.get("$ref"), str)}
    for start in target:
        chain, at = [start], target[start]
        while at in target and at not in chain:
            chain.append(at)
            at = target[at]
        if at == start:
            shown = " → ".join("#" + "".join(f"/{part}" for part in parts) for parts in [*chain, start])
            raise SchemaLimitError(field_of(start) + ".$ref", f"a $ref cycle that never reaches a schema: {shown}")


def check_pattern(pattern: str, *, path: str) -> None:
    """Raise ``SchemaLimitError`` for a regular expression over the limits above, or one Python's parser
    rejects (jsonschema checks ``pattern`` with it). Parses only after the nesting is known to be shallow."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise SchemaLimitError(path, f"a pattern of {len(pattern)} characters; at most {MAX_PATTERN_LENGTH}")
    if _group_nesting(pattern) > MAX_PATTERN_NESTING:
        raise SchemaLimitError(path, f"groups nested more than {MAX_PATTERN_NESTING} deep")
    import re._parser as sre_parse

    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as error:
        raise SchemaLimitError(path, f"not a regular expression this server supports ({error})") from None
    if _expanded_size(parsed) > MAX_PATTERN_EXPANSION:
        raise SchemaLimitError(path, f"its repeats expand to more than {MAX_PATTERN_EXPANSION} items; use * or + "
                                     "instead of large {m,n} counts")


def _group_nesting(pattern: str) -> int:
    """The deepest nesting of ( … ) outside character classes and escapes."""
    depth = deepest = 0
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(0, depth - 1)
    return deepest


def _expanded_size(items) -> int:
    """Items of a parsed pattern with each bounded repeat counted as its upper bound (an unbounded one
    as its lower bound, a loop); stops counting once over the limit."""
    import re._constants as sre

    total = 0
    for op, argument in items:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, body = argument
            times = high if high != sre.MAXREPEAT else max(low, 1)
            total += times * _expanded_size(body)
        elif op is sre.SUBPATTERN:
            total += _expanded_size(argument[-1])
        elif op in (sre.ATOMIC_GROUP, sre.ASSERT, sre.ASSERT_NOT) and isinstance(argument, (tuple, list)):
            total += _expanded_size(argument[-1])
        elif op is sre.BRANCH:
            total += sum(_expanded_size(branch) for branch in argument[1])
        elif op is sre.GROUPREF_EXISTS:
            total += sum(_expanded_size(branch) for branch in argument[1:] if branch is not None)
        else:
            total += 1
        if total > MAX_PATTERN_EXPANSION:
            return total
    return total


def _check_ref(ref: Any, *, nodes: dict, path: str) -> None:
    if not isinstance(ref, str):
        raise SchemaLimitError(path, f"must be a string, got {type(ref).__name__}")
    shown = repr(ref if len(ref) <= 200 else ref[:200] + "…")
    if not ref.startswith("#"):
        raise SchemaLimitError(path, f"{shown}: only local references (#/...) are accepted; a schema is never "
                                     "fetched from a URL or a file")
    if ref != "#" and not ref.startswith("#/"):
        raise SchemaLimitError(path, f"{shown}: only JSON-pointer references (# or #/...) are supported, not anchors")
    if ref_pointer(ref) not in nodes:
        raise SchemaLimitError(path, f"{shown} does not resolve to a schema in this parameters schema")


def _check_expanded_depth(root: dict, nodes: dict[tuple[str, ...], Any]) -> None:
    """Depth along every path, following references (a reference back to a schema already on the path —
    recursion — ends that path, as it ends the grammar's expansion)."""
    stack: list[tuple[Any, tuple[str, ...], str, int, frozenset]] = [(root, (), "", 1, frozenset())]
    visited = 0
    while stack:
        node, parts, via, depth, refs = stack.pop()
        visited += 1
        if visited > MAX_EXPANDED_NODES:
            raise SchemaLimitError("", f"its references expand to more than {MAX_EXPANDED_NODES} subschemas; "
                                       "simplify the schema")
        if depth > MAX_SCHEMA_DEPTH:
            where = via or field_of(parts)
            raise SchemaLimitError(where, f"subschemas nested more than {MAX_SCHEMA_DEPTH} levels deep"
                                          + (" (counting through $ref)" if via else ""))
        if not isinstance(node, dict):
            continue
        for keyword in REF_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str) and ref not in refs:
                target = ref_pointer(ref)
                stack.append((nodes[target], target, f"{field_of(parts)}.{keyword}", depth + 1, refs | {ref}))
        stack.extend((sub, parts + where, via, depth + 1, refs) for where, sub in subschemas(node))


# --- validation ----------------------------------------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("pattern_deadline", default=None)


def pattern_search(pattern: str, text: str) -> bool:
    """``re.search`` semantics through the ``regex`` engine, within the current validation's time budget."""
    deadline = _deadline.get()
    remaining = MAX_PATTERN_SECONDS if deadline is None else deadline - time.monotonic()
    if remaining <= 0:
        raise PatternTimeout
    try:
        return _compiled(pattern).search(text, timeout=remaining, concurrent=True) is not None
    except TimeoutError:
        raise PatternTimeout from None


@functools.lru_cache(maxsize=COMPILED_PATTERNS)
def _compiled(pattern: str):
    import regex

    return regex.compile(pattern, cache_pattern=False)


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not pattern_search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            if pattern_search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator, additional, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [key for key in instance
              if key not in properties and not any(pattern_search(pattern, key) for pattern in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(extra) for extra in sorted(extras))
        if patterns:
            yield ValidationError(f"{listed} {'does' if len(extras) == 1 else 'do'} not match any of the regexes: "
                                  + ", ".join(repr(pattern) for pattern in sorted(patterns)))
        else:
            yield ValidationError(f"Additional properties are not allowed ({listed} "
                                  f"{'was' if len(extras) == 1 else 'were'} unexpected)")


SafeValidator = validators.extend(Draft202012Validator, {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
})
NO_RETRIEVAL = referencing.Registry()  # retrieving any URI fails: nothing is ever fetched


def schema_validator(root: Any, *, schema: Any = None) -> Draft202012Validator:
    """A validator for ``schema`` (default: ``root``) whose references resolve within ``root`` only."""
    validator = SafeValidator(root, registry=NO_RETRIEVAL)
    return validator if schema is None else validator.evolve(schema=schema)


@contextlib.contextmanager
def pattern_budget(seconds: float | None = None):
    """All pattern matching inside the block shares one time budget (an enclosing budget, if any, wins):
    a schema with many enum values checked against a slow pattern costs ``seconds`` in all, not per value."""
    if _deadline.get() is not None:
        yield
        return
    token = _deadline.set(time.monotonic() + (MAX_PATTERN_SECONDS if seconds is None else seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def validation_errors(validator: Draft202012Validator, instance: Any) -> list[ValidationError]:
    """Every error of ``instance``, patterns matched within ``MAX_PATTERN_SECONDS`` in all (or within the
    enclosing ``pattern_budget``). Raises ``PatternTimeout``, ``RecursionError`` or ``referencing`` errors
    for the caller to report."""
    with pattern_budget():
        return list(validator.iter_errors(instance))
