"""Document chunking: sizes, overlap, boundaries, and every character covered."""

from __future__ import annotations

import itertools

import pytest

from appliance.chunking import chunk_text


def test_chunks_respect_size_and_overlap() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = chunk_text(text, 300, 60)
    assert all(len(c) <= 300 for c in chunks)
    assert all(c.endswith(".") for c in chunks[:-1])  # cut at sentence ends
    for before, after in itertools.pairwise(chunks):
        assert after[:20] in before  # the next chunk starts inside the previous one: they overlap
    assert "Sentence number 0 is" in chunks[0] and "Sentence number 199 is here." in chunks[-1]


def test_paragraphs_win_over_sentences() -> None:
    text = ("A" * 150 + ".\n\n") + "B" * 100
    assert chunk_text(text, 200, 0)[0] == "A" * 150 + "."


def test_unbroken_text_still_splits() -> None:
    chunks = chunk_text("x" * 1000, 100, 10)
    assert all(len(c) == 100 for c in chunks[:-1]) and len(chunks) == 11


@pytest.mark.parametrize("text", ["", "   \n\n  "])
def test_empty_text_has_no_chunks(text: str) -> None:
    assert chunk_text(text, 100, 10) == []


def test_overlap_must_be_below_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("abc", 10, 10)
