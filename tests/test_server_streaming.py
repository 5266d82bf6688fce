"""Streaming (SSE) answers: OpenAI's chunk shape, and the same message as the non-streaming answer."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from serve_minimal.app import create_app
from serve_minimal.settings import ServerSettings
from server_support import GET_TIME, GET_WEATHER, ScriptedRuntime, call_output, text_output

USER = [{"role": "user", "content": "What time is it in Singapore?"}]
TOOLS = [{"type": "function", "function": GET_TIME}, {"type": "function", "function": GET_WEATHER}]


def events(response) -> list:
    """The SSE ``data:`` payloads, JSON-decoded (``[DONE]`` kept as the string)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in response.text.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: ")
        data = block[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def stream(runtime, body, **settings) -> list:
    client = TestClient(create_app(runtime=runtime, settings=ServerSettings(model_name="m", **settings)))
    response = client.post("/v1/chat/completions", json={"model": "m", "stream": True, **body})
    assert response.status_code == 200, response.text
    return events(response)


def accumulate(chunks: list) -> tuple[dict, str]:
    """Rebuild the message the way OpenAI's clients do: concatenate the deltas."""
    message: dict = {"role": None, "content": None}
    finish = None
    for chunk in chunks:
        if chunk == "[DONE]" or not chunk["choices"]:
            continue
        (choice,) = chunk["choices"]
        delta = choice["delta"]
        if "role" in delta:
            message["role"] = delta["role"]
        if delta.get("content") is not None:
            message["content"] = (message["content"] or "") + delta["content"]
        if "function_call" in delta:
            call = message.setdefault("function_call", {"name": "", "arguments": ""})
            call["name"] += delta["function_call"].get("name", "")
            call["arguments"] += delta["function_call"]["arguments"]
        for tool in delta.get("tool_calls", []):
            calls = message.setdefault("tool_calls", [])
            if tool["index"] == len(calls):
                calls.append({"id": tool["id"], "type": tool["type"], "function": {"name": tool["function"]["name"], "arguments": ""}})
            calls[tool["index"]]["function"]["arguments"] += tool["function"]["arguments"]
        finish = choice["finish_reason"] or finish
    return message, finish


def test_text_stream_has_openai_chunk_shape():
    chunks = stream(ScriptedRuntime(text_output('Hello "there" 😀'), delay=0.005), {"messages": USER})
    assert chunks[-1] == "[DONE]"
    data = chunks[:-1]
    assert len({c["id"] for c in data}) == 1 and all(c["object"] == "chat.completion.chunk" for c in data)
    assert data[0]["choices"][0]["delta"] == {"role": "assistant"}  # as soon as the first token exists
    assert data[1]["choices"][0]["delta"] == {"content": "H"}  # once the wrapper ` ```{"content": "` is read
    assert data[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in data[:-1])
    assert len(data) > 5  # really streamed, not one blob
    assert accumulate(chunks) == ({"role": "assistant", "content": 'Hello "there" 😀'}, "stop")


def test_function_call_stream_sends_the_name_then_argument_deltas():
    chunks = stream(ScriptedRuntime(call_output("get_time", {"location": "Singapore"}), delay=0.005),
                    {"messages": USER, "functions": [GET_TIME]})
    calls = [c["choices"][0]["delta"]["function_call"] for c in chunks[:-1] if "function_call" in c["choices"][0]["delta"]]
    assert calls[0] == {"name": "get_time", "arguments": ""}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[1]["choices"][0]["delta"] == {"function_call": calls[0]}
    assert all(set(call) == {"arguments"} for call in calls[1:]) and len(calls) > 3
    message, finish = accumulate(chunks)
    assert finish == "function_call"
    assert json.loads(message["function_call"]["arguments"]) == {"location": "Singapore"}


def test_tool_call_stream_sends_index_id_and_type_first():
    chunks = stream(ScriptedRuntime(call_output("get_weather", {"city": "Oslo"}), delay=0.005),
                    {"messages": USER, "tools": TOOLS})
    tool_deltas = [c["choices"][0]["delta"]["tool_calls"] for c in chunks[:-1] if "tool_calls" in c["choices"][0]["delta"]]
    first = tool_deltas[0][0]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert all(delta[0].keys() == {"index", "function"} for delta in tool_deltas[1:])
    message, finish = accumulate(chunks)
    assert finish == "tool_calls"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}


