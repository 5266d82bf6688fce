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


def token_bytes_table(tokenizer) -> list[bytes]:
    """The bytes each token id of a Hugging Face tokenizer stands for; special tokens stand for nothing.

    Two vocabulary kinds are understood: sentencepiece-style (Llama-2: ``▁`` is a space, ``<0xNN>``
    byte-fallback pieces are raw bytes) and GPT-2-style byte-level BPE (Llama-3, Qwen, SmolLM: each
    byte is written as one printable character, ``Ġ`` for a space). Added tokens that are not
    special (user-defined words) stand for their own text. Raises ``ValueError`` for anything else.
    """
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    added = {index: token for index, token in tokenizer.added_tokens_decoder.items()}
    if _is_byte_level(tokenizer):
        decode = _byte_level_piece
    elif any(piece == "<0x41>" for piece in pieces if piece):
        decode = _sentencepiece_piece
    else:
        raise ValueError(
            "tokenizer is neither sentencepiece-style (no <0xNN> byte-fallback pieces) nor byte-level BPE: "
            "cannot map its tokens to bytes"
        )
    special = set(tokenizer.all_special_ids)
    table = []
    for token_id, piece in enumerate(pieces):
        token = added.get(token_id)
        if piece is None or token_id in special or (token is not None and token.special):
            table.append(b"")
        elif token is not None:
            table.append(token.content.encode("utf-8"))
        else:
            table.append(decode(piece))
    return table


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = [decoder.get("type")] + [step.get("type") for step in decoder.get("decoders") or []]
    return "ByteLevel" in kinds


def _sentencepiece_piece(piece: str) -> bytes:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("▁", " ").encode("utf-8")


def _byte_level_piece(piece: str) -> bytes:
    table = _byte_level_alphabet()
    return bytes(table[char] for char in piece)


_ALPHABET: dict[str, int] = {}


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted (character -> byte)."""
    if not _ALPHABET:
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        extra = 0
        for byte in range(256):
            if byte in printable:
                _ALPHABET[chr(byte)] = byte
            else:
                _ALPHABET[chr(256 + extra)] = byte
                extra += 1
    return _ALPHABET
