"""Concurrent streams on one model, for each runtime's batched decoder (``run_parallel``): decoded together,
each what it would be alone. transformers on a tiny random Llama (fast); llama.cpp on its F16 GGUF (e2e)."""

from __future__ import annotations

import json

import pytest

from invoker.constrain import answer_grammar
from invoker.parse import parse_completion
from invoker.runtimes import GenerationParams, generate, load_runtime
from samples import BATCH_PROMPTS, WEATHER as FUNCTIONS, together


@pytest.fixture(scope="module", params=["transformers", pytest.param("llama.cpp", marks=pytest.mark.e2e)])
def model_dir(request):
    return request.getfixturevalue("tiny_random_model" if request.param == "transformers" else "tiny_f16_gguf")


@pytest.fixture(scope="module")
def single(model_dir):
    return load_runtime(model_dir)


@pytest.fixture(scope="module")
def parallel(model_dir):
    runtime = load_runtime(model_dir)
    assert runtime.max_concurrent_streams == 1
    assert runtime.run_parallel(4) == 4 and runtime.max_concurrent_streams == 4
    return runtime


def test_concurrent_streams_each_equal_their_single_stream_output(single, parallel, monkeypatch):
    steps = []
    real = parallel._parallel._step
    monkeypatch.setattr(parallel._parallel, "_step", lambda running: steps.append(len(running)) or real(running))
    params = [GenerationParams(max_tokens=24), GenerationParams(max_tokens=9, ignore_eos=True),
              GenerationParams(max_tokens=16, stop=("e",)), GenerationParams(max_tokens=3, ignore_eos=True)]
    assert together(parallel, BATCH_PROMPTS, params) == [generate(single, p, q) for p, q in zip(BATCH_PROMPTS, params)]
    assert max(steps) > 1  # streams were decoded in the same step


def test_more_streams_than_slots_wait_their_turn_and_all_finish(single, parallel):
    # 9 streams of different budgets, 4 slots: rows join and leave. A later stream reuses an earlier one's cells
    # for its shared prompt prefix, so (as below) its logits differ from single-stream ones in the last float bits
    # and this random model's chaotic greedy text may diverge after ~25 tokens (seen in CI at 26): budgets stay ≤ 22.
    prompts = BATCH_PROMPTS * 2 + BATCH_PROMPTS[:1]
    params = [GenerationParams(max_tokens=6 + 2 * index, ignore_eos=True) for index in range(len(prompts))]
    assert together(parallel, prompts, params) == [generate(single, p, q) for p, q in zip(prompts, params)]
    assert parallel._parallel._running == {}  # every stream left its slot


def test_grammars_and_samplers_run_per_stream(single, parallel):
    forced = answer_grammar(FUNCTIONS, choice="function", name="get_weather")
    call, auto = forced.grammar, answer_grammar(FUNCTIONS, choice="auto", name=None).grammar
    greedy = [GenerationParams(max_tokens=60, grammar=call), GenerationParams(max_tokens=60, grammar=auto),
              GenerationParams(max_tokens=20), GenerationParams(max_tokens=60, grammar=call)]
    assert together(parallel, BATCH_PROMPTS, greedy) == [generate(single, p, q) for p, q in zip(BATCH_PROMPTS, greedy)]
    # sampled: batched logits differ from single-stream ones in the last float bits, so draws may differ;
    # each stream still keeps to its own grammar
    sampled = [GenerationParams(max_tokens=120, grammar=call, temperature=1.0, seed=seed) for seed in range(4)]
    results = together(parallel, [BATCH_PROMPTS[0]] * 4, sampled)
    finished = [result for result in results if result.finish_reason == "stop"]
    assert finished
    for result in finished:
        parsed = parse_completion(forced.prefill + result.text, functions=FUNCTIONS)
        assert (parsed.kind, parsed.name) == ("function_call", "get_weather"), result.text


