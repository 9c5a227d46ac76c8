"""The box's own words for people, by code: errors, refusals, service details, task steps.

A ``Phrase`` is a code and its arguments (``Phrase("memory.not_found", id=5)``). Its English text
is rendered here from en.json, so logs, the CLI and API clients read a sentence as before; every
surface that sends one also sends ``code`` and ``args``, so the admin page renders it from its own
language's catalogue (zh.json, served at /static/phrases/). The rules:

1. A code is dotted lower case; both catalogues have every code with the same ``{placeholders}``
   (tests/phrases/test_catalogues.py reads every ``Phrase("...")`` in the code to keep it so).
2. Arguments are plain values (str, int, float, bool); a person's own text (a name, a reason) goes
   into an argument, never into a code.
3. A code missing from a catalogue renders as the English text, else as the code itself; a missing
   argument leaves its placeholder in the text. Words never raise: an error about an error hides
   the first one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")
FOLDER = Path(__file__).parent
PLACEHOLDER = re.compile(r"\{(\w+)\}")
Arg = str | int | float | bool


@cache
def catalogue(language: Language) -> dict[str, str]:
    """The words of ``language`` by code; empty when its file cannot be read (rule 3: the codes show)."""
    try:
        with (FOLDER / f"{language}.json").open(encoding="utf-8") as file:
            loaded = json.load(file)
    except (OSError, ValueError):
        return {}
    return {str(code): str(text) for code, text in loaded.items()} if isinstance(loaded, dict) else {}


def render(code: str, args: Mapping[str, Arg], language: Language = "en") -> str:
    template = catalogue(language).get(code) or catalogue("en").get(code) or code
    return PLACEHOLDER.sub(lambda m: str(args[m.group(1)]) if m.group(1) in args else m.group(0), template)


class Phrase:
    """A sentence for a person, by code; ``str()`` is its English text."""

    __slots__ = ("_english", "args", "code")

    def __init__(self, code: str, /, **args: Arg) -> None:
        self.code = code
        self.args = args
        self._english: str | None = None

    def __str__(self) -> str:
        return self._english if self._english is not None else render(self.code, self.args)

    def worded(self, english: str) -> Phrase:
        """This phrase with other English words (what a log or an API client has always read, e.g.
        with a prefix the page does not need); the page still renders it by code."""
        copy = Phrase(self.code, **self.args)
        copy._english = english
        return copy

    def __repr__(self) -> str:
        return f"Phrase({self.code!r}, {self.args!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Phrase) and (self.code, self.args) == (other.code, other.args)

    def __hash__(self) -> int:
        return hash((self.code, tuple(sorted(self.args.items()))))

    def wire(self) -> PhraseWire:
        return PhraseWire(code=self.code, args=self.args)


class PhraseWire(BaseModel):
    """A phrase as it travels (IPC, REST, WebSocket): its code and arguments, for the page to render."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$", max_length=100)
    args: dict[str, Arg] = Field(default_factory=dict, max_length=20)

    def phrase(self) -> Phrase:
        return Phrase(self.code, **self.args)

    @classmethod
    def lenient(cls, value: object) -> PhraseWire | None:
        """A phrase from a peer's reply (decoded JSON) or a stored column (JSON text); a malformed one
        is left out, never an error: the English text beside it still says it all."""
        try:
            if value is None:
                return None
            return cls.model_validate_json(value) if isinstance(value, str) else cls.model_validate(value)
        except ValidationError:
            return None


def words(text: str | Phrase) -> tuple[str, PhraseWire | None]:
    """A message as (its English text, its code and arguments when it has them)."""
    return (str(text), text.wire()) if isinstance(text, Phrase) else (text, None)


def said(exc: BaseException) -> str | Phrase:
    """What an exception says: the Phrase it was raised with, else its text."""
    first = exc.args[0] if len(exc.args) == 1 else None
    return first if isinstance(first, Phrase) else str(exc)
