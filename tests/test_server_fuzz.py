"""Fuzzing the chat API (bounded): no input makes it answer 5xx, every error is an OpenAI error body.

Two generators, both in-process through ASGI with a scripted runtime, so they are fast:

- schemathesis on the app's own OpenAPI schema: every operation, responses match the schema;
- hypothesis on hostile chat requests the OpenAPI schema cannot describe (function ``parameters`` are
  free-form objects there): lone surrogates in every kind of text (content, text parts, tool results,
  descriptions, property names, enum values, stop strings), schemas nested up to 300 deep through
  ``anyOf``/``properties``/``items``/``not``/``$ref``, JSON values nested up to 1,500 deep, and ``$ref``s —
  local, dangling, anchors, URLs and files — with forced calls whose arguments get validated. No request
  may open a network connection.

Schemathesis's check that every schema-valid request is accepted is left out: some rules are not
expressible in OpenAPI — a tool message's ``tool_call_id`` must name an earlier call, the prompt must
fit the model's context, function ``parameters`` must be valid JSON Schema — and those are 400s."""

from __future__ import annotations

import json
import socket

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from invoker.constrain import json_string_body
from serve_minimal.app import create_app
from serve_minimal.settings import ServerSettings
from server_support import ScriptedRuntime, call_output

APP = create_app(
    runtime=ScriptedRuntime(call_output("get_time", {"location": "Singapore"}), context_length=512),
    settings=ServerSettings(model_name="fuzz", max_body_bytes=64 << 10),
)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)


@SCHEMA.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_server_fail(case):
    response = case.call()
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert isinstance(error["code"], str) and error["code"], error  # clients branch on the code
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


# --- hostile requests ----------------------------------------------------------------------------

DEEP = "<<DEEP:{}>>"  # replaced in the serialized body by a JSON array nested that many levels
LONE_SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\ud83d", "x\ud83d\ude00\udbff"])
PLAIN = st.one_of(st.sampled_from(["", "hi", "Zürich", "😀"]), st.text(max_size=6))
SURROGATE_TEXT = st.one_of(LONE_SURROGATES, st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2))
TEXT = st.integers(0, 24).flatmap(lambda roll: SURROGATE_TEXT if roll == 0 else PLAIN)  # 1 in 25; a request has several
NAMES = st.one_of(st.sampled_from(["x", "city", "$ref", "anyOf", "0"]), TEXT)
REFS = st.sampled_from([
    "#", "#/$defs/a", "#/$defs/b", "#/properties/x", "#/%24defs/a", "#/$defs/nope", "#/$defs/a/type", "#anchor",
    "#/", "http://127.0.0.1:9/evil.json", "https://example.invalid/s.json", "file:///etc/passwd", "evil.json",
    "//127.0.0.1:9/x", "\ud800",
])
DEEP_VALUE = st.integers(0, 4).flatmap(  # 1 in 5 past the limit of 100 levels
    lambda roll: st.integers(100, 1500) if roll == 0 else st.integers(1, 90)).map(DEEP.format)
LEAVES = st.one_of(
    st.just({}), st.booleans(),
    st.sampled_from(["string", "integer", "number", "boolean", "null", "object", "array"]).map(lambda t: {"type": t}),
    st.fixed_dictionaries({"type": st.just("string")}, optional={
        "minLength": st.integers(0, 3000), "maxLength": st.integers(0, 3000), "pattern": st.sampled_from(["^a", "["]),
        "enum": st.lists(st.one_of(TEXT, DEEP_VALUE), min_size=1, max_size=3)}),
    REFS.map(lambda ref: {"$ref": ref}),
    st.fixed_dictionaries({"default": DEEP_VALUE}),
)
KEYWORDS = ("anyOf", "properties", "items", "not", "allOf", "$ref")


def nest(leaf, keyword: str, depth: int) -> dict:
    """``leaf`` wrapped ``depth`` times in ``keyword`` (``$ref``: a chain of ``$defs`` each pointing at the next)."""
    if keyword == "$ref":
        defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(depth)}
        defs[f"d{depth}"] = leaf if isinstance(leaf, dict) else {}
        return {"$ref": "#/$defs/d0", "$defs": defs}
    schema = leaf
    for _ in range(depth):
        schema = {"anyOf": [schema]} if keyword == "anyOf" else {"allOf": [schema]} if keyword == "allOf" else \
            {"not": schema} if keyword == "not" else {"type": "array", "items": schema} if keyword == "items" else \
            {"type": "object", "properties": {"a": schema}}
    return schema


