"""Words for full-text search in Chinese and English, cut the same way when stored and when asked.

FTS5's unicode61 makes a whole run of Han characters one token, so no Chinese word ever
matched. The policy here, registered as the FTS5 tokenizer ``bilingual`` on every connection the
store opens (db.py ``connect``) and used by recall to build its queries:

1. Each character is folded on its own (so offsets stay exact): format characters (zero-width
   space and joiners, BOM) and combining marks vanish without breaking a word; NFKC turns
   full-width letters, digits and compatibility forms into their plain forms; case is folded;
   diacritics are removed (é is e); traditional Han characters become simplified (hanziconv's
   character table, Apache-2.0), so 溫度 finds 温度.
2. Han characters and Japanese kana (scripts written without spaces) form runs. A stored run is
   indexed as every single character and, at the same position, every pair of neighbours
   (overlapping bigrams): 冰箱温度 is 冰|冰箱, 箱|箱温, 温|温度, 度. A 1-character question
   finds the character, a longer one its bigrams, and a phrase of bigrams is a substring match.
3. Every other run of letters and digits (Latin, Cyrillic, Hangul ...) is one word, as unicode61
   makes it; anything else (spaces, punctuation, symbols, emoji) separates.
4. Asked text is cut into the terms recall ORs together: its words, the bigrams of each Han run,
   and a run of one character as itself.

Why not the alternatives (docs/memory.md has the measurements): trigram cannot find a
2-character word, the most common Chinese word length; jieba's dictionary cuts stored text and
questions differently when they segment a phrase differently, and takes seconds to load;
apsw's unicodewords keeps a Han run whole, like unicode61.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator

import apsw
from hanziconv.charmap import simplified_charmap, traditional_charmap

TOKENIZER = "bilingual"
_TO_SIMPLIFIED = str.maketrans({t: s for t, s in zip(traditional_charmap, simplified_charmap, strict=True)
                                if t != s})
_RUN_SCRIPT = re.compile(r"[\u3007\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")
MAX_QUERY_TERMS = 32

# A token: (start, end, text) in character offsets of the text it came from.
Token = tuple[int, int, str]


@functools.lru_cache(maxsize=1 << 16)
def fold(char: str) -> str:
    """One character as it is indexed: "" for one that vanishes (format, combining)."""
    if unicodedata.category(char) in ("Cf", "Mn", "Me"):
        return ""
    folded = unicodedata.normalize("NFKC", char).casefold()
    if not folded.isascii():
        folded = "".join(c for c in unicodedata.normalize("NFD", folded) if not unicodedata.combining(c))
        folded = unicodedata.normalize("NFC", folded).translate(_TO_SIMPLIFIED)
    return folded


def _kind(char: str) -> int:
    """0 separates, 1 is part of a word, 2 is part of a run written without spaces."""
    if _RUN_SCRIPT.match(char):
        return 2
    return 1 if char.isalnum() else 0


def _runs(text: str) -> Iterator[tuple[int, list[tuple[int, int, str]]]]:
    """(kind, units) of each word or Han run; a unit is (start, end, folded character)."""
    kind, units = 0, list[tuple[int, int, str]]()
    for i, char in enumerate(text):
        folded = fold(char)
        if not folded:
            continue  # invisible: neither part of a word nor a break in it
        for piece in folded:  # NFKC may make several characters of one (① is 1, ㎏ is kg)
            piece_kind = _kind(piece)
            if piece_kind != kind and units:
                yield kind, units
                units = []
            kind = piece_kind
            if piece_kind:
                units.append((i, i + 1, piece))
    if units and kind:
        yield kind, units


def document_tokens(text: str) -> Iterator[tuple[int, int, str] | tuple[int, int, str, str]]:
    """What is stored: words, and in a Han run each character with its bigram colocated."""
    if text.isascii():
        for match in _ASCII_WORD.finditer(text):
            yield match.start(), match.end(), match.group().lower()
        return
    for kind, units in _runs(text):
        if kind == 1:
            yield units[0][0], units[-1][1], "".join(u[2] for u in units)
            continue
        for n, (start, end, char) in enumerate(units):
            if n + 1 < len(units):
                yield start, end, char, char + units[n + 1][2]
            else:
                yield start, end, char


def query_tokens(text: str) -> Iterator[Token]:
    """What is asked: words, and each Han run as its bigrams (a run of one character as itself)."""
    if text.isascii():
        for match in _ASCII_WORD.finditer(text):
            yield match.start(), match.end(), match.group().lower()
        return
    for kind, units in _runs(text):
        if kind == 1 or len(units) == 1:
            yield units[0][0], units[-1][1], "".join(u[2] for u in units)
            continue
        for (start, _, first), (_, end, second) in itertools.pairwise(units):
            yield start, end, first + second


def query_terms(text: str) -> list[str]:
    """The distinct terms of a question, in order, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(token for _, _, token in query_tokens(text)))[:MAX_QUERY_TERMS]


def _byte_offsets(text: str) -> list[int]:
    """The UTF-8 byte offset of each character position (FTS5 counts in bytes)."""
    return [0, *itertools.accumulate(1 if c < "\x80" else 2 if c < "\u0800" else 3 if c < "\U00010000" else 4
                                     for c in text)]


Tokenize = Callable[[bytes, int, str | None], Iterator[tuple[int, int, str] | tuple[int, int, str, str]]]


def bilingual(_con: apsw.Connection, args: list[str]) -> Tokenize:
    """The FTS5 tokenizer factory: documents and queries as the module docstring says."""
    if args:
        raise ValueError(f"the {TOKENIZER} tokenizer takes no arguments, got {args}")

    def tokenize(utf8: bytes, flags: int, _locale: str | None) -> Iterator[tuple[int, int, str] |
                                                                            tuple[int, int, str, str]]:
        text = utf8.decode("utf-8", "replace")
        tokens = query_tokens(text) if flags & apsw.FTS5_TOKENIZE_QUERY else document_tokens(text)
        if len(text) == len(utf8):  # ASCII: characters are bytes
            yield from tokens
            return
        at = _byte_offsets(text)
        for start, end, *forms in tokens:
            yield (at[start], at[end], *forms)  # type: ignore[misc]

    return tokenize


def register(conn: apsw.Connection) -> None:
    """Make the ``bilingual`` tokenizer known to this connection (before memory_fts is touched)."""
    conn.register_fts5_tokenizer(TOKENIZER, bilingual)
