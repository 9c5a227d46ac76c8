"""`appliance capabilities`: docs/api.md's reference section is what the declarations say today."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.cli.capabilities import BEGIN, END, reference, replace_section
from tests.helpers import cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_docs_api_md_is_generated_from_the_declarations() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, "run: appliance capabilities --markdown --write docs/api.md"
    assert replace_section(text, reference()) == text, "docs/api.md is stale: appliance capabilities --markdown " \
                                                       "--write docs/api.md"


def test_replacing_the_section_keeps_the_prose(tmp_path: Path) -> None:
    page = tmp_path / "api.md"
    page.write_text("# Prose\n\nkept\n")
    once = replace_section(page.read_text(), reference())
    assert once.startswith("# Prose\n\nkept\n") and replace_section(once, reference()) == once


def test_the_console_lists_its_own_capabilities(store_config: Path) -> None:
    done = cli(store_config, "capabilities")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    names = {c["name"] for c in listed["commands"]}
    assert listed["surface"] == "cli" and listed["role"] == "admin" and {"keys.rotate", "memory.backup"} <= names
    assert cli(store_config, "capabilities", "--write", "x").returncode == 2
