"""Concurrent streams through the transformers runtime: decoded as one batch, each what it would be alone
(on a tiny random Llama: fast)."""

from __future__ import annotations

import pytest

from invoker.constrain import answer_grammar
from invoker.parse import parse_completion
from invoker.runtimes import GenerationParams, generate, load_runtime
from samples import BATCH_PROMPTS, WEATHER as FUNCTIONS, together


@pytest.fixture(scope="module")
def single(tiny_random_model):
    return load_runtime(tiny_random_model)


@pytest.fixture(scope="module")
def parallel(tiny_random_model):
    runtime = load_runtime(tiny_random_model)
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
    assert max(steps) > 1  # streams were decoded in the same forward pass


def test_more_streams_than_slots_wait_their_turn_and_all_finish(single, parallel):
    prompts = BATCH_PROMPTS * 2 + BATCH_PROMPTS[:1]  # 9 streams of different lengths, 4 slots: rows join and leave
    params = [GenerationParams(max_tokens=6 + 3 * index, ignore_eos=True) for index in range(len(prompts))]
    assert together(parallel, prompts, params) == [generate(single, p, q) for p, q in zip(prompts, params)]
    assert parallel._parallel._rows == []  # every row left the batch


def test_grammars_and_samplers_run_per_stream(single, parallel):
    forced = answer_grammar(FUNCTIONS, choice="function", name="get_weather")
    call, auto = forced.grammar, answer_grammar(FUNCTIONS, choice="auto", name=None).grammar
    greedy = [GenerationParams(max_tokens=60, grammar=call), GenerationParams(max_tokens=60, grammar=auto),
              GenerationParams(max_tokens=20), GenerationParams(max_tokens=60, grammar=call)]
    assert together(parallel, BATCH_PROMPTS, greedy) == [generate(single, p, q) for p, q in zip(BATCH_PROMPTS, greedy)]
    # sampled: each stream keeps to its own grammar, and a seed gives the same draws batched as alone
    # (batched logits may differ in the last float bits, so only finished calls are parsed)
    sampled = [GenerationParams(max_tokens=120, grammar=call, temperature=1.0, seed=seed) for seed in range(4)]
    for result in together(parallel, [BATCH_PROMPTS[0]] * 4, sampled):
        if result.finish_reason == "stop":
            parsed = parse_completion(forced.prefill + result.text, functions=FUNCTIONS)
            assert (parsed.kind, parsed.name) == ("function_call", "get_weather"), result.text


def test_a_closed_stream_frees_its_slot_and_leaves_the_others_alone(single, tiny_random_model):
    parallel = load_runtime(tiny_random_model)
    parallel.run_parallel(4)
    params = GenerationParams(max_tokens=16, ignore_eos=True)
    abandoned = [parallel.stream("zq " * 30, params) for _ in range(4)]  # every slot taken
    for stream in abandoned:
        next(stream)
        stream.close()
    # had a closed stream kept its slot, these would wait forever
    results = together(parallel, BATCH_PROMPTS, [params] * 4)
    assert results == [generate(single, p, params) for p in BATCH_PROMPTS]


def test_a_failed_step_ends_the_running_streams_with_the_error_and_the_decoder_goes_on(single, tiny_random_model, monkeypatch):
    runtime = load_runtime(tiny_random_model)
    runtime.run_parallel(2)
    decoder = runtime._parallel
    real = decoder._step
    monkeypatch.setattr(decoder, "_step", lambda running: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):
        generate(runtime, BATCH_PROMPTS[0], GenerationParams(max_tokens=8, ignore_eos=True))
    monkeypatch.setattr(decoder, "_step", real)
    params = GenerationParams(max_tokens=8, ignore_eos=True)
    assert together(runtime, BATCH_PROMPTS[:2], [params] * 2) == [generate(single, p, params) for p in BATCH_PROMPTS[:2]]
