"""The transformers runtime and the loader, on a tiny random Llama (fast: no training)."""

from __future__ import annotations

import json

import pytest
import torch

from invoker.runtimes import (
    GenerationParams,
    ModelFormatError,
    StopMatcher,
    detect_format,
    generate,
    load_runtime,
)
from invoker.runtimes.transformers_runtime import TransformersRuntime, token_bytes_table
from samples import BATCH_PARAMS, BATCH_PROMPTS

PROMPT = "USER: what is the weather in Paris?\nASSISTANT:"


@pytest.fixture(scope="module")
def runtime(tiny_random_model):
    return load_runtime(tiny_random_model)


def _scripted(runtime, monkeypatch, ids):
    """Make the runtime 'generate' exactly ``ids`` (the model is bypassed, the decode loop is not)."""
    script = iter(ids)
    monkeypatch.setattr(runtime, "_next_token", lambda *args: next(script))


# --- loading -----------------------------------------------------------------------------------


def test_load_computes_in_float32_on_cpu(runtime, tiny_random_model):
    assert isinstance(runtime, TransformersRuntime)
    assert (runtime.format, runtime.runtime) == ("fp16", "transformers")
    assert runtime.model_path == tiny_random_model
    assert runtime.context_length == 2048
    assert runtime.model.dtype == torch.float32
    assert not runtime.model.training


def test_cuda_without_cuda_is_a_clear_error(tiny_random_model):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        load_runtime(tiny_random_model, device="cuda")


# --- decoding ----------------------------------------------------------------------------------


def test_greedy_is_deterministic_and_matches_model_generate(runtime):
    params = GenerationParams(max_tokens=24)
    first, second = generate(runtime, PROMPT, params), generate(runtime, PROMPT, params)
    assert first == second
    ids = runtime.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = runtime.model.generate(ids, max_new_tokens=24, min_new_tokens=24, do_sample=False)
    table = token_bytes_table(runtime.tokenizer)
    expected = b"".join(table[i] for i in out[0, ids.shape[1] :].tolist()).decode("utf-8", errors="replace")
    assert first.text == expected


def test_sampling_is_reproducible_per_seed(runtime):
    def sample(seed):
        return generate(runtime, PROMPT, GenerationParams(temperature=1.0, max_tokens=20, seed=seed)).text

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_tiny_top_p_is_greedy(runtime):
    greedy = generate(runtime, PROMPT, GenerationParams(max_tokens=12)).text
    nucleus = generate(runtime, PROMPT, GenerationParams(temperature=1.5, top_p=1e-6, max_tokens=12, seed=3)).text
    assert nucleus == greedy


def test_max_tokens_gives_length_and_exact_counts(runtime):
    out = generate(runtime, PROMPT, GenerationParams(max_tokens=7))
    assert out.finish_reason == "length"
    assert out.completion_tokens == 7
    assert out.prompt_tokens == len(runtime.tokenizer(PROMPT)["input_ids"]) == runtime.count_tokens(PROMPT)
    assert runtime.count_tokens("") == 1  # BOS


def test_stop_string_split_across_tokens_is_cut_and_never_leaks(runtime):
    chunks = [c.text for c in runtime.stream(PROMPT, GenerationParams(max_tokens=40))]
    pieces = [t for t in chunks if t]
    k = next(i for i in range(3, len(pieces) - 1) if len(pieces[i]) >= 1 and len(pieces[i + 1]) >= 1)
    stop = pieces[k][-1:] + pieces[k + 1][:1]  # ends one token, starts the next
    full = "".join(chunks)
    expected = full[: full.index(stop)]

    streamed = list(runtime.stream(PROMPT, GenerationParams(max_tokens=40, stop=("never-there", stop))))
    text = "".join(c.text for c in streamed)
    assert text == expected
    assert stop not in text
    assert streamed[-1].finish_reason == "stop"
    assert all(c.finish_reason is None for c in streamed[:-1])


def test_closing_the_stream_stops_generation(runtime):
    calls = []
    handle = runtime.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        stream = runtime.stream(PROMPT, GenerationParams(max_tokens=200))
        next(stream)
        seen = len(calls)
        stream.close()
        assert seen < 10
        assert len(calls) == seen
    finally:
        handle.remove()


def test_prompt_longer_than_context_is_refused_before_streaming(runtime):
    prompt = "get the weather " * 2000
    n = runtime.count_tokens(prompt)
    with pytest.raises(ValueError, match=rf"{n} tokens.*context of 2048"):
        runtime.stream(prompt, GenerationParams())


