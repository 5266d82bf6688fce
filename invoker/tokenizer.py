"""Llama-2-style tokenizers: a sentencepiece BPE model with byte fallback, and its HF twin.

Invoker is a Llama-2 model, so its tokenizer is Llama-2's kind: sentencepiece BPE with byte
fallback, ``<unk>``/``<s>``/``</s>`` at ids 0/1/2, a dummy-prefix space, digits split, no text
normalisation. We train such a tokenizer for the bundled model and write beside ``tokenizer.model``
a ``tokenizer.json`` that encodes exactly as sentencepiece does (llama.cpp matches sentencepiece,
so this keeps HF, GGUF and calibration token ids identical).

transformers 5 rebuilds ``LlamaTokenizer``'s pipeline with a ``Metaspace`` pre-tokenizer that does
not prepend the dummy space when the text already starts with one (``" x"`` → different ids than
sentencepiece). We therefore write the original Llama-2 pipeline (``Prepend("▁")`` +
``Replace(" ", "▁")`` normaliser, no pre-tokenizer) and declare the generic
``PreTrainedTokenizerFast`` class, which loads ``tokenizer.json`` as written.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}

# Llama-2's own trainer settings (read from its tokenizer.model's trainer_spec), bar vocab size.
_LLAMA2_TRAINER_SPEC = dict(
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    normalization_rule_name="identity",
    allow_whitespace_only_pieces=True,
    split_by_unicode_script=True,
    split_by_number=True,
    split_by_whitespace=True,
    max_sentencepiece_length=16,
    character_coverage=0.99995,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
)


def train_tokenizer(*, texts: Iterable[str], vocab_size: int, out_dir: str | Path, seed_threads: int = 1) -> Path:
    """Train a Llama-2-style sentencepiece BPE tokenizer on ``texts`` and write it, HF-loadable, to ``out_dir``.

    ``seed_threads=1`` keeps training deterministic. Raises ``ValueError`` with sentencepiece's
    reason when the corpus cannot support ``vocab_size``.
    """
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=buffer,
            vocab_size=vocab_size,
            num_threads=seed_threads,
            minloglevel=2,
            **_LLAMA2_TRAINER_SPEC,
        )
    except RuntimeError as err:  # e.g. "Vocabulary size too high (4096). Please set it to a value <= 3127."
        raise ValueError(f"sentencepiece could not train a {vocab_size}-token vocabulary: {err}") from None
    (out / "tokenizer.model").write_bytes(buffer.getvalue())
    write_hf_tokenizer_files(model_dir=out)
    return out


def write_hf_tokenizer_files(*, model_dir: str | Path) -> None:
    """Write ``tokenizer.json``/``tokenizer_config.json`` for the ``tokenizer.model`` in ``model_dir``."""
    from tokenizers import normalizers
    from transformers import LlamaTokenizer

    model_dir = Path(model_dir)
    hf = LlamaTokenizer.from_pretrained(str(model_dir), legacy=True, add_bos_token=True, add_eos_token=False)
    backend = hf.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    backend.save(str(model_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **SPECIAL_TOKENS,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
    }
    config_path = model_dir / "tokenizer_config.json"
    if config_path.exists():  # keep keys others wrote (e.g. the chat template)
        config = {**json.loads(config_path.read_text()), **config}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (model_dir / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS, indent=2) + "\n")