def test_forced_call_streams_its_name_before_the_model_writes_anything():
    runtime = ScriptedRuntime('{\\"location\\": \\"Oslo\\"}"}}```')
    chunks = stream(runtime, {"messages": USER, "functions": [GET_TIME], "function_call": {"name": "get_time"}})
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None,
                                                "function_call": {"name": "get_time", "arguments": ""}}
    message, finish = accumulate(chunks)
    assert (message["function_call"]["name"], finish) == ("get_time", "function_call")


def test_include_usage_adds_a_usage_chunk_before_done():
    chunks = stream(ScriptedRuntime(text_output("hi")), {"messages": USER, "stream_options": {"include_usage": True}})
    assert chunks[-1] == "[DONE]"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize(("output", "body"), [
    (text_output("plain answer with \\ and \" and \n"), {}),
    (call_output("get_time", {"location": 'São "Paulo"'}), {"functions": [GET_TIME]}),
    (call_output("get_weather", {"city": "東京"}), {"tools": TOOLS}),
    (call_output("get_time", {"location": "Singapore"}), {"functions": [GET_TIME], "max_tokens": 15}),
    ("not json", {"tools": TOOLS}),
    (call_output("get_time", {"location": "x"}), {"functions": [GET_TIME], "function_call": "none"}),
])
def test_streamed_and_non_streamed_answers_agree(output, body):
    runtime = ScriptedRuntime(output)
    client = TestClient(create_app(runtime=runtime, settings=ServerSettings(model_name="m")))
    whole = client.post("/v1/chat/completions", json={"model": "m", "messages": USER, **body}).json()
    streamed, finish = accumulate(events(client.post("/v1/chat/completions",
                                                     json={"model": "m", "messages": USER, "stream": True, **body})))
    expected = whole["choices"][0]["message"]
    assert finish == whole["choices"][0]["finish_reason"]
    assert streamed["content"] == expected["content"]
    for key in ("function_call", "tool_calls"):
        assert (key in streamed) == (key in expected)
    if "function_call" in expected:
        assert streamed["function_call"]["name"] == expected["function_call"]["name"]
        if finish == "function_call":
            assert json.loads(streamed["function_call"]["arguments"]) == json.loads(expected["function_call"]["arguments"])
        else:
            assert streamed["function_call"]["arguments"] == expected["function_call"]["arguments"]
    if "tool_calls" in expected:
        assert json.loads(streamed["tool_calls"][0]["function"]["arguments"]) == json.loads(expected["tool_calls"][0]["function"]["arguments"])


def test_chunks_that_queue_up_are_joined_into_fewer_events():
    runtime = ScriptedRuntime(text_output("fast " * 200), chunk_chars=1)  # 1000+ tokens, no delay
    chunks = stream(runtime, {"messages": USER})
    message, finish = accumulate(chunks)
    assert message["content"] == "fast " * 200 and finish == "stop"
    assert len(chunks) < 1000


def test_a_failure_mid_stream_is_reported_in_the_stream():
    runtime = ScriptedRuntime(text_output("a long answer " * 5), fail_with=RuntimeError("boom 0xdead"), fail_after=3)
    chunks = stream(runtime, {"messages": USER})
    assert "[DONE]" not in chunks
    error = chunks[-1]["error"]
    assert error["type"] == "server_error" and "0xdead" not in json.dumps(chunks)


def test_a_failure_before_the_first_chunk_is_a_plain_http_error():
    runtime = ScriptedRuntime(text_output("x"), fail_with=ValueError("grammar refused"))
    client = TestClient(create_app(runtime=runtime, settings=ServerSettings(model_name="m")))
    response = client.post("/v1/chat/completions", json={"model": "m", "messages": USER, "stream": True})
    assert response.status_code == 400 and response.json()["error"]["message"] == "grammar refused"
