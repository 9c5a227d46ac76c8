"""The box's own words by code (appliance/phrases): the two catalogues against each other and
against every Phrase the code makes, rendering with missing or hostile arguments, and the wire
form's limits. The code is read as text (ast), so a new Phrase without words fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance import phrases
from appliance.phrases import LANGUAGES, PLACEHOLDER, Phrase, PhraseWire, catalogue, render, said
from appliance.validation import PHRASED_TYPES

SOURCE = Path(__file__).resolve().parents[2] / "appliance"
HAN = re.compile(r"[\u4e00-\u9fff]")


def phrases_in_code() -> dict[str, list[tuple[str, set[str]]]]:
    """Every literal Phrase("code", name=...) in appliance/: code -> [(where, argument names)]."""
    found: dict[str, list[tuple[str, set[str]]]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Phrase"):
                continue
            first = node.args[0] if node.args else None
            codes = [first] if isinstance(first, ast.Constant) else \
                [first.body, first.orelse] if isinstance(first, ast.IfExp) else []
            names = {keyword.arg for keyword in node.keywords if keyword.arg is not None}
            for code in codes:
                if isinstance(code, ast.Constant) and isinstance(code.value, str):
                    found.setdefault(code.value, []).append((f"{path.relative_to(SOURCE)}:{node.lineno}", names))
    return found


def test_both_catalogues_have_the_same_codes_and_placeholders() -> None:
    english, chinese = catalogue("en"), catalogue("zh")
    assert set(english) == set(chinese), set(english) ^ set(chinese)
    for code, text in english.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+", code), code
        assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(chinese[code])), code
    # Chinese words, not English left in place (a few are only placeholders, e.g. "{field}: {problem}").
    untranslated = [code for code, text in chinese.items() if not HAN.search(PLACEHOLDER.sub("", text))]
    assert len(untranslated) <= 3, untranslated


def test_every_phrase_the_code_makes_has_words_for_exactly_its_arguments() -> None:
    found = phrases_in_code()
    assert len(found) > 100, "the scan found too few phrases: has the code's style changed?"
    english = catalogue("en")
    for code, uses in found.items():
        assert code in english, (code, uses[0][0])
        wanted = set(PLACEHOLDER.findall(english[code]))
        for where, names in uses:
            assert names == wanted, (code, where, names, wanted)


def test_the_validation_phrases_name_what_pydantic_gives() -> None:
    english = catalogue("en")
    for kind, keys in PHRASED_TYPES.items():
        assert set(PLACEHOLDER.findall(english[f"validation.{kind}"])) == set(keys), kind


def test_no_control_layer_refusal_is_english_only() -> None:
    """A CommandError raised in the command layer or a task kind carries a Phrase (or passes one
    on): a string literal or f-string there would be words the page cannot translate."""
    offenders = []
    for folder in ("control", "taskkinds"):
        for path in sorted((SOURCE / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CommandError" \
                        and len(node.args) > 1 and isinstance(node.args[1], ast.Constant | ast.JoinedStr) \
                        and not any(keyword.arg == "phrase" for keyword in node.keywords):
                    offenders.append(f"{path.relative_to(SOURCE)}:{node.lineno}")
    assert not offenders, offenders


def test_rendering() -> None:
    assert str(Phrase("memory.not_found", id=7)) == "no memory with id 7"
    assert render("memory.not_found", {"id": 7}, "zh") == "没有 ID 为 7 的记忆"
    assert str(Phrase("memory.not_found")) == "no memory with id {id}"  # a missing argument stays visible
    assert str(Phrase("no.such_code", x=1)) == "no.such_code"  # never raises
    # An argument's own braces are text, never expanded again, and unknown arguments are ignored.
    hostile = Phrase("schedule.not_found", name="{name}{__class__}" + "\u200b😀" * 3, extra="x")
    assert str(hostile) == "no schedule '{name}{__class__}\u200b😀\u200b😀\u200b😀'"
    assert Phrase("task.not_found", id=1) == Phrase("task.not_found", id=1) != Phrase("task.not_found", id=2)


@pytest.mark.parametrize("content", [None, b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_missing_or_spoiled_catalogue_shows_the_codes_and_never_raises(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None) -> None:
    if content is not None:
        (tmp_path / "en.json").write_bytes(content)
    monkeypatch.setattr(phrases, "FOLDER", tmp_path)
    catalogue.cache_clear()
    try:
        assert str(Phrase("memory.not_found", id=7)) == "memory.not_found"
    finally:
        monkeypatch.undo()
        catalogue.cache_clear()
    assert str(Phrase("memory.not_found", id=7)) == "no memory with id 7"


def test_said_keeps_the_phrase_an_exception_was_raised_with() -> None:
    phrase = Phrase("task.not_found", id=3)
    assert said(KeyError(phrase)) is phrase and str(ValueError(phrase)) == "no task 3"
    assert said(ValueError("plain")) == "plain" and said(ValueError("a", "b")) == "('a', 'b')"


@pytest.mark.parametrize("wire", [
    {"code": "NotACode", "args": {}},
    {"code": "nodot", "args": {}},
    {"code": "a." + "b" * 200, "args": {}},
    {"code": "a.b", "args": {f"k{i}": i for i in range(21)}},
    {"code": "a.b", "args": {"nested": {"x": 1}}},
    {"code": "a.b", "args": {}, "more": 1},
])
def test_a_malformed_wire_phrase_is_refused(wire: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PhraseWire.model_validate(wire)


def test_languages_are_the_pages() -> None:
    assert LANGUAGES == ("en", "zh")
