"""The chat-completions API with a scripted runtime (no model): shapes, tool choice, parameters, errors."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serve_minimal.app import create_app
from serve_minimal.settings import ServerSettings
from server_support import GET_TIME, GET_WEATHER, ScriptedRuntime, call_output, continuation, text_output

USER = [{"role": "user", "content": "Can you check what is the time in Singapore?"}]
TOOLS = [{"type": "function", "function": GET_TIME}, {"type": "function", "function": GET_WEATHER}]


def client_for(runtime, **settings) -> TestClient:
    return TestClient(create_app(runtime=runtime, settings=ServerSettings(model_name="tiny-test", **settings)))


def post(client, body, *, path="/v1/chat/completions", **kwargs):
    return client.post(path, json={"model": "tiny-test", **body}, **kwargs)


def assert_error(response, status, *, param=None, code=None, contains=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    if contains is not None:
        assert contains in error["message"]
    assert "Traceback" not in response.text
    return error


# --- answers -------------------------------------------------------------------------------------


def test_text_answer_has_openai_shape_and_usage():
    runtime = ScriptedRuntime(text_output("The time is 08:00 AM."))
    response = post(client_for(runtime), {"messages": USER})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny-test"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "The time is 08:00 AM."},
                                "logprobs": None, "finish_reason": "stop"}]
    prompt, params = runtime.calls[0]
    assert prompt.endswith('ASSISTANT: ```{"content":')  # the opening the grammar forces is prefilled
    chunks = -(-len(continuation(prompt, text_output("The time is 08:00 AM."))) // runtime.chunk_chars)  # a token a chunk
    assert body["usage"] == {"prompt_tokens": runtime.count_tokens(prompt), "completion_tokens": chunks,
                             "total_tokens": runtime.count_tokens(prompt) + chunks}


@pytest.mark.parametrize("stream", [False, True])
def test_server_timing_says_where_the_time_before_the_first_chunk_went(stream):
    runtime = ScriptedRuntime(text_output("The time is 08:00 AM."), delay=0.05)  # 50 ms before each chunk
    response = post(client_for(runtime), {"messages": USER, "stream": stream})
    assert response.status_code == 200
    parts = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    assert list(parts) == ["plan", "queue", "first-token"]
    durations = {name: float(value) for name, value in parts.items()}
    assert 50 <= durations["first-token"] < 1000
    assert 0 <= durations["plan"] < 1000 and 0 <= durations["queue"] < 1000


def test_legacy_functions_get_a_function_call():
    runtime = ScriptedRuntime(call_output("get_time", {"location": "Singapore", "format": "12-hour"}))
    body = post(client_for(runtime), {"messages": USER, "functions": [GET_TIME]}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"] == {"role": "assistant", "content": None, "function_call": {
        "name": "get_time", "arguments": '{"location": "Singapore", "format": "12-hour"}'}}
    prompt, _ = runtime.calls[0]
    assert '"name": "get_time"' in prompt and prompt.endswith('\nASSISTANT: ```{"content":')


def test_tools_get_tool_calls_with_ids():
    runtime = ScriptedRuntime(call_output("get_weather", {"city": "Paris"}))
    body = post(client_for(runtime), {"messages": USER, "tools": TOOLS}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert choice["message"]["content"] is None and "function_call" not in choice["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
def test_routes_answer_with_and_without_v1(path):
    body = post(client_for(ScriptedRuntime(text_output("hi"))), {"messages": USER}, path=path).json()
    assert body["choices"][0]["message"]["content"] == "hi"


@pytest.mark.parametrize("path", ["/v1/models", "/models"])
def test_models_lists_the_served_model(path):
    body = client_for(ScriptedRuntime()).get(path).json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [("tiny-test", "model")]


def test_health_reports_the_model_and_the_queue():
    body = client_for(ScriptedRuntime()).get("/health").json()
    assert body == {"status": "ok", "model": "tiny-test", "format": "fp16", "runtime": "scripted", "running": 0, "waiting": 0}


def test_output_that_is_not_invoker_json_comes_back_as_text_and_is_counted():
    client = client_for(ScriptedRuntime("I am not JSON at all"), constrained=False)  # only a free model can
    body = post(client, {"messages": USER, "functions": [GET_TIME]}).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "I am not JSON at all"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "invoker_invalid_outputs_total 1.0" in client.get("/metrics").text


def test_a_call_cut_by_max_tokens_returns_the_partial_call_with_length():
    runtime = ScriptedRuntime(call_output("get_time", {"location": "Singapore"}), chunk_chars=4)
    body = post(client_for(runtime), {"messages": USER, "functions": [GET_TIME], "max_tokens": 20}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["function_call"]["name"] == "get_time"
    assert '{"location": "Sing'.startswith(choice["message"]["function_call"]["arguments"][:5])


def test_a_forced_call_cut_inside_its_name_is_empty_content_with_length_and_not_counted_invalid():
    runtime = ScriptedRuntime('get_time", "arguments": "{}"}}```', chunk_chars=4)
    client = client_for(runtime)
    tools = [{"type": "function", "function": GET_TIME}]
    cut = post(client, {"messages": USER, "tools": tools, "tool_choice": "required", "max_tokens": 1}).json()
    assert cut["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": "length"}
    named = post(client, {"messages": USER, "tools": tools, "tool_choice": "required", "max_tokens": 3}).json()
    assert named["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "get_time", "arguments": ""}
    assert named["choices"][0]["finish_reason"] == "length"
    metrics = client.get("/metrics").text
    assert "invoker_invalid_outputs_total 0.0" in metrics and "invoker_schema_invalid_calls_total 0.0" in metrics


# --- tool choice -----------------------------------------------------------------------------------


def test_none_renders_without_functions_and_never_returns_a_call():
    runtime = ScriptedRuntime(call_output("get_time", {"location": "x"}))
    body = post(client_for(runtime), {"messages": USER, "functions": [GET_TIME], "function_call": "none"}).json()
    prompt, params = runtime.calls[0]
    assert prompt.startswith("Available Functions:\nNone\n\n")
    assert "function_call" not in body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "call" not in params.grammar.split("\n")[0]  # the grammar allows text only


def test_forced_function_prefills_the_call_and_constrains_its_arguments():
    runtime = ScriptedRuntime('{\\"location\\": \\"Singapore\\"}"}}```')  # the model continues after the prefill
    body = post(client_for(runtime), {"messages": USER, "functions": [GET_TIME, GET_WEATHER],
                                      "function_call": {"name": "get_time"}}).json()
    prompt, params = runtime.calls[0]
    assert prompt.endswith('\nASSISTANT: ```{"content": null, "function_call": {"name": "get_time", "arguments": "')
    assert params.grammar.startswith("root ::= f0-args ")
    assert body["choices"][0]["message"]["function_call"] == {"name": "get_time", "arguments": '{"location": "Singapore"}'}
    assert body["choices"][0]["finish_reason"] == "function_call"


def test_named_tool_choice_and_required():
    runtime = ScriptedRuntime('get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}}```')
    body = post(client_for(runtime), {"messages": USER, "tools": TOOLS, "tool_choice": "required"}).json()
    prompt, _ = runtime.calls[0]
    assert prompt.endswith('{"content": null, "function_call": {"name": "')
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    runtime = ScriptedRuntime('{\\"city\\": \\"Oslo\\"}"}}```')
    named = {"type": "function", "function": {"name": "get_weather"}}
    body = post(client_for(runtime), {"messages": USER, "tools": TOOLS, "tool_choice": named}).json()
    assert body["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_forced_calls_work_with_constraints_off_too():
    runtime = ScriptedRuntime('{\\"location\\": \\"Oslo\\"}"}}```')
    body = post(client_for(runtime), {"messages": USER, "functions": [GET_TIME], "function_call": {"name": "get_time"},
                                      "constrained": False}).json()
    assert runtime.calls[0][1].grammar is None
    assert body["choices"][0]["message"]["function_call"]["arguments"] == '{"location": "Oslo"}'


def test_constrained_decoding_is_on_by_default_and_can_be_turned_off():
    runtime = ScriptedRuntime(text_output("ok"))
    client = client_for(runtime)
    post(client, {"messages": USER, "functions": [GET_TIME]})
    post(client, {"messages": USER, "functions": [GET_TIME], "constrained": False})
    assert runtime.calls[0][1].grammar.startswith("root ::= ")
    assert runtime.calls[1][1].grammar is None
    off = ScriptedRuntime(text_output("ok"))
    client = client_for(off, constrained=False)
    post(client, {"messages": USER, "functions": [GET_TIME]})
    post(client, {"messages": USER, "functions": [GET_TIME], "constrained": True})
    assert off.calls[0][1].grammar is None and off.calls[1][1].grammar is not None


def test_follow_up_turns_render_function_and_tool_results():
    runtime = ScriptedRuntime(text_output("The time in Singapore is 08:00 AM."))
    client = client_for(runtime)
    call = {"name": "get_time", "arguments": '{"location": "Singapore"}'}
    legacy = USER + [{"role": "assistant", "content": None, "function_call": call},
                     {"role": "function", "name": "get_time", "content": "08:00 AM"}]
    body = post(client, {"messages": legacy, "functions": [GET_TIME]}).json()
    assert body["choices"][0]["message"]["content"] == "The time in Singapore is 08:00 AM."
    tools = USER + [{"role": "assistant", "content": None, "refusal": None,
                     "tool_calls": [{"id": "call_1", "type": "function", "function": call}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "08:00 AM"}]
    post(client, {"messages": tools, "tools": TOOLS})
    for prompt, _ in runtime.calls:
        assert 'ASSISTANT: ```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"Singapore\\"}"}}```' in prompt
        assert '\nFUNCTION: ```{"name": "get_time", "content": "08:00 AM"}```\nASSISTANT:' in prompt


def test_developer_messages_are_system_messages():
    runtime = ScriptedRuntime(text_output("ok"))
    post(client_for(runtime), {"messages": [{"role": "developer", "content": "Be brief."}] + USER})
    assert "\nSYSTEM: Be brief.\nUSER: " in runtime.calls[0][0]


# --- parameters ------------------------------------------------------------------------------------


def test_sampling_parameters_reach_the_runtime():
    runtime = ScriptedRuntime(text_output("ok"))
    client = client_for(runtime)
    post(client, {"messages": USER})
    post(client, {"messages": USER, "temperature": 0, "top_p": 0.5, "max_tokens": 7, "stop": ["\n", "END"], "seed": 3})
    default, chosen = runtime.calls[0][1], runtime.calls[1][1]
    assert (default.temperature, default.top_p, default.seed, default.stop) == (0.5, 1.0, None, ())
    assert default.max_tokens == 2048 - runtime.count_tokens(runtime.calls[0][0])  # the rest of the context
    assert (chosen.temperature, chosen.top_p, chosen.max_tokens, chosen.stop, chosen.seed) == (0, 0.5, 7, ("\n", "END"), 3)


def test_stop_strings_cut_the_answer():
    body = post(client_for(ScriptedRuntime("alpha beta END gamma"), constrained=False), {"messages": USER, "stop": "END"}).json()
    assert body["choices"][0]["message"]["content"] == "alpha beta"


@pytest.mark.parametrize(("field", "value", "param"), [
    ("temperature", 2.5, "temperature"),
    ("temperature", -1, "temperature"),
    ("temperature", "hot", "temperature"),
    ("top_p", 0, "top_p"),
    ("top_p", 1.5, "top_p"),
    ("max_tokens", 0, "max_tokens"),
    ("max_tokens", 1.5, "max_tokens"),
    ("n", 2, "n"),
    ("n", 1.5, "n"),
    ("stop", ["a", "b", "c", "d", "e"], "stop"),
    ("stop", [""], "stop[0]"),
    ("stop", ["x" * 257], "stop[0]"),
    ("stop", "x" * 900_000, "stop"),
    ("seed", "x", "seed"),
    ("stream", "yes", "stream"),
    ("presence_penalty", 1.0, "presence_penalty"),
    ("logprobs", True, "logprobs"),
    ("logit_bias", {"1": 5}, "logit_bias"),
    ("response_format", {"type": "json_schema"}, "response_format.type"),
    ("frequency_penalty", -0.5, "frequency_penalty"),
    ("unknown_option", 1, "unknown_option"),
])
def test_bad_or_unsupported_parameters_are_a_400_naming_the_field(field, value, param):
    response = post(client_for(ScriptedRuntime(text_output("x"))), {"messages": USER, field: value})
    assert_error(response, 400, param=param)


def test_max_tokens_beyond_the_context_is_refused_with_the_numbers():
    runtime = ScriptedRuntime(text_output("x"), context_length=100)
    error = assert_error(post(client_for(runtime), {"messages": USER, "max_tokens": 10**12}), 400, param="max_tokens",
                         code="context_length_exceeded")
    assert "context is 100 tokens" in error["message"] and "Ask for at most" in error["message"]


def test_a_prompt_longer_than_the_context_is_refused_with_the_numbers():
    runtime = ScriptedRuntime(text_output("x"), context_length=30)
    long = [{"role": "user", "content": "word " * 100}]
    error = assert_error(post(client_for(runtime), {"messages": long}), 400, param="messages", code="context_length_exceeded")
    assert "context is 30 tokens" in error["message"]
    assert runtime.calls == []


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "param", "contains"), [
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "'user'"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role", "required"),
    ({"messages": "hello"}, "messages", None),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", None),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages[0].content[0].type", "text"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "required"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].name", "name"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "nope"}]}, "messages[0].tool_call_id", "nope"),
    ({"messages": USER, "functions": [{"name": "bad name!"}]}, "functions[0].name", None),
    ({"messages": USER, "functions": [{"name": "f", "parameters": {"type": "array"}}]}, "functions[0].parameters.type", None),
    ({"messages": USER, "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}]},
     "functions[0].parameters.properties.a.type", None),
    ({"messages": USER, "functions": [GET_TIME, GET_TIME]}, "functions[1].name", "duplicate"),
    ({"messages": USER, "tools": [{"type": "retrieval"}]}, "tools[0].type", None),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"u": {"enum": []}}}}}]},
     "tools[0].function.parameters.properties.u.enum", None),
    ({"messages": USER, "functions": [GET_TIME], "function_call": {"name": "nope"}}, "function_call", "'nope'"),
    ({"messages": USER, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", None),
    ({"messages": USER, "tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"messages": USER, "function_call": "auto"}, "function_call", "needs functions"),
    ({"messages": USER, "functions": [GET_TIME], "tools": TOOLS}, "tools", "not both"),
    ({"messages": USER, "tools": [], "tool_choice": "required"}, "tool_choice", "at least one function"),
    ({"messages": USER, "stream_options": {"include_usage": True}}, "stream_options", None),
    ({"messages": USER, "model": 5}, "model", None),
])
def test_bad_requests_are_a_400_naming_the_field(body, param, contains):
    runtime = ScriptedRuntime(text_output("x"))
    response = post(client_for(runtime), body)
    assert_error(response, 400, param=param, contains=contains)
    assert runtime.calls == []


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"model": "m", "messages": [{"role": "user", "content": "x"}]'])
def test_bodies_that_are_not_a_json_object_are_a_400(raw):
    response = client_for(ScriptedRuntime()).post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400)


def test_unknown_routes_and_methods_get_openai_error_bodies():
    client = client_for(ScriptedRuntime())
    assert_error(client.get("/v1/nothing"), 404, code="not_found")
    not_allowed = client.get("/v1/chat/completions")
    assert_error(not_allowed, 405, code="method_not_allowed")
    assert not_allowed.headers["allow"] == "POST"


def test_bodies_over_the_limit_are_a_413_whether_announced_or_chunked():
    client = client_for(ScriptedRuntime(), max_body_bytes=1000)
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert_error(client.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"}), 413,
                 code="request_too_large")
    chunked = client.post("/v1/chat/completions", content=iter([big[:600].encode(), big[600:].encode()]),
                          headers={"content-type": "application/json"})
    assert_error(chunked, 413, code="request_too_large")
    assert post(client, {"messages": USER}).status_code == 200


def test_ten_megabyte_body_is_refused_before_parsing():
    client = client_for(ScriptedRuntime())
    huge = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * (10 << 20) + b'"}]}'
    assert_error(client.post("/v1/chat/completions", content=huge, headers={"content-type": "application/json"}), 413)


def test_runtime_failures_are_a_500_without_a_traceback():
    runtime = ScriptedRuntime(text_output("x"), fail_with=RuntimeError("CUDA exploded at 0xdeadbeef"))
    client = TestClient(create_app(runtime=runtime, settings=ServerSettings(model_name="m")), raise_server_exceptions=False)
    response = post(client, {"messages": USER})
    error = assert_error(response, 500, code="internal_error")
    assert "deadbeef" not in response.text and error["type"] == "server_error"
    assert client.get("/health").status_code == 200  # the server is still up, the slot released
    assert client.get("/health").json()["running"] == 0


def test_runtime_value_errors_before_output_are_a_400():
    runtime = ScriptedRuntime(text_output("x"), fail_with=ValueError("prompt has a bad token"))
    assert_error(post(client_for(runtime), {"messages": USER}), 400, contains="bad token")


# --- auth ------------------------------------------------------------------------------------------


def test_api_key_is_required_when_set():
    client = client_for(ScriptedRuntime(text_output("ok")), api_key="sekrit")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit"}, {"Authorization": "Basic sekrit"}):
        response = post(client, {"messages": USER}, headers=headers)
        assert_error(response, 401, code="invalid_api_key")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(client.get("/v1/models"), 401)
    assert_error(client.get("/metrics"), 401)
    ok = {"Authorization": "Bearer sekrit"}
    assert post(client, {"messages": USER}, headers=ok).status_code == 200
    assert client.get("/v1/models", headers=ok).status_code == 200
    assert client.get("/health").status_code == 200  # liveness stays open


def test_missing_key_is_reported_before_a_bad_body():
    client = client_for(ScriptedRuntime(), api_key="sekrit")
    assert_error(client.post("/v1/chat/completions", content=b"{bad", headers={"content-type": "application/json"}), 401)
    assert_error(post(client, {"messages": []}), 401)


# --- metrics -----------------------------------------------------------------------------------------


def test_metrics_count_requests_tokens_and_latency():
    client = client_for(ScriptedRuntime(text_output("The time is 08:00 AM.")))
    post(client, {"messages": USER})
    post(client, {"messages": []})
    text = client.get("/metrics").text
    assert 'invoker_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'invoker_requests_total{route="/v1/chat/completions",status="400"} 1.0' in text
    assert "invoker_completion_tokens_total 17.0" in text  # 66 characters, the 15 prefilled ones not generated, in chunks of 3
    assert 'invoker_completions_total{finish_reason="stop"} 1.0' in text
    assert "invoker_request_duration_seconds_count 1.0" in text


# --- hostile input is a 400 naming the field, before any generation (issue 12) --------------------------


def tool_with(parameters: dict, name: str = "get_time") -> list[dict]:
    return [{"type": "function", "function": {"name": name, "parameters": {"type": "object", **parameters}}}]


FORCED = {"type": "function", "function": {"name": "get_time"}}
CALLED = [{"role": "assistant", "content": None,
           "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": "time in \ud800?"}]}, "messages[0].content"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "description": "a\udfffb"}}]},
     "tools[0].function.description"),
    ({"messages": USER + CALLED + [{"role": "tool", "tool_call_id": "call_1", "content": "\ud83d"}]}, "messages[2].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": "\udc00"}]}]},
     "messages[0].content[1].text"),
    ({"messages": USER, "tools": tool_with({"properties": {"ci\ud800ty": {"type": "string"}}})},
     "tools[0].function.parameters.properties.ci\\ud800ty"),
    ({"messages": USER, "tools": tool_with({"properties": {"unit": {"enum": ["c", "\ud800"]}}})},
     "tools[0].function.parameters.properties.unit.enum[1]"),
    ({"messages": USER, "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"u": {"const": "\ud800"}}}}]},
     "functions[0].parameters.properties.u.const"),
    ({"messages": USER + [{"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{\"a\": \"\ud800\"}"}}]},
     "messages[1].function_call.arguments"),
    ({"messages": USER, "stop": ["\ud800"]}, "stop[0]"),
])
def test_lone_surrogates_are_a_400_naming_the_field_before_generation(body, param):
    """No runtime can encode a lone surrogate (llama.cpp's UTF-8 encode and transformers' tokenizer raised,
    a 500); the same text in ``stop`` was already a 400."""
    runtime = ScriptedRuntime(text_output("x"))
    response = client_for(runtime).post("/v1/chat/completions", content=json.dumps({"model": "m", **body}),
                                        headers={"content-type": "application/json"})
    error = assert_error(response, 400, param=param)
    assert "surrogate" in error["message"] or "unicode" in error["message"]
    assert runtime.calls == []


def nest(keyword: str, levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"anyOf": [schema]} if keyword == "anyOf" else {"type": "array", "items": schema} if keyword == "items" \
            else {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(("keyword", "levels"), [("anyOf", 50), ("properties", 100), ("items", 200)])
def test_deeply_nested_schemas_are_a_400_naming_the_field_before_generation(keyword, levels):
    runtime = ScriptedRuntime(text_output("x"))
    response = post(client_for(runtime), {"messages": USER, "tools": tool_with({"properties": {"x": nest(keyword, levels)}})})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith("tools[0].function.parameters.properties.x.")
    assert error["code"] in ("invalid_function", "invalid_value") and "levels deep" in error["message"]
    assert runtime.calls == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_dangling_ref_with_a_forced_call_is_a_400_before_generation(stream):
    runtime = ScriptedRuntime('{\\"location\\": \\"x\\"}"}}```')
    body = {"messages": USER, "tools": tool_with({"properties": {"location": {"$ref": "#/$defs/nope"}}}),
            "tool_choice": FORCED, "max_tokens": 300, "stream": stream}
    error = assert_error(post(client_for(runtime), body), 400, param="tools[0].function.parameters.properties.location.$ref",
                         code="invalid_function")
    assert "'#/$defs/nope' does not resolve" in error["message"]
    assert runtime.calls == []


def test_too_many_stop_strings_say_the_limit():
    error = assert_error(post(client_for(ScriptedRuntime(text_output("x"))), {"messages": USER, "stop": ["a"] * 100}),
                         400, param="stop")
    assert "at most 4" in error["message"] and "valid string" not in error["message"]


def test_a_length_bound_no_grammar_can_hold_is_a_400_naming_it():
    runtime = ScriptedRuntime(text_output("x"))
    body = {"messages": USER, "tools": tool_with({"properties": {"location": {"type": "string", "minLength": 100000}}}),
            "tool_choice": FORCED}
    assert_error(post(client_for(runtime), body), 400, param="tools[0].function.parameters.properties.location.minLength",
                 code="invalid_function", contains="1000")
    assert runtime.calls == []
    assert post(client_for(runtime), {**body, "constrained": False}).status_code == 200  # validated afterwards only


@pytest.mark.parametrize(("where", "param"), [
    (lambda deep: {"tools": tool_with({"properties": {"a": {"default": deep}}})}, "tools[0].function.parameters.properties.a.default[0]"),
    (lambda deep: {"functions": [{"name": "f", "extra": deep}]}, "functions[0].extra[0]"),
    (lambda deep: {"messages": USER + [{"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": {"a": deep}}}]},
     "messages[1].function_call.arguments.a[0]"),
])
def test_json_nested_past_the_limit_is_a_400_naming_the_field(where, param):
    """150 levels parse, but deepcopy, jsonschema and json.dumps recurse on them (500 deep was a 500)."""
    runtime = ScriptedRuntime(text_output("x"))
    body = {"messages": USER, **where(json.loads("[" * 500 + "]" * 500))}
    error = post(client_for(runtime), body).json()["error"]
    assert error["code"] == "invalid_value" and "nested more than 100 levels" in error["message"]
    assert error["param"].startswith(param)
    assert runtime.calls == []


def test_ten_thousand_deep_json_is_invalid_json_with_a_code():
    client = client_for(ScriptedRuntime(text_output("x")))
    raw = '{"model": "m", "messages": ' + "[" * 10_000 + "]" * 10_000 + "}"
    error = assert_error(client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"}),
                         400, code="invalid_json")
    assert "nested too deeply" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("arguments", ['{"location": "\\ud800"}', '{"location": ' + "[" * 3000 + "]" * 3000 + "}"])
def test_model_output_with_a_lone_surrogate_escape_or_deep_arguments_is_answered(stream, arguments):
    """What a model writes can be steered by the client: a \\ud800 escape in its JSON, or arguments nested
    thousands deep, come back as written (\\u escapes in the JSON) — never a 500."""
    from invoker.constrain import json_string_body

    runtime = ScriptedRuntime(json_string_body(arguments) + '"}}```', chunk_chars=200)
    client = TestClient(create_app(runtime=runtime, settings=ServerSettings(model_name="m")), raise_server_exceptions=False)
    response = post(client, {"messages": USER, "tools": TOOLS, "tool_choice": FORCED, "constrained": False, "stream": stream})
    assert response.status_code == 200, response.text
    if stream:
        assert '"server_error"' not in response.text and response.text.rstrip().endswith("data: [DONE]")
        chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
        streamed = "".join(c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
                           for c in chunks if c["choices"])
        assert streamed == json.loads(json.dumps(arguments))
    else:
        assert response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == arguments
    invalid = "0.0" if "ud800" in arguments else "1.0"  # a lone surrogate is still a string; 3000 deep is not JSON here
    assert f"invoker_schema_invalid_calls_total {invalid}" in client.get("/metrics").text
