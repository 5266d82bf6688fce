"""Parse what Invoker generated (```{"content": ..., "function_call": ...}```) into a completion.

``parse_completion`` never raises: malformed output comes back as ``kind="invalid"`` with a machine
code in ``error`` and an explanation in ``detail``, so a server can answer without a 500.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

EOS_TEXT = "</s>"
FENCE = "```"
_FENCE_TAG = re.compile(r"(?:json)?\s*", re.IGNORECASE)
_DECODER = json.JSONDecoder()
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ParsedCompletion:
    """One parsed model output; ``error``/``detail`` are set only when ``kind == "invalid"``."""

    kind: Literal["content", "function_call", "invalid"]
    content: str | None = None
    name: str | None = None
    arguments: str | None = None
    error: str | None = None
    detail: str | None = None
    raw: str = ""


def parse_completion(text: str, *, functions: list[dict] | None = None) -> ParsedCompletion:
    """Model output -> content, a function call, or invalid (with a reason). Never raises."""
    try:
        return _parse(text, functions=functions)
    except Exception as error:  # a parser must not take the server down, whatever it was given
        return ParsedCompletion(kind="invalid", error="bad_shape", detail=f"unexpected input: {error!r}", raw=str(text))


def _parse(text: str, *, functions: list[dict] | None) -> ParsedCompletion:
    cleaned = strip_eos(text)
    start = find_json_start(cleaned)
    if start is None:
        return _invalid(text, error="no_json_block", detail="no ```{...}``` block in the output", content=cleaned)
    try:
        value, _ = _DECODER.raw_decode(cleaned, start)
    except json.JSONDecodeError as error:
        return _invalid(text, error="invalid_json", detail=f"the JSON block does not parse: {error}")
    if not isinstance(value, dict):
        return _invalid(text, error="bad_shape", detail=f"expected a JSON object, got {type(value).__name__}")
    return _from_object(value, raw=text, functions=functions)


def strip_eos(text: str) -> str:
    """The text without surrounding whitespace and a trailing EOS marker."""
    cleaned = text.strip()
    if cleaned.endswith(EOS_TEXT):
        cleaned = cleaned[: -len(EOS_TEXT)].rstrip()
    return cleaned


def find_json_start(text: str) -> int | None:
    """Index of the "{" that opens the answer: after the first ``` (or ```json) fence followed by "{",
    or at 0 when the whole text is a bare JSON object."""
    if text.startswith("{"):
        return 0
    position = text.find(FENCE)
    while position != -1:
        after_fence = position + len(FENCE)
        start = _FENCE_TAG.match(text, after_fence).end()
        if text.startswith("{", start):
            return start
        position = text.find(FENCE, after_fence)
    return None


def _from_object(value: dict, *, raw: str, functions: list[dict] | None) -> ParsedCompletion:
    if "content" not in value and "function_call" not in value:
        return _invalid(raw, error="bad_shape", detail='the object has neither "content" nor "function_call"')
    content = value.get("content")
    if content is not None and not isinstance(content, str):
        kind = type(content).__name__
        return _invalid(raw, error="bad_shape", detail=f'"content" must be a string or null, got {kind}')
    call = value.get("function_call")
    if call is None:
        if content is None:
            return _invalid(raw, error="bad_shape", detail='both "content" and "function_call" are null')
        return ParsedCompletion(kind="content", content=content, raw=raw)
    return _from_call(call, content=content, raw=raw, functions=functions)


def _from_call(call: Any, *, content: str | None, raw: str, functions: list[dict] | None) -> ParsedCompletion:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        return _invalid(raw, error="bad_shape", detail='"function_call" must be an object with a string "name"')
    name = call["name"]
    arguments, error, detail = _arguments_json(call.get("arguments"))
    if functions is not None and name not in {function.get("name") for function in functions}:
        return _invalid(
            raw, error="unknown_function", detail=f"the model called {name!r}, which is not among the functions",
            content=content, name=name, arguments=arguments,
        )
    if error is not None:
        return _invalid(raw, error=error, detail=detail, content=content, name=name)
    return ParsedCompletion(kind="function_call", content=content, name=name, arguments=arguments, raw=raw)


def _arguments_json(arguments: Any) -> tuple[str | None, str | None, str | None]:
    """(arguments as a JSON string, error code, detail); missing or empty arguments count as {}."""
    if arguments is None:
        return "{}", None, None
    if isinstance(arguments, str) and not arguments.strip():
        return "{}", None, None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as error:
            return None, "invalid_arguments_json", f'"arguments" is not valid JSON: {error}'
    if not isinstance(arguments, dict):
        return None, "arguments_not_object", f'"arguments" must be a JSON object, got {type(arguments).__name__}'
    text = json.dumps(arguments, ensure_ascii=False)
    # A lone surrogate the model wrote as an escape (\ud800) stays an escape: the text stays valid Unicode.
    return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text), None, None


def _invalid(raw: str, *, error: str, detail: str, **fields: Any) -> ParsedCompletion:
    return ParsedCompletion(kind="invalid", error=error, detail=detail, raw=raw, **fields)
