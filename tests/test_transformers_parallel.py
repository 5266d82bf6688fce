"""The transformers decoder's own behaviour with concurrent streams (the shared behaviour of the batched
decoders: tests/test_parallel_streams.py), on a tiny random Llama (fast)."""

from __future__ import annotations

import pytest

from invoker.runtimes import GenerationParams, generate, load_runtime
from samples import BATCH_PROMPTS, together


@pytest.fixture(scope="module")
def single(tiny_random_model):
    return load_runtime(tiny_random_model)


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