def with_defs(pair) -> dict:
    schema, definition = pair
    return {**(schema if isinstance(schema, dict) else {}), "$defs": {"a": definition}}


SHALLOW_SCHEMAS = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(lambda options: {"anyOf": options}),
    inner.map(lambda item: {"type": "array", "items": item}),
    st.dictionaries(NAMES, inner, max_size=3).map(lambda props: {"type": "object", "properties": props}),
    st.tuples(inner, inner).map(with_defs),
), max_leaves=12)
DEEP_SCHEMAS = st.builds(nest, LEAVES, st.sampled_from(KEYWORDS), st.one_of(st.integers(20, 40), st.integers(41, 300)))
SCHEMAS = st.integers(0, 4).flatmap(lambda roll: DEEP_SCHEMAS if roll == 0 else SHALLOW_SCHEMAS)  # 1 in 5 deep
PARAMETERS = st.builds(
    lambda props, defs, required: {"type": "object", "properties": props, "$defs": defs,
                                    **({"required": list(props)[:1]} if required else {})},
    st.dictionaries(NAMES, SCHEMAS, min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), SCHEMAS, max_size=2),
    st.booleans(),
)
FUNCTIONS = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["f0", "f1"])},
                                           optional={"description": TEXT, "parameters": PARAMETERS}),
                     min_size=1, max_size=2, unique_by=lambda function: function["name"])
CALL = {"id": "call_1", "type": "function", "function": {"name": "f0", "arguments": "{}"}}
TEXT_PARTS = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), min_size=1, max_size=2)
TOOL_CALLS = st.just([CALL]) | TEXT.map(lambda arguments: [{**CALL, "function": {"name": "f0", "arguments": arguments}}])
MESSAGES = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]), "content": TEXT}),
    st.fixed_dictionaries({"role": st.just("user"), "content": TEXT_PARTS}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.none(), "tool_calls": TOOL_CALLS}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": st.just("call_1"), "content": TEXT}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.none(), "function_call": st.builds(
        lambda deep: {"name": "f0", "arguments": {"x": deep}}, DEEP_VALUE)}),
), min_size=1, max_size=3)
TOOLS = FUNCTIONS.map(lambda functions: [{"type": "function", "function": function} for function in functions])
REQUESTS = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": MESSAGES, "tools": TOOLS},
    optional={
        "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "function": {"name": "f0"}}]),
        "max_tokens": st.integers(1, 300), "stream": st.booleans(), "constrained": st.booleans(),
        "stop": st.one_of(TEXT, st.lists(TEXT.filter(bool), max_size=4), st.lists(TEXT, max_size=6)), "user": TEXT,
    },
)
# What the scripted model writes as the call's arguments (the answer's rest is shaped by the prefill).
ARGUMENTS = st.sampled_from([
    '{"x": "a"}', '{}', '{"x": "\\ud800"}', '{"x": ' + "[" * 2000 + "]" * 2000 + "}", '{"a": {"a": [1, 2]}}', "[1]",
])


class Reply:
    """The scripted model's output for the current example: a call to f0 that continues any prefill."""

    arguments = "{}"

    def __call__(self, prompt: str, params) -> str:
        escaped = json_string_body(self.arguments)
        if prompt.endswith('"arguments": "'):
            return escaped + '"}}```'
        if prompt.endswith('"name": "'):
            return 'f0", "arguments": "' + escaped + '"}}```'
        return ' ```{"content": null, "function_call": {"name": "f0", "arguments": "' + escaped + '"}}```'


REPLY = Reply()
HOSTILE = TestClient(create_app(runtime=ScriptedRuntime(REPLY, context_length=100_000, chunk_chars=64),
                                settings=ServerSettings(model_name="fuzz")), raise_server_exceptions=False)


def serialized(body: dict) -> bytes:
    """The body as JSON text (ASCII: lone surrogates as \\uXXXX escapes), deep placeholders expanded."""
    text = json.dumps(body, ensure_ascii=True)
    while (start := text.find('"<<DEEP:')) >= 0:
        end = text.index('>>"', start)
        depth = int(text[start + len('"<<DEEP:'): end])
        text = text[:start] + "[" * depth + "]" * depth + text[end + 3:]
    return text.encode("ascii")