def test_multibyte_characters_are_emitted_whole(runtime, monkeypatch):
    text = "Zürich 東京 🙂!"
    ids = runtime.tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = runtime.tokenizer.convert_ids_to_tokens(ids)
    assert sum(p.startswith("<0x") for p in pieces) >= 8  # byte fallback really is exercised
    _scripted(runtime, monkeypatch, ids + [runtime.tokenizer.eos_token_id])
    chunks = list(runtime.stream(PROMPT, GenerationParams(max_tokens=100)))
    assert "".join(c.text for c in chunks) == " " + text  # the encoder's dummy-prefix space, decoded
    assert not any("\ufffd" in c.text for c in chunks)
    assert (chunks[-1].finish_reason, chunks[-1].completion_tokens) == ("stop", len(ids) + 1)


def test_truncated_multibyte_character_becomes_a_replacement_at_the_end(runtime, monkeypatch):
    ids = runtime.tokenizer("東", add_special_tokens=False)["input_ids"]
    _scripted(runtime, monkeypatch, ids[:-1])
    out = generate(runtime, PROMPT, GenerationParams(max_tokens=len(ids) - 1))
    assert out.text.endswith("\ufffd")
    assert out.finish_reason == "length"


def test_held_back_stop_prefix_is_released_at_eos(runtime, monkeypatch):
    ids = runtime.tokenizer("get the", add_special_tokens=False)["input_ids"]
    _scripted(runtime, monkeypatch, ids + [runtime.tokenizer.eos_token_id])
    out = generate(runtime, PROMPT, GenerationParams(stop=("thex",)))
    assert (out.text, out.finish_reason) == (" get the", "stop")


# --- stop strings, params ----------------------------------------------------------------------


def test_stop_matcher_holds_back_possible_prefixes():
    m = StopMatcher(("</end>", "STOP"))
    assert m.feed("hello </") == ("hello ", False)
    assert m.feed("e") == ("", False)
    assert m.feed("x and S") == ("</ex and ", False)
    assert m.feed("TO") == ("", False)
    assert m.feed("P tail") == ("", True)
    assert m.stopped


def test_stop_matcher_earliest_stop_wins_and_flush_releases():
    m = StopMatcher(("bb", "ab"))
    assert m.feed("xabb") == ("x", True)
    m = StopMatcher(("abc",))
    assert m.feed("zab") == ("z", False)
    assert m.flush() == "ab"


@pytest.mark.parametrize(
    "kwargs",
    [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(max_tokens=0), dict(stop=("",)), dict(seed="x")],
)
def test_bad_generation_params_are_refused(kwargs):
    with pytest.raises(ValueError):
        GenerationParams(**kwargs)


def test_stop_accepts_a_list_or_a_string():
    assert GenerationParams(stop=["a", "b"]).stop == ("a", "b")
    assert GenerationParams(stop="ab").stop == ("ab",)


# --- formats -----------------------------------------------------------------------------------


def _config(tmp_path, **extra):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **extra}))


def test_detect_format_fp16(tmp_path, tiny_random_model):
    assert detect_format(tiny_random_model) == "fp16"
    _config(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert detect_format(tmp_path) == "fp16"


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_detect_format_quantized(tmp_path, method):
    _config(tmp_path, quantization_config={"quant_method": method, "bits": 4})
    assert detect_format(tmp_path) == method


def test_detect_format_gguf(tmp_path):
    (tmp_path / "tiny-invoker-Q4_K_M.gguf").write_bytes(b"GGUF")
    assert detect_format(tmp_path) == "gguf"
    assert detect_format(tmp_path / "tiny-invoker-Q4_K_M.gguf") == "gguf"


def test_manifest_format_wins(tmp_path):
    _config(tmp_path, quantization_config={"quant_method": "gptq"})
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "awq"}))
    assert detect_format(tmp_path) == "awq"
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "int3"}))
    with pytest.raises(ModelFormatError, match="int3"):
        detect_format(tmp_path)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "not a model directory"),
        (lambda p: _config(p), "not a model directory"),
        (lambda p: _config(p, quantization_config={"quant_method": "bitsandbytes"}), "bitsandbytes"),
        (lambda p: (p / "config.json").write_text("{oops"), "not readable JSON"),
    ],
)
def test_detect_format_errors_name_the_path(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ModelFormatError, match=message) as err:
        detect_format(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file"):
        detect_format(tmp_path / "nope")


def test_format_without_a_runtime_lists_what_is_supported(tmp_path, tiny_random_model, monkeypatch):
    import invoker.runtimes as runtimes

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelFormatError, match=r"runtime 'transformers' does not load format 'gguf'.*transformers: fp16, gptq, awq"):
        load_runtime(tmp_path, runtime="transformers")
    monkeypatch.setattr(runtimes, "RUNTIMES", {k: v for k, v in runtimes.RUNTIMES.items() if k != "llama.cpp"})
    with pytest.raises(ModelFormatError, match=r"no runtime loads format 'gguf'"):
        load_runtime(tmp_path)
    with pytest.raises(ModelFormatError, match="unknown runtime 'vllm'"):
        load_runtime(tiny_random_model, runtime="vllm")


