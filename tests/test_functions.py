"""Function definitions are checked like OpenAI does, and every error names its field."""

import json

import pytest

from invoker.functions import FunctionSchemaError, functions_from_tools, validate_arguments, validate_functions
from samples import GET_TIME



def schema_error(functions, **kwargs) -> FunctionSchemaError:
    with pytest.raises(FunctionSchemaError) as caught:
        validate_functions(functions, **kwargs)
    return caught.value


def test_valid_function_comes_back_equal_and_as_a_copy():
    [normalized] = validate_functions([GET_TIME])
    assert normalized == GET_TIME
    assert json.dumps(normalized) == json.dumps(GET_TIME)
    normalized["parameters"]["properties"]["location"]["type"] = "integer"
    assert GET_TIME["parameters"]["properties"]["location"]["type"] == "string"


def test_normalized_key_order_is_stable():
    messy = {
        "parameters": {"required": ["a"], "additionalProperties": False, "properties": {"a": {"type": "string"}}, "type": "object"},
        "strict": True,
        "description": "d",
        "name": "f",
    }
    [normalized] = validate_functions([messy])
    assert list(normalized) == ["name", "description", "parameters"]
    assert list(normalized["parameters"]) == ["type", "properties", "required", "additionalProperties"]


def test_name_may_be_64_characters():
    assert validate_functions([{"name": "a" * 64}])[0]["name"] == "a" * 64


def test_optional_description_and_parameters():
    assert validate_functions([{"name": "ping"}]) == [{"name": "ping", "parameters": {"type": "object", "properties": {}}}]
    assert validate_functions([{"name": "ping", "description": None, "parameters": None}]) == [
        {"name": "ping", "parameters": {"type": "object", "properties": {}}}
    ]
    assert validate_functions([{"name": "p", "parameters": {"type": "object"}}])[0]["parameters"] == {
        "type": "object",
        "properties": {},
    }


def test_empty_list_is_no_functions():
    assert validate_functions([]) == []


@pytest.mark.parametrize(
    ("functions", "field", "fragment"),
    [
        ({"name": "f"}, "functions", "must be a list"),
        (["get_time"], "functions[0]", "must be an object"),
        ([{"description": "no name"}], "functions[0].name", "is required"),
        ([{"name": 42}], "functions[0].name", "must be a string"),
        ([GET_TIME, {"name": "get time!"}], "functions[1].name", "1 to 64 characters"),
        ([{"name": "a" * 65}], "functions[0].name", "1 to 64 characters"),
        ([{"name": ""}], "functions[0].name", "1 to 64 characters"),
        ([{"name": "get_time\n"}], "functions[0].name", "1 to 64 characters"),
        ([{"name": "météo"}], "functions[0].name", "1 to 64 characters"),
        ([GET_TIME, {"name": "x"}, {"name": "get_time"}], "functions[2].name", "duplicate function name 'get_time'"),
        ([{"name": "f", "description": 3}], "functions[0].description", "must be a string"),
        ([{"name": "f", "parameters": "object"}], "functions[0].parameters", "must be a JSON Schema object"),
        ([{"name": "f", "parameters": {"type": "array"}}], "functions[0].parameters.type", "must be 'object'"),
        ([{"name": "f", "parameters": {"properties": {}}}], "functions[0].parameters.type", "must be 'object'"),
        ([{"name": "f", "parameters": {"type": "object", "properties": []}}], "functions[0].parameters.properties", "must be an object"),
        (
            [{"name": "f", "parameters": {"type": "object", "properties": {"city": "string"}}}],
            "functions[0].parameters.properties.city",
            "must be a schema object",
        ),
        (
            [{"name": "f", "parameters": {"type": "object", "properties": {"a": {}}, "required": "a"}}],
            "functions[0].parameters.required",
            "must be a list",
        ),
        (
            [{"name": "f", "parameters": {"type": "object", "properties": {"a": {}}, "required": ["a", "city"]}}],
            "functions[0].parameters.required[1]",
            "'city' is not one of the properties",
        ),
        (
            [GET_TIME, {"name": "f", "parameters": {"type": "object", "properties": {"city": {"type": "strin"}}}}],
            "functions[1].parameters.properties.city.type",
            "invalid JSON Schema",
        ),
        (
            [{"name": "f", "parameters": {"type": "object", "properties": {"n": {"type": "integer", "minimum": "0"}}}}],
            "functions[0].parameters.properties.n.minimum",
            "invalid JSON Schema",
        ),
        (
            [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "enum": "x"}}}}],
            "functions[0].parameters.properties.a.enum",
            "invalid JSON Schema",
        ),
    ],
)
def test_errors_name_the_field(functions, field, fragment):
    error = schema_error(functions)
    assert error.field == field
    assert fragment in error.message
    assert str(error) == f"{field}: {error.message}"
    assert isinstance(error, ValueError)


def test_field_prefix_is_configurable():
    assert schema_error([{"name": "bad name"}], field="request.functions").field == "request.functions[0].name"


def test_functions_from_tools_unwraps_and_validates():
    tools = [{"type": "function", "function": GET_TIME}, {"type": "function", "function": {"name": "ping"}}]
    assert functions_from_tools(tools) == [GET_TIME, {"name": "ping", "parameters": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize(
    ("tools", "field"),
    [
        ({"type": "function"}, "tools"),
        (["get_time"], "tools[0]"),
        ([{"type": "function", "function": GET_TIME}, {"type": "retrieval"}], "tools[1].type"),
        ([{"function": GET_TIME}], "tools[0].type"),
        ([{"type": "function"}], "tools[0].function"),
        ([{"type": "function", "function": {"name": "bad name"}}], "tools[0].function.name"),
        ([{"type": "function", "function": GET_TIME}, {"type": "function", "function": GET_TIME}], "tools[1].function.name"),
    ],
)
def test_tools_errors_name_the_field(tools, field):
    with pytest.raises(FunctionSchemaError) as caught:
        functions_from_tools(tools)
    assert caught.value.field == field


def test_validate_arguments_accepts_valid_arguments():
    assert validate_arguments({"location": "Singapore", "format": "12-hour"}, function=GET_TIME) == []
    assert validate_arguments({}, function={"name": "ping"}) == []


def test_validate_arguments_reports_each_problem_with_its_path():
    errors = validate_arguments({"format": "13-hour"}, function=GET_TIME)
    assert errors == [
        "arguments: 'location' is a required property",
        "arguments.format: '13-hour' is not one of ['12-hour', '24-hour']",
    ]


def test_validate_arguments_nested_and_non_object():
    function = {
        "name": "book",
        "parameters": {
            "type": "object",
            "properties": {"guests": {"type": "array", "items": {"type": "object", "properties": {"age": {"type": "integer"}}}}},
        },
    }
    assert validate_arguments({"guests": [{"age": 3}, {"age": "three"}]}, function=function) == [
        "arguments.guests[1].age: 'three' is not of type 'integer'"
    ]
    assert validate_arguments(["Singapore"], function=GET_TIME) == ["arguments: must be a JSON object, got array"]