@given(body=REQUESTS, arguments=ARGUMENTS)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_hostile_requests_never_get_a_5xx_or_touch_the_network(body, arguments):
    REPLY.arguments = arguments
    attempts = []
    real_connect, real_create = socket.socket.connect, socket.create_connection
    socket.socket.connect = lambda sock, address, *a: attempts.append(address) or real_connect(sock, address, *a)
    socket.create_connection = lambda address, *a, **k: attempts.append(address) or real_create(address, *a, **k)
    try:
        response = HOSTILE.post("/v1/chat/completions", content=serialized(body),
                                headers={"content-type": "application/json"})
    finally:
        socket.socket.connect, socket.create_connection = real_connect, real_create
    assert attempts == []
    event(f"status {response.status_code}" + (f" {response.json()['error']['code']}" if response.status_code >= 400 else ""))
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert isinstance(error["code"], str) and error["code"], error  # clients branch on the code
    elif body.get("stream"):
        assert response.text.rstrip().endswith("data: [DONE]") and '"server_error"' not in response.text, response.text
    else:
        assert response.json()["object"] == "chat.completion"


# --- schema work an untrusted client can cause -----------------------------------------------------


def one_property(schema: dict) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"a": schema}}}]}


@pytest.mark.parametrize(("body", "param", "reason"), [
    # (?:a{65535}){65535}: the regex engine would expand the repeats (23 GB before the kernel killed it)
    (one_property({"type": "string", "enum": ["a"], "pattern": "(?:a{65535}){65535}"}),
     "functions[0].parameters.properties.a.pattern", "expand to more than"),
    (one_property({"type": "string", "enum": ["a"], "pattern": "(?:a{5000}){300}"}),
     "functions[0].parameters.properties.a.pattern", "expand to more than"),
    # nested groups: Python's regex parser recursed past its limit inside jsonschema's format check (a 500)
    (one_property({"type": "string", "pattern": "(" * 300 + "a" + ")" * 300}),
     "functions[0].parameters.properties.a.pattern", "nested more than"),
    ({**one_property({"type": "string"}), "functions": [{"name": "f", "parameters": {
        "type": "object", "patternProperties": {"(" * 300 + "a" + ")" * 300: {"type": "string"}}}}]},
     "functions[0].parameters.patternProperties", "nested more than"),
    (one_property({"type": "string", "pattern": "a" * 1001}), "functions[0].parameters.properties.a.pattern", "1001 characters"),
    (one_property({"type": "string", "pattern": "(unclosed"}), "functions[0].parameters.properties.a.pattern", "not a regular expression"),
    # $ref chains that never reach a schema: llama.cpp refused the left-recursive grammar, with param and code null
    ({**one_property({"$ref": "#/$defs/a"}), "functions": [{"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/a"}}}}]},
     "functions[0].parameters.$defs.a.$ref", "#/$defs/a → #/$defs/a"),
    ({**one_property({"$ref": "#/$defs/a"}), "functions": [{"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}}]},
     "functions[0].parameters.$defs.a.$ref", "#/$defs/a → #/$defs/b → #/$defs/a"),
    ({**one_property({}), "functions": [{"name": "f", "parameters": {"type": "object", "$ref": "#"}}]},
     "functions[0].parameters.$ref", "a $ref cycle"),
])
def test_hostile_patterns_are_refused_before_any_engine_compiles_them(body, param, reason):
    response = HOSTILE.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith(param) and reason in error["message"] and error["code"], error


def test_enum_values_share_one_pattern_budget(monkeypatch):
    """^(a|a)*$ against 15 enum values like "aaaa…!": once the budget is spent, no further match starts
    (it was 1 s per value: 5 values took 5.3 s), and the values are kept, unjudged."""
    from invoker import json_schema
    from invoker.constrain import answer_grammar
    from invoker.functions import validate_functions

    started = []
    compiled = json_schema._compiled

    class Counting:
        def __init__(self, pattern):
            self.pattern = compiled(pattern)

        def search(self, text, **options):
            started.append(text)
            return self.pattern.search(text, **options)

    monkeypatch.setattr(json_schema, "_compiled", Counting)
    monkeypatch.setattr(json_schema, "MAX_PATTERN_SECONDS", 0.05)
    values = ["a" * (26 + i) + "!" for i in range(15)]
    functions = validate_functions(one_property({"type": "string", "pattern": "^(a|a)*$", "enum": values})["functions"])
    grammar = answer_grammar(functions, choice="function", name="f").grammar
    assert len(started) == 1 and all(value in grammar for value in values)


def test_compiled_patterns_are_not_kept_unbounded():
    from invoker.json_schema import COMPILED_PATTERNS, _compiled, pattern_search

    for n in range(COMPILED_PATTERNS + 40):
        assert pattern_search(f"^x{n}$", f"x{n}")
    assert _compiled.cache_info().currsize <= COMPILED_PATTERNS
