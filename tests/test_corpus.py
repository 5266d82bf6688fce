"""The generic-English calibration corpus: cleaned from a pinned registry package, passages cut at sentence ends."""

from __future__ import annotations

import pytest

from convert.corpus import CORPORA, clean_text, corpus_file, passages

FAKE_BOOK = "\r\n".join([
    "\ufeffProject Gutenberg's A Book, by Someone",
    "This eBook is for the use of anyone anywhere at no cost.",
    "*** START OF THIS PROJECT GUTENBERG EBOOK A BOOK ***",
    "Produced by A Volunteer",
    "A BOOK",
    "CHAPTER I.",
    "It was a dark night.[A] The rain fell on the",
    "roofs of the town. \"Who is there?\" she asked. Nobody answered her.",
    "CHAPTER II",
    "Morning came. The end was near.",
    "--(THE END)--",
    "[A: darke]",
    "*** END OF THIS PROJECT GUTENBERG EBOOK A BOOK ***",
    "This file should be named 1.txt",
])


def test_only_the_book_is_kept_unwrapped_by_chapter_without_notes_or_licence():
    chapters = clean_text(FAKE_BOOK, CORPORA["botchan"])
    assert chapters == ["A BOOK",
                        "It was a dark night. The rain fell on the roofs of the town. \"Who is there?\" she asked. Nobody answered her.",
                        "Morning came. The end was near."]


def test_passages_end_at_sentence_ends_and_never_cross_a_chapter():
    chapters = clean_text(FAKE_BOOK, CORPORA["botchan"])
    assert passages(chapters, words=6) == ["A BOOK", "It was a dark night. The rain fell on the roofs of the town.",
                                           "\"Who is there?\" she asked. Nobody answered her.", "Morning came. The end was near."]


def test_an_unknown_corpus_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'corpus:nope'; known: corpus:botchan"):
        corpus_file("corpus:nope", cache=tmp_path)


@pytest.mark.e2e
def test_botchan_comes_from_the_pinned_sdist_as_about_48k_words_of_passages(tmp_path):
    path = corpus_file("corpus:botchan", cache=tmp_path)  # pip download of sentencepiece's sdist, sha256-checked
    found = path.read_text(encoding="utf-8").strip().split("\n\n")
    words = sum(len(p.split()) for p in found)
    assert 45_000 < words < 50_000 and len(found) > 250
    assert "Gutenberg" not in path.read_text(encoding="utf-8")
    assert found[-1].endswith("So Kiyo's grave is in the Yogen temple at Kobinata.")
    assert corpus_file("botchan", cache=tmp_path) == path  # built once
