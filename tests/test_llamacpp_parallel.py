"""The llama.cpp engine's own behaviour with concurrent streams: slots that keep their cache for a later prompt
(the shared behaviour of the batched decoders: tests/test_parallel_streams.py)."""

from __future__ import annotations

import pytest

from invoker.runtimes import GenerationParams, generate, load_runtime
from samples import BATCH_PROMPTS


@pytest.fixture(scope="module")
def single(tiny_f16_gguf):
    return load_runtime(tiny_f16_gguf)


@pytest.mark.e2e
def test_a_prompt_reads_only_what_no_free_slot_has_cached(single, tiny_f16_gguf, monkeypatch):
    import invoker.runtimes.llamacpp_parallel as module

    runtime = load_runtime(tiny_f16_gguf)
    runtime.run_parallel(2)
    reads = []
    real = module.read_prompt
    monkeypatch.setattr(module, "read_prompt", lambda ctx, batch, ids, **kw: reads.append(len(ids)) or real(ctx, batch, ids, **kw))
    params = GenerationParams(max_tokens=8, ignore_eos=True)
    first = BATCH_PROMPTS[1]
    follow_up = first + generate(single, first, params).text + " and then?"  # a later turn of the same chat
    other = BATCH_PROMPTS[2]
    outputs = [generate(runtime, prompt, params) for prompt in (first, other, first, follow_up)]
    assert outputs == [generate(single, prompt, params) for prompt in (first, other, first, follow_up)]
    whole = [len(runtime.encode(prompt)) for prompt in (first, other, follow_up)]
    # the repeated prompt finds its slot again (the other slot holds `other`) and reads its last token only;
    # the follow-up reads what the first turn's generated tokens and the new text added
    assert reads[:3] == [whole[0], whole[1], 1]
    assert reads[3] <= whole[2] - whole[0]