def test_a_closed_stream_frees_its_slot_and_leaves_the_others_alone(model_dir):
    # fresh runtimes, and abandoned streams on a prompt no later one shares, so every prompt is read whole.
    # llama.cpp: closed streams' cells stay in the shared cache (for reuse), so attention runs over a differently
    # filled cache than alone and differs in the last float bits; this random model's greedy text is chaotic
    # enough to diverge on them after ~28 tokens (seen in CI), so 16 tokens are compared.
    single, parallel = load_runtime(model_dir), load_runtime(model_dir)
    parallel.run_parallel(4)
    params = GenerationParams(max_tokens=16, ignore_eos=True)
    abandoned = [parallel.stream("zq " * 30, params) for _ in range(4)]  # every slot taken
    for stream in abandoned:
        next(stream)
        stream.close()
    # had a closed stream kept its slot, these would wait forever
    results = together(parallel, BATCH_PROMPTS, [params] * 4)
    assert results == [generate(single, p, params) for p in BATCH_PROMPTS]


def test_a_prompt_that_fills_the_context_ends_at_once_without_reading_it(parallel, monkeypatch):
    decoder = parallel._parallel
    started = RuntimeError("a stream with no budget was started")  # it would reach the stream as its error
    monkeypatch.setattr(decoder, "_start", lambda request: (_ for _ in ()).throw(started))
    chunks = list(decoder.stream([1] * parallel.context_length, GenerationParams(max_tokens=4)))
    assert [(c.finish_reason, c.completion_tokens, c.text) for c in chunks] == [("length", 0, "")]
    assert decoder._running == {}


def test_a_failed_step_ends_the_running_streams_with_the_error_and_the_decoder_goes_on(single, model_dir, monkeypatch):
    runtime = load_runtime(model_dir)
    runtime.run_parallel(2)
    decoder = runtime._parallel
    real = decoder._step
    monkeypatch.setattr(decoder, "_step", lambda running: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):
        generate(runtime, BATCH_PROMPTS[0], GenerationParams(max_tokens=8, ignore_eos=True))
    monkeypatch.setattr(decoder, "_step", real)
    params = GenerationParams(max_tokens=8, ignore_eos=True)
    assert together(runtime, BATCH_PROMPTS[:2], [params] * 2) == [generate(single, p, params) for p in BATCH_PROMPTS[:2]]


def test_the_server_batches_streams_when_asked_for_concurrency(model_dir):
    import asyncio

    import httpx

    from serve_minimal.app import create_app
    from serve_minimal.settings import ServerSettings
    from server_support import live_server

    runtime = load_runtime(model_dir)
    app = create_app(runtime=runtime, settings=ServerSettings(model_name="m", max_concurrency=3))
    assert runtime.max_concurrent_streams == 3
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"tell me about {topic}"}], "max_tokens": 12,
               "temperature": 0, "stream": streamed} for topic, streamed in
              [("Paris", False), ("the weather", True), ("Tokyo", False), ("maps", True), ("time", False)]]

    async def post_all(url):
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(url + "/v1/chat/completions", json=body) for body in bodies))

    with live_server(app) as url:
        together_ = asyncio.run(post_all(url))
        one_by_one = []
        with httpx.Client(timeout=120) as client:
            for body in bodies:
                one_by_one.append(client.post(url + "/v1/chat/completions", json=body))
    assert [r.status_code for r in together_] == [200] * len(bodies)
    assert [answer(r, b["stream"]) for r, b in zip(together_, bodies)] == [answer(r, b["stream"]) for r, b in zip(one_by_one, bodies)]


def answer(response, streamed: bool) -> tuple:
    """(content, function name, arguments) of a chat completion, streamed or not (deltas joined: their
    boundaries depend on timing)."""
    if not streamed:
        message = response.json()["choices"][0]["message"]
        calls = message.get("tool_calls") or [{"function": {"name": None, "arguments": ""}}]
        return message.get("content") or "", calls[0]["function"]["name"], calls[0]["function"]["arguments"]
    content, name, arguments = "", None, ""
    for line in response.text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for choice in json.loads(line[6:])["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                name = call["function"].get("name") or name
                arguments += call["function"].get("arguments") or ""
    return content, name, arguments
