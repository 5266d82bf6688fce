"""The calibration set every converter shares: Invoker conversations, rendered, tokenized, packed.

A converter that needs activations (GGUF's importance matrix, GPTQ, AWQ) calibrates on what the
model will really see: conversations rendered with Invoker's own prompt format
(``invoker.prompt.render_prompt``, the full conversation including the target assistant turn),
each tokenized as ``BOS + text + EOS`` — the same framing as training. Optionally a share of the
documents is general text, because calibrating a real model on chat data alone has been seen to
cost general quality (docs/GGUF.md, "Calibration").

Documents are packed greedily, whole, into samples of at most ``max_length`` tokens, so every
sample starts with BOS at a real document start and short conversations are not dropped; a
document longer than ``max_length`` is truncated to it. Everything is deterministic for a spec:
its ``sha256`` (over the token ids) goes into each artifact's manifest.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from invoker.files import sha256_text

SOURCES_HELP = '"synthetic", a .jsonl/.json file or directory of conversations, or a Hub dataset id'
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


@dataclass(frozen=True)
class CalibrationSpec:
    """What to calibrate on. The defaults suit a 13B model (128 samples x 2048 tokens);
    for tiny-invoker use ``max_length=512``.

    ``general_text``: a UTF-8 ``.txt`` file (passages separated by blank lines), a ``.jsonl`` file
    (one ``{"text": ...}`` per line) or a named corpus (``corpus:botchan``, ``convert.corpus``);
    ``general_text_fraction`` of the documents are drawn from it — with 1, all of them until it runs out
    (generic text only, for comparisons).
    """

    source: str = "synthetic"
    n_samples: int = 128
    max_length: int = 2048
    seed: int = 0
    general_text: str | None = None
    general_text_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"calibration source must be {SOURCES_HELP}, got {self.source!r}")
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 1:
            raise ValueError(f"calibration n_samples must be an integer >= 1, got {self.n_samples!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 16:
            raise ValueError(f"calibration max_length must be an integer >= 16, got {self.max_length!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"calibration seed must be an integer, got {self.seed!r}")
        if not isinstance(self.general_text_fraction, (int, float)) or not 0 <= self.general_text_fraction <= 1:
            raise ValueError(f"general_text_fraction must be in [0, 1], got {self.general_text_fraction!r}")
        if (self.general_text is None) != (self.general_text_fraction == 0):
            raise ValueError("general_text and general_text_fraction go together: give both (fraction > 0) or neither")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationSet:
    """Token ids ready for a converter. ``input_ids[i]`` starts with BOS and has at most ``max_length`` ids."""

    spec: CalibrationSpec
    texts: list[str]  # the documents packed into input_ids, in order
    input_ids: list[list[int]]
    sha256: str  # over input_ids (see sha256_ids)

    @property
    def n_tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)

    def to_manifest(self) -> dict:
        """The manifest's ``calibration`` field."""
        return {
            "spec": self.spec.to_dict(),
            "sha256": self.sha256,
            "n_samples": len(self.input_ids),
            "n_tokens": self.n_tokens,
            "n_documents": len(self.texts),
        }


def build_calibration(*, tokenizer_dir: str | Path, spec: CalibrationSpec) -> CalibrationSet:
    """Render, tokenize and pack the calibration documents ``spec`` names, with the tokenizer in ``tokenizer_dir``."""
    tokenizer = load_tokenizer(tokenizer_dir)
    documents = mix_documents(
        conversations=rendered_conversations(spec),
        general=general_passages(general_text_file(spec.general_text)) if spec.general_text else iter(()),
        general_fraction=spec.general_text_fraction,
        seed=spec.seed,
    )
    texts, input_ids = pack_documents(documents=documents, tokenizer=tokenizer, spec=spec)
    if not input_ids:
        raise ValueError(f"calibration source {spec.source!r} yielded no documents")
    return CalibrationSet(spec=spec, texts=texts, input_ids=input_ids, sha256=sha256_ids(input_ids))


