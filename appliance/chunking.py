"""Splitting a document into overlapping chunks, shared by the CLI, the API and the tests.

Chunks end at a paragraph, line or sentence boundary when one lies in the last third of the
window, so a chunk rarely cuts a sentence in half; otherwise they end at ``size`` characters.
"""

from __future__ import annotations

import re

_BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"[.!?]\s"), re.compile(r"\s"))


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    if not 0 <= overlap < size:
        raise ValueError(f"overlap ({overlap}) must be at least 0 and below size ({size})")
    text = text.strip()
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            window = text[start:end]
            floor = size * 2 // 3
            for pattern in _BOUNDARIES:
                cuts = [m.end() for m in pattern.finditer(window) if m.end() >= floor]
                if cuts:
                    end = start + cuts[-1]
                    break
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return chunks
