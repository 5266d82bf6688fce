"""GPT-2-style byte-level BPE vocabularies (Llama-3, Qwen, SmolLM) work wherever sentencepiece ones do.

On ``tiny_bpe_model`` (random weights, SmolLM2's 49152-token vocabulary): token bytes, BOS, greedy and
batched decoding through the transformers runtime, GGUF conversion and quantization through llama.cpp,
and the same prompt tokens and greedy text through both runtimes. The constrained-decoding and
calibration tests run on both vocabulary kinds (``any_random_model``).
"""

from __future__ import annotations

import pytest
import torch

from invoker.prompt import render_prompt
from invoker.runtimes import GenerationParams, generate, load_runtime
from invoker.tokenizer import token_bytes_table

PROMPT = render_prompt(
    [{"role": "user", "content": "Wie spät ist es in Zürich? 😀"}],
    functions=[{"name": "get_time", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}],
)
TEXTS = ["Zürich café naïve", "  two spaces\tand a tab\n", "emoji 😀 and 中文", '{"a": "\\"quoted\\""}', "ASSISTANT: ```{}```"]


@pytest.fixture(scope="module")
def hf_runtime(tiny_bpe_model):
    return load_runtime(tiny_bpe_model)


@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_spell_the_text_back_in_either_vocabulary(any_random_model, text):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(any_random_model))
    table = token_bytes_table(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    dummy_prefix = b"" if "bpe" in any_random_model.name else b" "  # sentencepiece writes one space before the text
    assert b"".join(table[i] for i in ids) == dummy_prefix + text.encode("utf-8")
    assert all(table[i] == b"" for i in tokenizer.all_special_ids)


def test_a_tokenizer_of_neither_kind_is_refused():
    class WordLevel:
        added_tokens_decoder = {}
        all_special_ids = []

        def __len__(self):
            return 2

        def convert_ids_to_tokens(self, ids):
            return ["hello", "world"]

    with pytest.raises(ValueError, match="neither sentencepiece-style .* nor byte-level BPE"):
        token_bytes_table(WordLevel())


def test_prompts_start_with_bos_and_greedy_text_matches_model_generate(hf_runtime):
    tokenizer = hf_runtime.tokenizer
    assert tokenizer.bos_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    ids = hf_runtime._encode(PROMPT)
    assert ids[0] == tokenizer.bos_token_id and ids[1:] == tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    result = generate(hf_runtime, PROMPT, GenerationParams(max_tokens=16, ignore_eos=True))
    with torch.inference_mode():
        out = hf_runtime.model.generate(torch.tensor([ids]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    table = token_bytes_table(tokenizer)
    assert result.text == b"".join(table[i] for i in out[0, len(ids):].tolist()).decode("utf-8", errors="replace")
    batched = hf_runtime.generate_batch([PROMPT, "USER: hi\nASSISTANT:"], GenerationParams(max_tokens=16, ignore_eos=True))
    assert batched[0] == result


@pytest.mark.e2e
def test_gguf_of_a_byte_level_model_tokenizes_and_generates_like_transformers(tiny_bpe_f16_gguf, hf_runtime):
    runtime = load_runtime(tiny_bpe_f16_gguf)
    assert runtime.count_tokens(PROMPT) == hf_runtime.count_tokens(PROMPT)
    assert runtime.llama.tokenize(PROMPT.encode("utf-8"), add_bos=True, special=True) == hf_runtime._encode(PROMPT)
    params = GenerationParams(max_tokens=12, ignore_eos=True)
    assert generate(runtime, PROMPT, params) == generate(hf_runtime, PROMPT, params)


@pytest.mark.e2e
def test_byte_level_model_quantizes_to_q4_k_m_with_an_importance_matrix(tiny_bpe_model, tiny_bpe_f16_gguf, tmp_path):
    from convert import gguf as gguf_convert
    from convert.calibration import CalibrationSpec, build_calibration
    from invoker.runtimes.llamacpp_runtime import inspect_gguf

    calibration = build_calibration(tokenizer_dir=tiny_bpe_model, spec=CalibrationSpec(n_samples=4, max_length=256))
    out = tmp_path / "gguf-Q4_K_M"
    out.mkdir()
    gguf_convert.convert(source_dir=tiny_bpe_model, out_dir=out, variant="Q4_K_M", calibration=calibration,
                         progress=False, model_name="tiny", f16_gguf=tiny_bpe_f16_gguf / "tiny-F16.gguf")
    types = inspect_gguf(next(out.glob("*.gguf"))).tensor_types
    assert {kind for name, kind in types.items() if name.endswith(".weight") and "norm" not in name} <= {"Q4_K", "Q6_K"}
    result = generate(load_runtime(out), PROMPT, GenerationParams(max_tokens=8, ignore_eos=True))
    assert result.completion_tokens == 8
