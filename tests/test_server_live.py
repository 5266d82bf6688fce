"""A real uvicorn on a loopback port, driven by the official ``openai`` client and raw HTTP (scripted runtime).

Covers what only a live server shows: the client library's view, client disconnects stopping the
generation, the admission queue (FIFO, 429s), and /health staying fast while generation runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import httpx
import openai
import pytest

from serve_minimal.app import create_app
from serve_minimal.settings import ServerSettings
from server_support import (
    GET_TIME,
    ScriptedRuntime,
    SilentListener,
    assert_health_fast,
    call_output,
    live_server,
    load_in_subprocess,
    probe_health,
    text_output,
)

USER = [{"role": "user", "content": "Can you check what is the time in Singapore?"}]


def invoker_like(prompt: str, params) -> str:
    """Calls get_time on a first turn, answers in text after a function result, continues a prefill."""
    if prompt.endswith('"arguments": "'):
        return '{\\"location\\": \\"Singapore\\", \\"format\\": \\"12-hour\\"}"}}```'
    if prompt.endswith('"name": "'):
        return 'get_time", "arguments": "{\\"location\\": \\"Singapore\\"}"}}```'
    if "\nFUNCTION: " in prompt:
        return text_output("The time in Singapore is 08:00 AM.")
    if "Available Functions:\nNone" in prompt:
        return text_output("I can't check the time.")
    return call_output("get_time", {"location": "Singapore", "format": "12-hour"})


@pytest.fixture(scope="module")
def served():
    runtime = ScriptedRuntime(invoker_like, delay=0.002)
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="invoker-test", api_key="test", max_concurrency=2))
    with live_server(app) as url:
        yield url, runtime


@pytest.mark.parametrize("suffix", ["", "/v1"])
def test_openai_client_legacy_functions_then_follow_up(served, suffix):
    url, _ = served
    client = openai.OpenAI(base_url=url + suffix, api_key="test", max_retries=0)
    messages = list(USER)
    response = client.chat.completions.create(model="invoker-test", messages=messages, functions=[GET_TIME])
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "function_call"
    assert message.function_call.name == "get_time"
    assert json.loads(message.function_call.arguments) == {"location": "Singapore", "format": "12-hour"}
    assert response.usage.completion_tokens > 0
    messages.append(message)  # the client's own message object, echoed back as the README does
    messages.append({"role": "function", "name": "get_time", "content": "08:00 AM"})
    second = client.chat.completions.create(model="invoker-test", messages=messages, functions=[GET_TIME])
    assert second.choices[0].message.content == "The time in Singapore is 08:00 AM."
    assert second.choices[0].finish_reason == "stop"


def test_openai_client_tools_streaming_forced_and_none(served):
    url, _ = served
    client = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0)
    tools = [{"type": "function", "function": GET_TIME}]
    chunks = list(client.chat.completions.create(model="invoker-test", messages=USER, tools=tools, stream=True))
    name = "".join(c.choices[0].delta.tool_calls[0].function.name or "" for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                        for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert name == "get_time" and json.loads(arguments)["location"] == "Singapore"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    forced = client.chat.completions.create(model="invoker-test", messages=USER, tools=tools,
                                            tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = forced.choices[0].message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_time"
    required = client.chat.completions.create(model="invoker-test", messages=USER, tools=tools, tool_choice="required")
    assert required.choices[0].finish_reason == "tool_calls"
    follow_up = USER + [forced.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "08:00 AM"}]
    answer = client.chat.completions.create(model="invoker-test", messages=follow_up, tools=tools)
    assert answer.choices[0].message.content == "The time in Singapore is 08:00 AM."
    none = client.chat.completions.create(model="invoker-test", messages=USER, tools=tools, tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content

    text = client.chat.completions.create(model="invoker-test", messages=USER, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in text if c.choices]
    assert "".join(pieces) == "I can't check the time." and len(pieces) > 3


def test_openai_client_sees_openai_errors(served):
    url, _ = served
    with pytest.raises(openai.AuthenticationError) as error:
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert error.value.status_code == 401 and error.value.code == "invalid_api_key"
    client = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="invoker-test", messages=USER, n=3)
    assert error.value.param == "n"
    assert [m.id for m in client.models.list()] == ["invoker-test"]


# --- disconnects ---------------------------------------------------------------------------------


def wait_for(predicate, *, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_stops_its_generation(stream):
    runtime = ScriptedRuntime(text_output("word " * 400), delay=0.02)  # ~13 s if never stopped
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m"))
    with live_server(app) as url:
        body = {"model": "m", "messages": USER, "stream": stream}
        if stream:
            with httpx.Client() as client, client.stream("POST", url + "/v1/chat/completions", json=body) as response:
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url + "/v1/chat/completions", json=body, timeout=0.5)
        assert wait_for(lambda: runtime.closed_early == 1), "generation kept running after the client left"
        assert wait_for(lambda: httpx.get(url + "/health").json()["running"] == 0)
        assert runtime.finished == 0
        assert "invoker_cancelled_generations_total 1.0" in httpx.get(url + "/metrics").text


# --- queueing and responsiveness --------------------------------------------------------------------


async def _post_all(url: str, *, count: int, stagger: float = 0.0, body=None) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        async def one(i):
            await asyncio.sleep(i * stagger)
            return await client.post(url + "/v1/chat/completions",
                                     json=body or {"model": "m", "messages": [{"role": "user", "content": f"request {i}"}]})
        return await asyncio.gather(*(one(i) for i in range(count)))


def test_requests_are_admitted_in_arrival_order_and_overflow_gets_429():
    runtime = ScriptedRuntime(text_output("x" * 30), delay=0.05)  # ~0.6 s per generation
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m", max_concurrency=1, max_queue=2))
    with live_server(app) as url:
        responses = asyncio.run(_post_all(url, count=5, stagger=0.1))
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 200, 429, 429]
    busy = responses[3]
    assert busy.json()["error"]["code"] == "queue_full" and busy.json()["error"]["type"] == "rate_limit_error"
    assert busy.headers["retry-after"] == "1"
    order = [prompt.split("USER: ")[1].split("\n")[0] for prompt, _ in runtime.calls]
    assert order == ["request 0", "request 1", "request 2"]
    assert runtime.max_active == 1


def test_a_request_waiting_too_long_gets_429():
    runtime = ScriptedRuntime(text_output("x" * 60), delay=0.05)  # ~1.2 s
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m", max_concurrency=1, queue_timeout=0.3))
    with live_server(app) as url:
        first, second = asyncio.run(_post_all(url, count=2, stagger=0.1))
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["error"]["code"] == "queue_timeout"


def test_health_answers_fast_while_generations_run():
    runtime = ScriptedRuntime(text_output("word " * 200), delay=0.01)
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m", max_concurrency=2))
    with live_server(app) as url:
        worker = threading.Thread(target=lambda: asyncio.run(_post_all(url, count=2)))
        worker.start()
        assert wait_for(lambda: runtime.active == 2)
        timings = []
        with httpx.Client() as client:
            for _ in range(20):
                started = time.perf_counter()
                assert client.get(url + "/health").json()["running"] == 2
                timings.append(time.perf_counter() - started)
        worker.join()
    assert_health_fast(timings)


def test_bounded_load_only_intended_429s_and_fast_health():
    """32 clients x 5 requests (from another process) against 2 slots + 8 queue places: every answer is
    a 200 or an intended 429, and /health stays under 100 ms throughout."""
    runtime = ScriptedRuntime(text_output("ok " * 10), delay=0.005)
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m", max_concurrency=2, max_queue=8))
    with live_server(app) as url:
        load = load_in_subprocess(url, clients=32, requests_per_client=5)
        health = probe_health(url, while_running=lambda: load.poll() is None)
        statuses = json.loads(load.communicate()[0])
        after = httpx.get(url + "/health").json()
    assert len(statuses) == 160 and set(statuses) <= {200, 429} and statuses.count(200) >= 10
    assert_health_fast(health)
    assert (after["running"], after["waiting"]) == (0, 0)


def test_a_client_that_leaves_the_queue_never_reaches_the_model():
    runtime = ScriptedRuntime(text_output("x" * 40), delay=0.05)  # ~0.8 s
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m", max_concurrency=1))
    with live_server(app) as url:
        first = threading.Thread(target=lambda: httpx.post(url + "/v1/chat/completions", timeout=30,
                                                            json={"model": "m", "messages": USER}))
        first.start()
        assert wait_for(lambda: runtime.active == 1)
        with pytest.raises(httpx.ReadTimeout):  # queued behind the first, then gone
            httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": USER}, timeout=0.3)
        assert wait_for(lambda: httpx.get(url + "/health").json()["waiting"] == 0, timeout=2)
        first.join()
        time.sleep(0.3)
    assert len(runtime.calls) == 1 and runtime.finished == 1


def test_concurrency_is_capped_by_what_the_runtime_can_run():
    runtime = ScriptedRuntime(text_output("x" * 20), delay=0.02)
    runtime.max_concurrent_streams = 1  # like llama.cpp: one KV cache
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m", max_concurrency=4))
    with live_server(app) as url:
        responses = asyncio.run(_post_all(url, count=3))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert runtime.max_active == 1


# --- no outbound fetch, nothing blocking the loop (issue 12) ----------------------------------------


def _probing_health(url: str, run) -> tuple[object, list[float]]:
    """``run()`` while another thread sends ``GET /health`` every 20 ms; (its result, the probes' spans).

    A span is the time from the end of one probe to the end of the next: it catches a blocked event loop
    (a probe waits) and a thread holding the GIL (the prober itself cannot run), which a probe's own
    duration misses when the stall falls between two probes."""
    done = threading.Event()
    ends: list[float] = []

    def probe():
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                assert client.get(url + "/health").status_code == 200
                ends.append(time.perf_counter())
                time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        time.sleep(0.1)
        result = run()
        time.sleep(0.3)  # a late connection or a stall after the answer would still be seen
    finally:
        done.set()
        prober.join()
    return result, [later - earlier for earlier, later in zip(ends, ends[1:])]


def test_a_remote_ref_is_refused_without_connecting_while_health_answers():
    """A tool schema naming a URL (the listener accepts and never answers) with a forced call: a 400 naming
    the field before any generation, no connection made, /health answering throughout."""
    runtime = ScriptedRuntime(invoker_like)
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m"))
    with SilentListener(hold=3.0) as listener, live_server(app) as url:
        refs = [f"{listener.url}/evil.json", f"{listener.url}/s.json#/$defs/x", "//127.0.0.1:%d/x" % listener.port,
                "evil.json", "file:///etc/passwd"]

        def send_all():
            answers = []
            with httpx.Client(timeout=20) as client:
                for ref in refs:
                    for stream in (False, True):
                        tool = {"type": "function", "function": {**GET_TIME, "parameters": {
                            "type": "object", "properties": {"location": {"$ref": ref}}, "required": ["location"]}}}
                        answers.append(client.post(url + "/v1/chat/completions", json={
                            "model": "m", "messages": USER, "tools": [tool], "max_tokens": 300, "stream": stream,
                            "tool_choice": {"type": "function", "function": {"name": "get_time"}}}))
            return answers

        answers, timings = _probing_health(url, send_all)
    for answer in answers:
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == "tools[0].function.parameters.properties.location.$ref"
        assert error["code"] == "invalid_function" and "never fetched" in error["message"]
    assert listener.connections == []
    assert runtime.calls == []  # refused before generation
    assert len(timings) >= 5 and max(timings) < 1.0, timings


def test_a_local_ref_is_followed_and_its_call_validated():
    runtime = ScriptedRuntime(invoker_like)
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m"))
    parameters = {"type": "object", "properties": {"location": {"$ref": "#/$defs/city"}, "format": {"type": "string"}},
                  "required": ["location"], "$defs": {"city": {"type": "string", "minLength": 2}}}
    with SilentListener() as listener, live_server(app) as url:
        response = httpx.post(url + "/v1/chat/completions", timeout=20, json={
            "model": "m", "messages": USER, "tools": [{"type": "function", "function": {**GET_TIME, "parameters": parameters}}],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
        metrics = httpx.get(url + "/metrics").text
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])["location"] == "Singapore"
    assert "invoker_schema_invalid_calls_total 0.0" in metrics
    assert listener.connections == []


def test_a_catastrophic_pattern_does_not_stall_the_server():
    """Argument validation against a client's ``pattern`` runs off the loop, without holding the GIL, and
    gives up after its time budget: Python's re needs seconds for ^(a|a)*$ on 26 a's and a '!'."""
    arguments = '{\\"location\\": \\"' + "a" * 26 + '!\\"}"}}```'
    runtime = ScriptedRuntime(lambda prompt, params: arguments)
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m"))
    tool = {"type": "function", "function": {**GET_TIME, "parameters": {
        "type": "object", "properties": {"location": {"type": "string", "pattern": "^(a|a)*$"}}}}}
    body = {"model": "m", "messages": USER, "tools": [tool], "constrained": False,
            "tool_choice": {"type": "function", "function": {"name": "get_time"}}}
    with live_server(app) as url:
        response, timings = _probing_health(url, lambda: httpx.post(url + "/v1/chat/completions", json=body, timeout=60))
        metrics = httpx.get(url + "/metrics").text
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert "invoker_schema_invalid_calls_total 1.0" in metrics  # not validated in time: counted, logged
    assert len(timings) >= 5 and max(timings) < 1.0, timings


def test_checking_requests_runs_on_threads_of_its_own_bounded_like_the_queue(monkeypatch):
    """Planning (schemas, patterns, grammar) once ran on the loop's default pool (min(32, cpus + 4) threads): six
    hostile schemas on 2 cores held an unrelated request 11 s, and --max-queue did not count them."""
    import serve_minimal.app as app_module

    release = threading.Event()
    real = app_module.plan_completion

    def plan(body, **options):
        if body.messages[-1].content == "hostile":
            release.wait(30)  # a schema whose checking takes long
        return real(body, **options)

    monkeypatch.setattr(app_module, "plan_completion", plan)
    app = create_app(runtime=ScriptedRuntime(text_output("ok")),
                     settings=ServerSettings(model_name="m", max_concurrency=1, max_queue=39))  # 40 plans at once
    planner = app.state.server.planner

    def body(content):
        return {"model": "m", "messages": [{"role": "user", "content": content}]}

    async def scenario(url):
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:
            async def settle(active):
                for _ in range(500):
                    if planner.active == active:
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError(f"{planner.active} plans running, expected {active}")

            post = lambda content, **kw: client.post(url + "/v1/chat/completions", json=body(content), **kw)  # noqa: E731
            hostile = [asyncio.create_task(post("hostile")) for _ in range(33)]  # more than any default pool
            await settle(33)
            unrelated = await post("hello", timeout=10)
            assert unrelated.status_code == 200, unrelated.text
            hostile += [asyncio.create_task(post("hostile")) for _ in range(7)]
            await settle(40)
            refused = await post("hello", timeout=10)
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full", refused.text
            release.set()
            assert [r.status_code for r in await asyncio.gather(*hostile)] == [200] * 40

    try:
        with live_server(app) as url:
            asyncio.run(scenario(url))
    finally:
        release.set()


def test_a_key_put_in_the_url_never_reaches_the_access_log(capfd):
    app = create_app(runtime=ScriptedRuntime(text_output("ok")), settings=ServerSettings(model_name="m", api_key="sk-real"))
    with live_server(app, log_level="info") as url:  # uvicorn's own access log, as `make serve` runs it
        for path in ("/v1/models?api_key=sk-leaked-1", "/health?key=sk-leaked-2&x=1"):
            assert httpx.get(url + path, headers={"Authorization": "Bearer sk-real"}).status_code == 200
    captured = capfd.readouterr()
    log = captured.out + captured.err
    assert '"GET /v1/models?[query removed] HTTP/1.1" 200' in log and '"GET /health?[query removed] HTTP/1.1" 200' in log, log
    assert "sk-leaked" not in log


def test_a_body_that_does_not_arrive_in_time_gets_408_and_its_socket_closes():
    import socket

    app = create_app(runtime=ScriptedRuntime(text_output("ok")), settings=ServerSettings(model_name="m", body_timeout=0.5))
    with live_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        stalled = []
        for _ in range(5):  # announce 100 bytes, send 10, then nothing
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"model\": ")
            stalled.append(sock)
        started = time.monotonic()
        for sock in stalled:
            reply = b""
            while chunk := sock.recv(4096):  # until the server closes it
                reply += chunk
            sock.close()
            assert reply.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in reply, reply
        assert time.monotonic() - started < 5  # closed after the timeout, not held
        assert httpx.get(url + "/health").status_code == 200
