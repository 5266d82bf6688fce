"""The llama.cpp runtime: loads GGUFs, generates with the transformers runtime's semantics, fails clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from invoker.prompt import render_prompt
from invoker.runtimes import GenerationParams, detect_format, generate, load_runtime
from invoker.runtimes.llamacpp_runtime import LlamaCppRuntime, find_gguf, inspect_gguf
from samples import BATCH_PARAMS, BATCH_PROMPTS

PROMPT = render_prompt(
    [{"role": "user", "content": "What's the weather in Paris?"}],
    functions=[{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
)


@pytest.fixture(scope="module")
def runtime(tiny_f16_gguf) -> LlamaCppRuntime:
    return load_runtime(tiny_f16_gguf)


@pytest.fixture(scope="module")
def hf_runtime(tiny_random_model):
    return load_runtime(tiny_random_model)


# --- loading --------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_variant_dir_or_its_gguf_file_loads_through_the_one_loader(tiny_f16_gguf, runtime):
    assert detect_format(tiny_f16_gguf) == "gguf" and detect_format(tiny_f16_gguf / "tiny-F16.gguf") == "gguf"
    assert isinstance(runtime, LlamaCppRuntime)
    assert (runtime.format, runtime.runtime, runtime.context_length) == ("gguf", "llama.cpp", 2048)
    assert load_runtime(tiny_f16_gguf / "tiny-F16.gguf").gguf_file == runtime.gguf_file


@pytest.mark.e2e
def test_greedy_output_and_token_counts_match_the_transformers_runtime(runtime, hf_runtime):
    params = GenerationParams(max_tokens=24)
    ours, theirs = generate(runtime, PROMPT, params), generate(hf_runtime, PROMPT, params)
    assert ours == theirs  # same text, finish reason and counts: F16 llama.cpp vs fp32 torch, argmax agrees
    assert runtime.count_tokens(PROMPT) == hf_runtime.count_tokens(PROMPT) == ours.prompt_tokens


@pytest.mark.e2e
def test_max_tokens_and_ignore_eos_give_exactly_that_many_tokens(runtime):
    result = generate(runtime, PROMPT, GenerationParams(max_tokens=7, ignore_eos=True))
    assert (result.finish_reason, result.completion_tokens) == ("length", 7)


@pytest.mark.e2e
def test_stop_strings_end_the_output_before_them_and_never_stream(runtime):
    free = generate(runtime, PROMPT, GenerationParams(max_tokens=24)).text
    stop = free[3:5]
    assert stop and stop in free
    chunks = list(runtime.stream(PROMPT, GenerationParams(max_tokens=24, stop=[stop])))
    text = "".join(c.text for c in chunks)
    assert text == free[: free.index(stop)]
    assert chunks[-1].finish_reason == "stop" and all(stop not in c.text for c in chunks)


@pytest.mark.e2e
def test_sampling_is_reproducible_per_seed(runtime):
    params = dict(max_tokens=16, temperature=1.5, top_p=0.9)
    first = generate(runtime, PROMPT, GenerationParams(**params, seed=11))
    assert generate(runtime, PROMPT, GenerationParams(**params, seed=11)) == first
    others = {generate(runtime, PROMPT, GenerationParams(**params, seed=s)).text for s in (1, 2, 3)}
    assert others - {first.text}


@pytest.mark.e2e
def test_top_p_keeps_only_the_most_likely_token_when_tiny(runtime):
    greedy = generate(runtime, PROMPT, GenerationParams(max_tokens=12))
    nucleus = generate(runtime, PROMPT, GenerationParams(max_tokens=12, temperature=1.0, top_p=1e-6, seed=5))
    assert nucleus == greedy


@pytest.mark.e2e
def test_a_grammar_constrains_the_output(runtime):
    result = generate(runtime, PROMPT, GenerationParams(max_tokens=8, grammar='root ::= "ok" "!"'))
    assert (result.text, result.finish_reason) == ("ok!", "stop")
    with pytest.raises(ValueError, match="grammar"):
        runtime.stream(PROMPT, GenerationParams(grammar="root ::= ("))


@pytest.mark.e2e
def test_checking_the_free_draw_picks_what_masking_first_would(runtime, monkeypatch):
    """Greedy under a grammar: checking the unconstrained pick and masking only on rejection gives the
    same tokens as masking the whole vocabulary at every step."""
    from invoker.constrain import answer_grammar
    from invoker.functions import validate_functions
    from invoker.runtimes.llamacpp_runtime import _Sampler

    functions = validate_functions([{"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}])
    for choice in ("auto", "function"):
        answer = answer_grammar(functions, choice=choice, name="get_weather")
        params = GenerationParams(max_tokens=80, grammar=answer.grammar)
        fast = generate(runtime, PROMPT, params)
        with monkeypatch.context() as patch:
            patch.setattr(_Sampler, "grammar_allows", lambda self, token: False)  # mask at every step
            masked = generate(runtime, PROMPT, params)
        assert fast == masked


def test_greedy_scans_the_top_candidates_and_picks_what_masking_the_vocabulary_would(runtime, monkeypatch):
    """When the grammar rejects the greedy pick, the most likely allowed token among the top candidates is
    taken without masking the vocabulary: the same tokens as masking it, far cheaper."""
    from invoker.constrain import answer_grammar
    from invoker.functions import validate_functions
    from invoker.runtimes import llamacpp_runtime

    functions = validate_functions([{"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}])
    params = GenerationParams(max_tokens=80, grammar=answer_grammar(functions, choice="function", name="get_weather").grammar)
    found = []
    best = llamacpp_runtime.LlamaCppRuntime._best_allowed
    with monkeypatch.context() as patch:
        patch.setattr(llamacpp_runtime.LlamaCppRuntime, "_best_allowed",
                      staticmethod(lambda sampler, logits: found.append(best(sampler, logits)) or found[-1]))
        scanned = generate(runtime, PROMPT, params)
    assert any(token is not None for token in found)  # the scan decided some steps
    with monkeypatch.context() as patch:
        # never scan: mask the vocabulary on every rejection
        patch.setattr(llamacpp_runtime.LlamaCppRuntime, "_best_allowed", staticmethod(lambda sampler, logits: None))
        masked = generate(runtime, PROMPT, params)
    assert scanned == masked


@pytest.mark.e2e
def test_sampled_constrained_calls_always_parse_and_validate(runtime):
    import json

    from invoker.constrain import answer_grammar
    from invoker.functions import validate_arguments, validate_functions
    from invoker.parse import parse_completion

    # A random model at temperature 1.5: most free draws are rejected, so the masked redraw runs often.
    # (No maxLength: llama.cpp's grammar counts code points, and byte-fallback tokens can still form
    # invalid UTF-8 that decodes to U+FFFD — with or without the free draw.)
    functions = validate_functions([{"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"}}, "required": ["city", "unit"]}}])
    answer = answer_grammar(functions, choice="function", name="get_weather")
    for seed in range(6):
        result = generate(runtime, PROMPT, GenerationParams(temperature=1.5, seed=seed, max_tokens=120, grammar=answer.grammar))
        if result.finish_reason != "stop":
            continue
        parsed = parse_completion(answer.prefill + result.text, functions=functions)
        assert parsed.kind == "function_call", result.text
        assert validate_arguments(json.loads(parsed.arguments), function=functions[0]) == []


@pytest.mark.e2e
def test_closing_the_stream_stops_generation(runtime):
    stream = runtime.stream(PROMPT, GenerationParams(max_tokens=50, ignore_eos=True))
    next(stream)
    decoded = runtime.llama.n_tokens
    stream.close()
    assert decoded <= runtime.count_tokens(PROMPT) + 3  # the prompt and the few tokens behind the first chunk
    assert runtime.llama.n_tokens == decoded  # nothing more was decoded after close


@pytest.mark.e2e
def test_a_prompt_longer_than_the_context_is_refused_before_any_work(runtime):
    with pytest.raises(ValueError, match="longer than the model's context of 2048 tokens"):
        runtime.stream("word " * 3000, GenerationParams())


@pytest.mark.e2e
def test_the_kv_cache_is_reused_for_a_shared_prefix_without_changing_the_output(runtime):
    first = generate(runtime, PROMPT + " a", GenerationParams(max_tokens=10))
    again = generate(runtime, PROMPT + " a", GenerationParams(max_tokens=10))
    other = generate(runtime, PROMPT, GenerationParams(max_tokens=10))
    fresh = load_runtime(runtime.gguf_file)
    assert first == again and other == generate(fresh, PROMPT, GenerationParams(max_tokens=10))


@pytest.mark.e2e
def test_cuda_without_gpu_offload_is_a_clear_error(tiny_f16_gguf):
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama-cpp-python build can offload to a GPU")
    with pytest.raises(RuntimeError, match="device 'cuda' requested but this llama-cpp-python build has no GPU offload"):
        load_runtime(tiny_f16_gguf, device="cuda")


# --- broken files ---------------------------------------------------------------------------------


def write_tiny_gguf(path: Path, *, with_tokenizer: bool) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="llama")
    if with_tokenizer:
        writer.add_tokenizer_model("llama")
        writer.add_token_list(["<unk>", "<s>", "</s>"])
    writer.add_tensor("token_embd.weight", np.zeros((3, 32), dtype=np.float32))
    writer.add_tensor("output.weight", np.ones((3, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match=f"{path}: not a GGUF file"):
        LlamaCppRuntime.load(path)


def test_a_truncated_gguf_is_named(tmp_path):
    path = write_tiny_gguf(tmp_path / "model.gguf", with_tokenizer=True)
    assert inspect_gguf(path).decode_bytes == 3 * 32 * 4  # every tensor but the token embedding
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match=f"{path}: (truncated|corrupt or truncated) GGUF"):
        LlamaCppRuntime.load(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=f"{path}: (truncated|corrupt or truncated) GGUF"):
        LlamaCppRuntime.load(path)


def test_a_gguf_without_tokenizer_is_named(tmp_path):
    path = write_tiny_gguf(tmp_path / "model.gguf", with_tokenizer=False)
    with pytest.raises(ValueError, match=f"{path}: the GGUF has no tokenizer"):
        LlamaCppRuntime.load(path)


def test_a_dir_needs_exactly_one_model_gguf(tmp_path):
    write_tiny_gguf(tmp_path / "imatrix.gguf", with_tokenizer=False)
    with pytest.raises(ValueError, match="expected exactly one model .gguf file, found none"):
        find_gguf(tmp_path)
    write_tiny_gguf(tmp_path / "a-Q4_K_M-noimatrix.gguf", with_tokenizer=True)  # a model, despite "imatrix" in its name
    assert find_gguf(tmp_path) == tmp_path / "a-Q4_K_M-noimatrix.gguf"
    shutil.copy(tmp_path / "a-Q4_K_M-noimatrix.gguf", tmp_path / "b.gguf")
    with pytest.raises(ValueError, match="found a-Q4_K_M-noimatrix.gguf, b.gguf"):
        find_gguf(tmp_path)


@pytest.mark.e2e
def test_one_stream_at_a_time_is_enforced_not_corrupted(runtime):
    assert runtime.max_concurrent_streams == 1  # what the server reads to queue requests
    first = runtime.stream(PROMPT, GenerationParams(max_tokens=5, ignore_eos=True))
    next(first)
    with pytest.raises(RuntimeError, match="one stream at a time"):
        runtime.stream(PROMPT, GenerationParams(max_tokens=5))
    first.close()
    assert generate(runtime, PROMPT, GenerationParams(max_tokens=5)).completion_tokens >= 1


# --- teacher forcing (the fidelity measure) ----------------------------------------------------------


@pytest.mark.e2e
def test_logprobs_agree_between_runtimes_and_with_greedy_decoding(runtime, hf_runtime):
    ids = hf_runtime.encode(PROMPT)
    assert runtime.encode(PROMPT) == ids
    ours, theirs = runtime.logprobs(ids), hf_runtime.logprobs(ids)
    assert ours.shape == theirs.shape == (len(ids), len(hf_runtime.tokenizer))
    assert np.allclose(np.exp(ours).sum(axis=-1), 1.0, atol=1e-4)
    assert np.abs(ours - theirs).max() < 0.05  # F16 weights in llama.cpp vs fp32 compute in torch
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.95
    first = generate(runtime, PROMPT, GenerationParams(max_tokens=1, ignore_eos=True))
    assert runtime._token_bytes[int(ours[-1].argmax())].decode("utf-8", errors="replace") == first.text


@pytest.mark.e2e
def test_scoring_leaves_generation_as_it_was(runtime):
    params = GenerationParams(max_tokens=12)
    before = generate(runtime, PROMPT, params)
    runtime.logprobs(runtime.encode(PROMPT + " anything else"))
    assert generate(runtime, PROMPT, params) == before


@pytest.mark.e2e
def test_long_sequences_are_scored_across_several_batches(runtime, hf_runtime):
    ids = hf_runtime.encode(PROMPT * 8)[:1100]  # over llama.cpp's 512-token batch twice
    ours, theirs = runtime.logprobs(ids), hf_runtime.logprobs(ids)
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.95


# --- batched greedy decoding (what eval uses) ----------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("params", BATCH_PARAMS)
def test_generate_batch_equals_one_by_one(runtime, params):
    batched = runtime.generate_batch(BATCH_PROMPTS, params)
    assert batched == [generate(runtime, prompt, params) for prompt in BATCH_PROMPTS]


@pytest.mark.e2e
def test_generate_batch_gives_each_row_its_own_budget_and_grows_its_context(runtime):
    # a prompt 6 tokens short of the context gets a budget of 6; the others keep max_tokens. The batch
    # holds more cells than the model's context, and a prompt over n_batch (512) is read in chunks.
    near_full = runtime.encode(PROMPT * 40)[1 : runtime.context_length - 6]
    long_prompt = runtime.llama.detokenize(near_full).decode("utf-8", errors="ignore")
    prompts = [long_prompt, BATCH_PROMPTS[1], BATCH_PROMPTS[2]]
    params = GenerationParams(max_tokens=16, ignore_eos=True)
    batched = runtime.generate_batch(prompts, params)
    assert batched == [generate(runtime, prompt, params) for prompt in prompts]
    assert [g.completion_tokens for g in batched] == [runtime.context_length - batched[0].prompt_tokens, 16, 16]
    assert batched[0].finish_reason == "length" and batched[0].completion_tokens < 16
    assert runtime._batch_context.cells > runtime.context_length


@pytest.mark.e2e
def test_generate_batch_refuses_a_prompt_over_the_context(runtime):
    with pytest.raises(ValueError, match="longer than the model's context"):
        runtime.generate_batch([PROMPT, "word " * 3000], GenerationParams(max_tokens=4))
