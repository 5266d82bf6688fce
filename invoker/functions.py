"""Function definitions: check them like OpenAI does and normalize them for stable rendering.

Every error names the offending field (``functions[1].parameters.required[0]``), so the server can
answer with an OpenAI-shaped 400 whose ``param`` points at the problem.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from invoker.json_schema import (
    MAX_PATTERN_SECONDS,
    PatternTimeout,
    SchemaLimitError,
    check_schema_structure,
    schema_validator,
    validation_errors,
)
from invoker.json_values import JSONValueError, check_json_value

MAX_FUNCTIONS = 128  # function definitions in one request (OpenAI's limit for tools)
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
PARAMETER_KEYS_FIRST = ("type", "properties", "required")


class FunctionSchemaError(ValueError):
    """A function definition (or its tools wrapper) is malformed; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def functions_from_tools(tools: list[dict], *, field: str = "tools") -> list[dict]:
    """OpenAI ``tools`` ([{"type": "function", "function": {...}}]) -> validated function defs."""
    if not isinstance(tools, list):
        raise FunctionSchemaError(field, "must be a list of tools")
    _check_count(tools, field=field)
    functions = [_unwrap_tool(tool, field=f"{field}[{index}]") for index, tool in enumerate(tools)]
    fields = [f"{field}[{index}].function" for index in range(len(tools))]
    return _validate_all(functions, fields=fields)


def validate_functions(functions: list[dict], *, field: str = "functions") -> list[dict]:
    """Check function defs like OpenAI and return normalized copies (stable key order).

    An empty list is accepted and returned as ``[]`` (rendered as "no functions").
    """
    if not isinstance(functions, list):
        raise FunctionSchemaError(field, "must be a list of function definitions")
    _check_count(functions, field=field)
    fields = [f"{field}[{index}]" for index in range(len(functions))]
    return _validate_all(functions, fields=fields)


def validate_arguments(arguments: dict, *, function: dict) -> list[str]:
    """Errors of call ``arguments`` against ``function["parameters"]``; ``[]`` when valid.

    Never fetches anything (a reference that is not local is an error, not a request), never raises on
    deep arguments, and gives pattern matching ``MAX_PATTERN_SECONDS`` in all (invoker.json_schema)."""
    if not isinstance(arguments, dict):
        return [f"arguments: must be a JSON object, got {_json_type(arguments)}"]
    schema = function.get("parameters") or default_parameters()
    try:
        found = validation_errors(schema_validator(schema), arguments)
    except RecursionError:
        return ["arguments: nested too deeply to validate"]
    except PatternTimeout:
        return [f"arguments: matching the schema's patterns took over {MAX_PATTERN_SECONDS:g} s; not validated"]
    except referencing.exceptions.Unresolvable as err:
        return [f"arguments: the schema has a reference that does not resolve here ({err}); not validated"]
    errors = sorted(found, key=lambda error: list(map(str, error.absolute_path)))
    return [f"{_join_path('arguments', error.absolute_path)}: {error.message}" for error in errors]


def default_parameters() -> dict:
    """The parameters of a function that takes none."""
    return {"type": "object", "properties": {}}


def _unwrap_tool(tool: Any, *, field: str) -> Any:
    if not isinstance(tool, dict):
        raise FunctionSchemaError(field, "must be an object")
    if tool.get("type") != "function":
        raise FunctionSchemaError(f"{field}.type", f"must be 'function', got {tool.get('type')!r}")
    if "function" not in tool:
        raise FunctionSchemaError(f"{field}.function", "is required")
    return tool["function"]


def _validate_all(functions: list, *, fields: list[str]) -> list[dict]:
    normalized = [_validate_function(function, field=field) for function, field in zip(functions, fields)]
    _check_unique_names(normalized, fields=fields)
    return normalized


def _check_count(functions: list, *, field: str) -> None:
    if len(functions) > MAX_FUNCTIONS:
        raise FunctionSchemaError(field, f"at most {MAX_FUNCTIONS} functions are accepted, got {len(functions)}")