# --- batched greedy decoding (what eval uses) ----------------------------------------------------


@pytest.mark.parametrize("params", BATCH_PARAMS)
def test_generate_batch_equals_one_by_one(runtime, params):
    batched = runtime.generate_batch(BATCH_PROMPTS, params)
    assert batched == [generate(runtime, prompt, params) for prompt in BATCH_PROMPTS]


def test_generate_batch_rows_stop_at_their_own_eos_and_leave_the_batch(runtime, monkeypatch):
    eos = runtime.tokenizer.eos_token_id
    vocab = len(runtime._token_bytes)
    shapes = []

    def scripted_forward(*, input_ids, **kwargs):  # row 0 ends at once, row 1 runs to its budget
        shapes.append(tuple(input_ids.shape))
        logits = torch.zeros((input_ids.shape[0], 1, vocab))
        logits[:, 0, 40] = 1.0
        if input_ids.shape[0] == 2:
            logits[0, 0, eos] = 2.0
        return type("Output", (), {"logits": logits})()

    monkeypatch.setattr(runtime, "model", type("Model", (), {"__call__": lambda self, **kw: scripted_forward(**kw),
                                                             "config": runtime.model.config})())
    first, second = runtime.generate_batch(BATCH_PROMPTS[:2], GenerationParams(max_tokens=5))
    assert (first.finish_reason, first.completion_tokens, first.text) == ("stop", 1, "")
    assert (second.finish_reason, second.completion_tokens) == ("length", 5)
    assert second.text == runtime._token_bytes[40].decode() * 5
    assert shapes[0][0] == 2 and shapes[1:] == [(1, 1)] * 4  # the finished row is no longer computed


def test_generate_batch_refuses_a_prompt_over_the_context(runtime):
    with pytest.raises(ValueError, match="longer than the model's context"):
        runtime.generate_batch([PROMPT, "word " * 3000], GenerationParams(max_tokens=4))


# --- damaged checkpoints are one clean error, never a traceback or a huge allocation (issue 24) ----------


def _damaged_copy(tmp_path, source, change):
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(source, copy)
    change(copy)
    return copy


def _set_config(**values):
    def change(copy):
        config = json.loads((copy / "config.json").read_text())
        config.update(values)
        (copy / "config.json").write_text(json.dumps(config))
    return change


def _weights(edit):
    def change(copy):
        weights = copy / "model.safetensors"
        weights.write_bytes(edit(weights.read_bytes()))
    return change


@pytest.mark.parametrize(("change", "file", "message"), [
    (_weights(lambda data: data[: len(data) // 2]), "model.safetensors", "not a readable safetensors file"),
    (_weights(lambda data: (1 << 62).to_bytes(8, "little") + data[8:]), "model.safetensors", "not a readable safetensors file"),
    (_weights(lambda data: (20).to_bytes(8, "little") + b"this is not json !!!" + data[28:]), "model.safetensors",
     "not a readable safetensors file"),
    (_set_config(hidden_size=10**9), "config.json", "hidden_size must be an integer in [1, 131072], got 1000000000"),
    (_set_config(num_hidden_layers=-3), "config.json", "num_hidden_layers must be an integer in [1, 4096], got -3"),
    (_set_config(vocab_size="many"), "config.json", "vocab_size must be an integer"),
])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, tiny_random_model, capsys, change, file, message):
    from pipelines.cli import main

    damaged = _damaged_copy(tmp_path, tiny_random_model, change)
    assert main(["eval", str(damaged), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{damaged / file}: " in err and message in err, err
    assert "Traceback" not in err
