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


# --- untrusted schemas: references, size, depth, text (issue 12) --------------------------------


def with_parameters(parameters: dict, name: str = "f") -> list[dict]:
    return [{"name": name, "parameters": {"type": "object", **parameters}}]


@pytest.mark.parametrize(("ref", "contains"), [
    ("http://127.0.0.1:9/evil.json", "never fetched"),
    ("https://example.com/schemas/city.json#/$defs/city", "never fetched"),
    ("file:///etc/passwd", "never fetched"),
    ("city.json", "never fetched"),
    ("//example.com/x", "never fetched"),
    ("#city", "not anchors"),
    ("#/$defs/nope", "does not resolve"),
    ("#/$defs/city/type", "does not resolve"),  # a string, not a schema
    ("#/properties/unit/enum", "does not resolve"),
])
def test_references_must_be_local_pointers_to_a_subschema(ref, contains):
    error = schema_error(with_parameters({"properties": {"unit": {"enum": ["c"]}, "city": {"$ref": ref}},
                                          "$defs": {"city": {"type": "string"}}}))
    assert error.field == "functions[0].parameters.properties.city.$ref"
    assert contains in error.message


def test_local_references_that_resolve_are_accepted_and_validated():
    parameters = {"properties": {"home": {"$ref": "#/$defs/place"}, "tree": {"$ref": "#/$defs/node"},
                                 "%name": {"$ref": "#/$defs/a~1b"}, "same": {"$ref": "#/properties/home"}},
                  "$defs": {"place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                            "node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}},
                            "a/b": {"type": "integer"}}}
    [function] = validate_functions(with_parameters(parameters))
    assert validate_arguments({"home": {"city": "Oslo"}, "tree": {"children": [{"children": []}]}, "%name": 3}, function=function) == []
    assert validate_arguments({"home": {}}, function=function) == ["arguments.home: 'city' is a required property"]
    assert validate_arguments({"tree": {"children": [{"children": 5}]}}, function=function) == [
        "arguments.tree.children[0].children: 5 is not of type 'array'"]


def test_id_is_accepted_on_the_parameters_only():
    validate_functions(with_parameters({"$id": "https://example.com/f.json", "properties": {"a": {"type": "string"}}}))
    error = schema_error(with_parameters({"properties": {"a": {"$id": "https://example.com/a.json", "type": "string"}}}))
    assert error.field == "functions[0].parameters.properties.a.$id"


def test_validating_arguments_never_connects_anywhere():
    """Even for a schema that never went through validate_functions: a reference that is not local is an
    error in the result, not a request (the listener would see any connection)."""
    from server_support import SilentListener

    with SilentListener(hold=2.0) as listener:
        for ref in (f"{listener.url}/evil.json", f"{listener.url}/a.json#/b", "evil.json"):
            function = {"name": "f", "parameters": {"type": "object", "properties": {"a": {"$ref": ref}}}}
            [error] = validate_arguments({"a": "x"}, function=function)
            assert error.startswith("arguments: the schema has a reference that does not resolve here")
        for parameters in ({"type": "object", "$id": f"{listener.url}/f.json", "properties": {"a": {"$ref": "#/$defs/s"}},
                            "$defs": {"s": {"type": "string"}}},
                           {"type": "object", "$schema": f"{listener.url}/meta.json", "properties": {"a": {"type": "string"}}}):
            [function] = validate_functions([{"name": "f", "parameters": parameters}])
            assert validate_arguments({"a": "x"}, function=function) == []
            assert validate_arguments({"a": 1}, function=function) == ["arguments.a: 1 is not of type 'string'"]
    assert listener.connections == []


def nested(keyword: str, levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"anyOf": [schema]} if keyword == "anyOf" else {"not": schema} if keyword == "not" else \
            {"type": "array", "items": schema} if keyword == "items" else {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("keyword", ["anyOf", "properties", "items", "not"])
def test_schema_depth_is_limited_and_checked_before_anything_recursive(keyword):
    from invoker.json_schema import MAX_SCHEMA_DEPTH

    # the parameters are level 1, properties.x level 2: x's own nesting may add MAX_SCHEMA_DEPTH - 2
    validate_functions(with_parameters({"properties": {"x": nested(keyword, MAX_SCHEMA_DEPTH - 2)}}))
    error = schema_error(with_parameters({"properties": {"x": nested(keyword, MAX_SCHEMA_DEPTH - 1)}}))
    assert error.field.startswith("functions[0].parameters.properties.x.") and f"more than {MAX_SCHEMA_DEPTH} levels" in error.message
    for levels in (50, 100, 200):  # a RecursionError (500) in the meta-schema check before the limit existed
        assert "levels deep" in schema_error(with_parameters({"properties": {"x": nested(keyword, levels)}})).message


def test_depth_counts_through_reference_chains():
    chain = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(40)}
    chain["d40"] = {"type": "string"}
    error = schema_error(with_parameters({"properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": chain}))
    assert error.field.startswith("functions[0].parameters.$defs.d") and error.field.endswith(".$ref")
    assert "counting through $ref" in error.message
    fan = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(14)}
    fan["d14"] = {"type": "string"}  # 2^14 paths: refused by size, not walked forever
    assert "expand to more than" in schema_error(with_parameters({"properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": fan})).message