def _validate_function(function: Any, *, field: str) -> dict:
    if not isinstance(function, dict):
        raise FunctionSchemaError(field, f"must be an object, got {_json_type(function)}")
    try:
        check_json_value(function, field=field)  # lone surrogates, NaN, nesting: before anything recursive
    except JSONValueError as err:
        raise FunctionSchemaError(err.field, err.message) from None
    name = _check_name(function.get("name"), field=f"{field}.name")
    normalized: dict[str, Any] = {"name": name}
    description = function.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise FunctionSchemaError(f"{field}.description", f"must be a string, got {_json_type(description)}")
        normalized["description"] = description
    normalized["parameters"] = _check_parameters(function.get("parameters"), field=f"{field}.parameters")
    return normalized


def _check_name(name: Any, *, field: str) -> str:
    if name is None:
        raise FunctionSchemaError(field, "is required")
    if not isinstance(name, str):
        raise FunctionSchemaError(field, f"must be a string, got {_json_type(name)}")
    if not NAME_PATTERN.fullmatch(name):
        raise FunctionSchemaError(
            field, f"{name!r} must be 1 to 64 characters of a-z, A-Z, 0-9, underscore or dash"
        )
    return name


def _check_unique_names(functions: list[dict], *, fields: list[str]) -> None:
    first_seen: dict[str, str] = {}
    for function, field in zip(functions, fields):
        name = function["name"]
        if name in first_seen:
            raise FunctionSchemaError(
                f"{field}.name", f"duplicate function name {name!r} (first defined at {first_seen[name]})"
            )
        first_seen[name] = field


def _check_parameters(parameters: Any, *, field: str) -> dict:
    if parameters is None:
        return default_parameters()
    if not isinstance(parameters, dict):
        raise FunctionSchemaError(field, f"must be a JSON Schema object, got {_json_type(parameters)}")
    if parameters.get("type") != "object":
        raise FunctionSchemaError(f"{field}.type", f"must be 'object', got {parameters.get('type')!r}")
    properties = parameters.get("properties", {})
    _check_properties(properties, field=f"{field}.properties")
    if "required" in parameters:
        _check_required(parameters["required"], properties=properties, field=f"{field}.required")
    try:
        check_schema_structure(parameters)  # size, depth, references: before the recursive meta-schema check
    except SchemaLimitError as err:
        raise FunctionSchemaError(field + err.path, err.message) from None
    _check_json_schema(parameters, field=field)
    return _ordered_parameters(parameters)


def _check_properties(properties: Any, *, field: str) -> None:
    if not isinstance(properties, dict):
        raise FunctionSchemaError(field, f"must be an object mapping names to schemas, got {_json_type(properties)}")
    for name, schema in properties.items():
        if not isinstance(schema, dict):
            raise FunctionSchemaError(f"{field}.{name}", f"must be a schema object, got {_json_type(schema)}")


def _check_required(required: Any, *, properties: dict, field: str) -> None:
    if not isinstance(required, list):
        raise FunctionSchemaError(field, f"must be a list of property names, got {_json_type(required)}")
    for index, name in enumerate(required):
        if not isinstance(name, str):
            raise FunctionSchemaError(f"{field}[{index}]", f"must be a string, got {_json_type(name)}")
        if name not in properties:
            raise FunctionSchemaError(f"{field}[{index}]", f"{name!r} is not one of the properties")


def _check_json_schema(schema: dict, *, field: str) -> None:
    meta_validator = Draft202012Validator(
        Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    error = best_match(meta_validator.iter_errors(schema))
    if error is not None:
        raise FunctionSchemaError(_join_path(field, error.absolute_path), f"invalid JSON Schema: {error.message}")


def _ordered_parameters(parameters: dict) -> dict:
    ordered = {"type": "object", "properties": copy.deepcopy(parameters.get("properties", {}))}
    if "required" in parameters:
        ordered["required"] = list(parameters["required"])
    for key, value in parameters.items():
        if key not in PARAMETER_KEYS_FIRST:
            ordered[key] = copy.deepcopy(value)
    return ordered


def _join_path(field: str, path: Iterable[Any]) -> str:
    for part in path:
        field += f"[{part}]" if isinstance(part, int) else f".{part}"
    return field


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)

