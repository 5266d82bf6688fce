"""The HF tokenizer we write must encode exactly as sentencepiece (and so as llama.cpp) does."""

import sentencepiece as spm
from transformers import AutoTokenizer

from invoker.tokenizer import train_tokenizer

CORPUS = [
    "hello world",
    "  two leading spaces",
    " one leading space",
    '{"city": "Zürich", "when": "東京 12:30"}\n\nUSER: hi\nASSISTANT:',
    "tab\there and\r\nwindows lines",
    '```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"x\\": 1}"}}```',
    "a  b   c    d",
    "emoji 🙂 and math ∑ and 12345.678",
    "trailing spaces   ",
]


def _training_text():
    words = "get set weather city convert currency book table please can you the a of to".split()
    for i in range(3000):
        yield " ".join(words[(i * 7 + j) % len(words)] for j in range(12)) + f' {{"n": {i}, "s": "Zürich"}}'


def test_hf_tokenizer_matches_sentencepiece(tmp_path):
    train_tokenizer(texts=_training_text(), vocab_size=400, out_dir=tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert (sp.bos_id(), sp.eos_id(), sp.unk_id()) == (1, 2, 0)
    assert (hf.bos_token_id, hf.eos_token_id) == (1, 2)
    for text in CORPUS:
        ids = hf(text)["input_ids"]
        assert ids == [1] + sp.encode(text), text
        assert hf.decode(ids, skip_special_tokens=True) == text


def test_vocab_too_large_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="could not train a 100000-token vocabulary"):
        train_tokenizer(texts=iter(["tiny corpus"] * 10), vocab_size=100000, out_dir=tmp_path)