def test_schema_size_and_function_count_are_limited():
    from invoker.functions import MAX_FUNCTIONS
    from invoker.json_schema import MAX_SCHEMA_NODES

    error = schema_error(with_parameters({"properties": {f"p{i}": {"type": "string"} for i in range(MAX_SCHEMA_NODES)}}))
    assert error.field == "functions[0].parameters" and f"more than {MAX_SCHEMA_NODES} subschemas" in error.message
    error = schema_error([{"name": f"f{i}"} for i in range(MAX_FUNCTIONS + 1)])
    assert error.field == "functions" and str(MAX_FUNCTIONS) in error.message
    assert len(validate_functions([{"name": f"f{i}"} for i in range(MAX_FUNCTIONS)])) == MAX_FUNCTIONS


@pytest.mark.parametrize(("function", "field"), [
    ({"name": "f", "description": "\ud800"}, "functions[0].description"),
    ({"name": "f", "parameters": {"type": "object", "properties": {"\udc00x": {"type": "string"}}}},
     "functions[0].parameters.properties.\\udc00x"),
    ({"name": "f", "parameters": {"type": "object", "properties": {"u": {"enum": ["c", "\ud83d"]}}}},
     "functions[0].parameters.properties.u.enum[1]"),
    ({"name": "f", "parameters": {"type": "object", "properties": {"u": {"type": "number", "maximum": float("nan")}}}},
     "functions[0].parameters.properties.u.maximum"),
    ({"name": "f", "parameters": {"type": "object", "properties": {"u": {"default": json.loads("[" * 150 + "]" * 150)}}}},
     "functions[0].parameters.properties.u.default" + "[0]" * 96),  # the function itself is level 1 of 100
])
def test_text_a_tokenizer_cannot_encode_and_values_too_deep_are_refused_naming_the_field(function, field):
    error = schema_error([function])
    assert error.field == field
    error.field.encode("utf-8")  # the field itself can be sent back


def test_argument_validation_is_bounded_in_time_and_depth():
    import time

    function = {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "string", "pattern": "^(a|a)*$"}, "b": {}}}}
    started = time.perf_counter()
    errors = validate_arguments({"a": "a" * 27 + "!"}, function=function)  # Python's re: ~15 s, holding the GIL
    assert time.perf_counter() - started < 5
    assert errors == ["arguments: matching the schema's patterns took over 1 s; not validated"]
    assert validate_arguments({"a": "aaa"}, function=function) == []
    assert validate_arguments({"a": "ab"}, function=function) == ["arguments.a: 'ab' does not match '^(a|a)*$'"]
    recursive = {"name": "t", "parameters": {"type": "object", "properties": {"x": {"$ref": "#/$defs/n"}},
                                             "$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}}
    deep = json.loads('{"x": ' + "[" * 900 + "]" * 900 + "}")
    assert validate_arguments(deep, function=recursive) == ["arguments: nested too deeply to validate"]


def test_pattern_properties_and_additional_properties_match_through_the_safe_engine():
    function = {"name": "f", "parameters": {"type": "object", "properties": {"id": {"type": "integer"}},
                                            "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False}}
    assert validate_arguments({"id": 1, "x-tag": "a"}, function=function) == []
    assert validate_arguments({"x-tag": 5}, function=function) == ["arguments.x-tag: 5 is not of type 'string'"]
    assert validate_arguments({"other": 1}, function=function) == [
        "arguments: 'other' does not match any of the regexes: '^x-'"]
    plain = {"name": "g", "parameters": {"type": "object", "properties": {"a": {}}, "additionalProperties": False}}
    assert validate_arguments({"a": 1, "b": 2}, function=plain) == [
        "arguments: Additional properties are not allowed ('b' was unexpected)"]