def load_tokenizer(tokenizer_dir: str | Path):
    """The HF tokenizer in ``tokenizer_dir``, with BOS and EOS ids; a clear error when there is none."""
    from transformers import AutoTokenizer

    directory = Path(tokenizer_dir)
    if not directory.is_dir():
        raise ValueError(f"{directory}: no such directory (expected a model dir with a tokenizer)")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{directory}: no tokenizer ({' or '.join(TOKENIZER_FILES)}) in this directory")
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(f"{directory}: the tokenizer defines no BOS or no EOS token; Invoker needs both")
    return tokenizer


def rendered_conversations(spec: CalibrationSpec) -> Iterator[str]:
    """Each calibration conversation as Invoker renders it (prompt and target turn, no BOS/EOS)."""
    from invoker.prompt import render_prompt

    for record in conversation_records(spec):
        yield render_prompt(record["messages"], functions=record.get("functions") or None, add_generation_prompt=False)


def conversation_records(spec: CalibrationSpec) -> Iterator[dict]:
    """``synthetic``: the generator's calibration split, as many as packing asks for.
    Otherwise all records of the file/dir/Hub dataset, shuffled with ``spec.seed``."""
    if spec.source == "synthetic":
        from invoker.data.synth import generate_conversations

        # The generator is prefix-stable (record i does not depend on n): grow n until packing stops asking.
        n, done = max(64, spec.n_samples * spec.max_length // 256), 0
        while True:
            records = generate_conversations(split="calibration", n=n, seed=spec.seed)
            yield from records[done:]
            done, n = n, n * 2
    from invoker.data.loaders import load_conversations

    records = load_conversations(spec.source)
    random.Random(spec.seed).shuffle(records)
    yield from records


def general_text_file(general_text: str) -> Path:
    """The file behind ``general_text``: a named corpus is fetched (once) and cleaned, a path is itself."""
    from convert.corpus import corpus_file, is_corpus

    return corpus_file(general_text) if is_corpus(general_text) else Path(general_text)


def general_passages(path: str | Path) -> Iterator[str]:
    """Passages of a general-text file: ``.jsonl`` lines' ``text`` fields, else blank-line-separated paragraphs."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"general_text {path}: no such file")
    if path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"general_text {path}, line {number}: expected a JSON object with a \"text\" string") from None
            if isinstance(text, str) and text.strip():
                yield text
        return
    for passage in path.read_text(encoding="utf-8").split("\n\n"):
        if passage.strip():
            yield passage.strip()


def mix_documents(*, conversations: Iterator[str], general: Iterator[str], general_fraction: float, seed: int) -> Iterator[str]:
    """Interleave the two streams: each document is general text with probability ``general_fraction``
    (seeded), until that stream runs out; the conversations decide when the mix ends."""
    rng = random.Random(seed)
    general_left = general_fraction > 0
    for conversation in conversations:
        while general_left and rng.random() < general_fraction:
            passage = next(general, None)
            if passage is None:
                general_left = False
                break
            yield passage
        yield conversation


def pack_documents(*, documents: Iterator[str], tokenizer, spec: CalibrationSpec) -> tuple[list[str], list[list[int]]]:
    """Greedily pack whole ``BOS + document + EOS`` sequences into ``spec.n_samples`` samples of at most
    ``spec.max_length`` ids (a longer document is truncated and fills a sample alone)."""
    texts: list[str] = []
    samples: list[list[int]] = []
    current: list[int] = []
    for text in documents:
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        ids = ids[: spec.max_length]
        if current and len(current) + len(ids) > spec.max_length:
            samples.append(current)
            current = []
            if len(samples) == spec.n_samples:
                return texts, samples
        current = current + ids
        texts.append(text)
    if current:
        samples.append(current)
    return texts, samples


def sha256_ids(input_ids: list[list[int]]) -> str:
    """sha256 of the samples as compact JSON (``[[1,2,...],...]``)."""
    return sha256_text(json.dumps(input_ids, separators=(",", ":")))
