"""End to end: ``invoker-pack serve`` in its own process on a loopback port, a real model (fp16 through
transformers, Q4_K_M GGUF through llama.cpp), driven by the official ``openai`` client.

The model is ``models/tiny-invoker`` once it exists (and ``out/tiny-invoker/gguf-Q4_K_M`` if the
pipeline made it), else the random tiny checkpoint and a GGUF converted from it here. With constrained
decoding on (the default) every call the server returns must parse and validate — even from a
random model, which is the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from invoker.functions import validate_arguments, validate_functions
from server_support import (
    GET_TIME,
    GET_WEATHER,
    assert_health_fast,
    call_output,
    free_port,
    load_in_subprocess,
    probe_health,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
TINY_INVOKER = ROOT / "models" / "tiny-invoker"
PIPELINE_GGUF = ROOT / "out" / "tiny-invoker" / "gguf-Q4_K_M"
USER = [{"role": "user", "content": "Can you check what is the time in Singapore?"}]
MAX_LENGTH = 16  # every string argument of the functions below is bounded, so every call has a bounded length


def bounded(function: dict) -> dict:
    """``function`` with ``maxLength`` on its string parameters, which the grammar enforces."""
    properties = {key: {**value, "maxLength": MAX_LENGTH} if value.get("type") == "string" and "enum" not in value else value
                  for key, value in function["parameters"]["properties"].items()}
    return {**function, "parameters": {**function["parameters"], "properties": properties}}


E2E_FUNCTIONS = [bounded(GET_TIME), bounded(GET_WEATHER)]
TOOLS = [{"type": "function", "function": function} for function in E2E_FUNCTIONS]
FUNCTIONS = validate_functions(E2E_FUNCTIONS)


def longest_call_tokens(function: dict) -> int:
    """An upper bound on the tokens of any call to ``function`` the grammar allows: its longest answer in
    bytes (every string at MAX_LENGTH characters of the longest escaped form — an inner \\u0000, written
    \\\\u0000 inside the arguments string — and the longest enum values; a token is at least one byte), plus
    the end-of-sequence token."""
    longest = {key: max(value["enum"], key=len) if "enum" in value else "\x00" * MAX_LENGTH
               for key, value in function["parameters"]["properties"].items()}
    return len(call_output(function["name"], longest).encode()) + 1


# Enough for any constrained call whatever the model's taste; less may end a call with "length" (tested).
CALL_BUDGET = max(longest_call_tokens(function) for function in E2E_FUNCTIONS)


@pytest.fixture(scope="module")
def fp16_model(tiny_random_model) -> Path:
    return TINY_INVOKER if (TINY_INVOKER / "config.json").is_file() else tiny_random_model


@pytest.fixture(scope="module")
def gguf_model(fp16_model, tmp_path_factory) -> Path:
    if fp16_model == TINY_INVOKER and (PIPELINE_GGUF / "manifest.json").is_file():
        return PIPELINE_GGUF
    from convert import gguf as gguf_convert
    from invoker.files import atomic_output_dir

    final = tmp_path_factory.mktemp("serve-gguf") / "gguf-Q4_K_M"
    with atomic_output_dir(final) as tmp:
        gguf_convert.convert(source_dir=fp16_model, out_dir=tmp, variant="Q4_K_M-noimatrix", calibration=None,
                             progress=False, model_name="tiny")
    return final


class ServerProcess:
    """``invoker-pack serve PATH`` on a free 127.0.0.1 port, its log in a file."""

    def __init__(self, path: Path, *, log: Path, extra: tuple[str, ...] = ()) -> None:
        self.path = path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [str(Path(sys.executable).parent / "invoker-pack"), "serve", str(path), "--port", str(self.port),
                   "--api-key", "test", *extra]
        self._log_file = log.open("w")
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT)
        self._wait_until_up()

    def _wait_until_up(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"invoker-pack serve exited ({self.process.returncode}):\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"invoker-pack serve did not come up in {timeout:g} s:\n{self.log.read_text()}")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


@pytest.fixture(scope="module", params=["fp16", "gguf"])
def server(request, tmp_path_factory):
    path = request.getfixturevalue(f"{request.param}_model")
    process = ServerProcess(path, log=tmp_path_factory.mktemp("serve-log") / f"{request.param}.log",
                            extra=("--max-concurrency", "1", "--max-queue", "8"))
    yield process
    process.stop()


def client(server: ServerProcess, *, v1: bool = True) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + ("/v1" if v1 else ""), api_key="test", max_retries=0, timeout=300)


def assert_valid_call(name: str, arguments: str) -> None:
    function = next(f for f in FUNCTIONS if f["name"] == name)
    assert validate_arguments(json.loads(arguments), function=function) == [], arguments


def test_tools_forced_required_and_auto_return_valid_calls(server):
    api = client(server)
    required = api.chat.completions.create(model="m", messages=USER, tools=TOOLS, tool_choice="required",
                                           max_tokens=CALL_BUDGET)
    assert required.choices[0].finish_reason == "tool_calls"
    (call,) = required.choices[0].message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert_valid_call(call.function.name, call.function.arguments)

    named = {"type": "function", "function": {"name": "get_weather"}}
    chunks = list(api.chat.completions.create(model="m", messages=USER, tools=TOOLS, tool_choice=named, stream=True,
                                              max_tokens=CALL_BUDGET))
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].function.name == "get_weather" and deltas[0].id.startswith("call_")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert_valid_call("get_weather", "".join(d.function.arguments or "" for d in deltas))

    auto = api.chat.completions.create(model="m", messages=USER, tools=TOOLS, max_tokens=CALL_BUDGET, temperature=0)
    message = auto.choices[0].message
    if message.tool_calls:
        assert auto.choices[0].finish_reason == "tool_calls"
        assert_valid_call(message.tool_calls[0].function.name, message.tool_calls[0].function.arguments)
    else:  # text is unbounded: it may run out of budget
        assert isinstance(message.content, str) and auto.choices[0].finish_reason in ("stop", "length")


def test_a_forced_call_cut_by_max_tokens_comes_back_partial_with_length(server):
    """The documented contract (docs/SERVER.md): like OpenAI, the call so far and finish_reason "length"."""
    api = client(server)
    named = {"type": "function", "function": {"name": "get_weather"}}
    cut = api.chat.completions.create(model="m", messages=USER, tools=TOOLS, tool_choice=named, max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    (call,) = cut.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert 0 < len(call.function.arguments) < len('{"city": ""}') and call.function.arguments.startswith("{")


def test_legacy_functions_forced_then_follow_up_with_the_result(server):
    api = client(server, v1=False)  # the seed's clients use api_base without /v1
    messages = list(USER)
    first = api.chat.completions.create(model="m", messages=messages, functions=E2E_FUNCTIONS,
                                        function_call={"name": "get_time"}, max_tokens=CALL_BUDGET)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "function_call" and message.function_call.name == "get_time"
    assert_valid_call("get_time", message.function_call.arguments)
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    messages += [message, {"role": "function", "name": "get_time", "content": "08:00 AM"}]
    second = api.chat.completions.create(model="m", messages=messages, functions=E2E_FUNCTIONS,
                                         max_tokens=CALL_BUDGET, temperature=0)
    answer = second.choices[0].message
    assert answer.content is not None or answer.function_call is not None
    if answer.function_call is not None:
        assert_valid_call(answer.function_call.name, answer.function_call.arguments)
    streamed = api.chat.completions.create(model="m", messages=messages, functions=E2E_FUNCTIONS,
                                           max_tokens=CALL_BUDGET, temperature=0, stream=True)
    assert [c for c in streamed if c.choices][-1].choices[0].finish_reason in ("stop", "length", "function_call")


def test_the_seed_example_calls_get_time_for_singapore_then_summarises_the_result(server):
    """The original Invoker README's client flow, unforced (greedy here), on what `make serve` serves — the
    bundled fp16 model: it calls get_time with the city, and after the function's result answers in text
    that carries it, as the seed's second request does (messages only, no functions). Quantized variants
    are judged by the pipeline's gate, not here (this module's GGUF is an un-calibrated Q4_K_M made for
    the test, which answered this one in text)."""
    if server.path != TINY_INVOKER:
        pytest.skip("the bundled fp16 model only (models/tiny-invoker, built by make setup)")
    api = client(server, v1=False)
    messages = list(USER)
    first = api.chat.completions.create(model="m", messages=messages, functions=[GET_TIME], temperature=0)
    call = first.choices[0].message.function_call
    assert first.choices[0].finish_reason == "function_call" and call is not None and call.name == "get_time"
    assert "singapore" in json.loads(call.arguments)["location"].lower()
    messages += [first.choices[0].message, {"role": "function", "name": "get_time", "content": "08:00 PM"}]
    second = api.chat.completions.create(model="m", messages=messages, temperature=0)
    answer = second.choices[0].message
    assert second.choices[0].finish_reason == "stop" and answer.function_call is None
    assert "8:00" in answer.content, answer.content


def test_bad_inputs_get_openai_errors_from_the_real_server(server):
    api = client(server)
    with pytest.raises(openai.BadRequestError) as error:
        api.chat.completions.create(model="m", messages=USER, max_tokens=10**9)
    assert error.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as error:
        api.chat.completions.create(model="m", messages=USER, functions=[{"name": "f", "parameters": {"type": "string"}}])
    assert error.value.param == "functions[0].parameters.type"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).chat.completions.create(model="m", messages=USER)
    raw = httpx.post(server.url + "/v1/chat/completions", content=b"{not json",
                     headers={"Authorization": "Bearer test", "Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    big = httpx.post(server.url + "/v1/chat/completions", content=b"x" * (10 << 20), headers={"Authorization": "Bearer test"})
    assert big.status_code == 413


def test_bounded_load_leaves_the_server_healthy(server):
    """32 clients x 5 requests, twice: only 200s and intended 429s, /health fast, memory bounded.

    The baseline is taken after a warm-up burst of the same shape. The fp16 server then settles some tens
    of MiB higher (allocator arenas of the worker threads, shape-keyed compute caches): measured +68, +67
    MiB after one round in two fresh-clone runs and +15 then +68 MiB after two rounds here — a plateau,
    not growth per request. Two rounds (320 requests) must stay within 128 MiB of the baseline, which a
    leak of 400 KiB per request would break."""
    headers = {"Authorization": "Bearer test"}
    warm = httpx.post(server.url + "/v1/chat/completions", headers=headers, timeout=300,
                      json={"model": "m", "messages": USER, "max_tokens": 16})
    assert warm.status_code == 200
    burst = load_in_subprocess(server.url, clients=32, requests_per_client=1, max_tokens=16, api_key="test")
    burst.communicate()
    time.sleep(1.0)
    rss = [server.rss_bytes()]
    for _ in range(2):
        load = load_in_subprocess(server.url, clients=32, requests_per_client=5, max_tokens=16, api_key="test")
        health = probe_health(server.url, while_running=lambda: load.poll() is None)
        statuses = json.loads(load.communicate()[0])
        time.sleep(1.0)
        rss.append(server.rss_bytes())
        state = httpx.get(server.url + "/health").json()
        print(f"load: {statuses.count(200)} x 200, {statuses.count(429)} x 429; /health median "
              f"{1000 * sorted(health)[len(health) // 2]:.1f} ms, max {1000 * max(health):.1f} ms; "
              f"RSS {' -> '.join(f'{r >> 20} MiB' for r in rss)}")
        assert len(statuses) == 160 and set(statuses) <= {200, 429} and statuses.count(200) >= 9
        assert_health_fast(health)
        assert (state["running"], state["waiting"]) == (0, 0)
    assert max(rss) < rss[0] + (128 << 20), rss


OPENAI_WEATHER = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}}


def test_openais_documentation_example_gets_a_tool_call_unforced(server):
    """OpenAI's function-calling guide, as a user first tries it against `make serve`: one tool, "What's the
    weather like in Boston, MA?", tool_choice left to the model. The bundled model calls the tool."""
    if server.path != TINY_INVOKER:
        pytest.skip("the bundled fp16 model only (models/tiny-invoker, built by make setup)")
    response = client(server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "What's the weather like in Boston, MA?"}],
        tools=[OPENAI_WEATHER], temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_current_weather"
    assert "boston" in json.loads(call.function.arguments)["location"].lower()
