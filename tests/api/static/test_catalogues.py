"""The admin page's two catalogues (appliance/api/static/i18n) against its code and the box's own
vocabularies: every key the page's modules name exists in both, both have the same keys and the
same placeholders, and every state, kind, error code and role the box can send has its words.
No browser here: the code is read as text."""

from __future__ import annotations

import ast
import json
import re
import typing
from pathlib import Path

from appliance.control.caller import Role
from appliance.control.errors import ErrorCode
from appliance.control.table import default_table
from appliance.protocol.common import ServiceState
from appliance.protocol.devices import CommandResult, QuarantineKind
from appliance.protocol.store import MEMORY_KINDS, RecallMode
from appliance.protocol.tasks import TaskState
from appliance.taskkinds import KINDS

STATIC = Path(__file__).resolve().parents[3] / "appliance" / "api" / "static"
CATALOGUES = {code: json.loads((STATIC / "i18n" / f"{code}.json").read_text()) for code in ("en", "zh")}
CODE = "\n".join(path.read_text() for path in sorted((STATIC / "js").rglob("*.js")))
# A key is a dotted lower-case string literal; command names and storage keys are the other such literals.
LITERALS = set(re.findall(r"""["']([a-z]+(?:\.[a-z_]+)+)["']""", CODE))
COMMANDS = {command.name for command in default_table()}
STORAGE = {literal for literal in LITERALS if literal.startswith("appliance.")}
# Keys made at run time: t(`state.${state}`) and the like.
FAMILIES = set(re.findall(r"t\(`([a-z_.]+)\.\$\{", CODE)) | set(re.findall(r"field\(`([a-z_.]+)\.\$\{", CODE)) \
    | set(re.findall(r'"([a-z_.]+)\.\$\{', CODE))


def test_every_key_the_code_names_is_in_both_catalogues() -> None:
    keys = LITERALS - COMMANDS - STORAGE
    assert len(keys) > 200, "the key pattern found too few keys: has the code's style changed?"
    for code, catalogue in CATALOGUES.items():
        assert not keys - set(catalogue), (code, sorted(keys - set(catalogue)))
    assert not COMMANDS & set(CATALOGUES["en"]), "a catalogue key reads like a command name"


def test_both_catalogues_have_the_same_keys_and_placeholders() -> None:
    english, chinese = CATALOGUES["en"], CATALOGUES["zh"]
    assert set(english) == set(chinese)
    for key, text in english.items():
        assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", chinese[key])), key
        assert chinese[key].strip(), key
    assert sum(bool(re.search(r"[\u4e00-\u9fff]", text)) for text in chinese.values()) > 0.9 * len(chinese) - 40


def test_every_word_the_box_can_send_has_its_words() -> None:
    families: dict[str, typing.Iterable[str]] = {
        "state": [*(s.value for s in ServiceState), *(s.value for s in TaskState)],
        "kind": MEMORY_KINDS,
        "error": typing.get_args(ErrorCode),
        "role": [role.value for role in Role],
        "quarantine": typing.get_args(QuarantineKind),
        "devices.status": typing.get_args(CommandResult.model_fields["status"].annotation),
        "memory.mode": typing.get_args(RecallMode),
        "tasks.kind": list(KINDS),
        "tasks.done": ["tasks.approve", "tasks.reject", "tasks.cancel", "tasks.retry"],
    }
    assert set(families) <= FAMILIES | {"tasks.done"}, sorted(set(families) - FAMILIES)
    for family, words in families.items():
        for word in words:
            for code, catalogue in CATALOGUES.items():
                assert f"{family}.{word}" in catalogue, (code, f"{family}.{word}")
    for family in FAMILIES:
        assert any(key.startswith(family + ".") for key in CATALOGUES["en"]), family


def fixed_step_words() -> set[str]:
    """Every step a task records with a fixed word (``step("written", ...)``, ``StepIn(message="...")``)."""
    words = set()
    for path in (STATIC.parents[1]).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            given = node.args[:1] if name == "step" else node.args[1:2] if name == "saying" else \
                [k.value for k in node.keywords if k.arg == "message"] if name == "StepIn" else []
            words |= {arg.value for arg in given if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    return words


def test_every_fixed_step_word_is_shown_in_both_languages() -> None:
    """A task's trace shows each step the box records by a fixed word from the catalogues: as a
    state the task entered, as a model step, or as a step word (step.*)."""
    words = fixed_step_words()
    assert {"written", "alert sent", "fallback queued", "stopped"} <= words, words
    for word in words:
        for code, catalogue in CATALOGUES.items():
            assert {f"state.{word}", f"step.{word}", f"trace.model.{word}"} & set(catalogue) \
                or word in ("tools", "approval needed"), (code, word)  # these two have their own view


def test_no_text_is_written_into_the_markup() -> None:
    """The page's HTML is a shell: everything visible is put in by the code, from a catalogue."""
    html = (STATIC / "index.html").read_text()
    body = re.sub(r"<noscript>.*?</noscript>", "", html.split("<body>")[1], flags=re.S)
    assert re.sub(r"<[^>]+>", "", body).strip() == ""
    assert "<title></title>" in html


def test_the_page_copies_no_vocabulary_of_the_box() -> None:
    """Roles, task states and kinds, built-in actions and memory kinds come from GET /api/v1/capabilities
    (js/capabilities.js): no list or set in the code holds two of them (a comparison with one state, a
    default choice, a field's name are fine); no role rank is kept; no page is gated by a role."""
    words = {role.value for role in Role} | {state.value for state in TaskState} | set(KINDS) | set(MEMORY_KINDS) \
        | {"send_alert", "heartbeat", "archive"}
    for literal in re.findall(r"""\[\s*((?:["'][^"'\n]*["']\s*,\s*)+["'][^"'\n]*["'])\s*,?\s*\]""", CODE):
        listed = set(re.findall(r"""["']([a-z_]+)["']""", literal)) & words
        assert len(listed) < 2, f"a copied vocabulary in the page's code: [{literal[:120]}]"
    assert "capabilities.may(" in CODE and "session.can(" not in CODE and "RANK" not in CODE
    assert not re.search(r"\brole: \"(admin|operator|viewer)\"", CODE), "a page gated by a role, not a command"
