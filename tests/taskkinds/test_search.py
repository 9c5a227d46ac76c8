"""The search task's words: its request to the model and its report are in the query's language
(the run itself, on the real model, is in tests/api/test_chat_languages.py)."""

# ruff: noqa: RUF001 - full-width digits and Chinese punctuation are what some of these cases are about

from __future__ import annotations

from typing import Any

import pytest

from appliance.taskkinds.search import language_of, report

CITED: list[dict[str, Any]] = [{"n": 1, "memory_id": 7, "source": "user:ada", "snippet": "The gate code is 4711."}]


@pytest.mark.parametrize(("query", "language"), [
    ("北院大门的密码", "zh"), ("gate code", "en"), ("WiFi 密码是什么", "zh"), ("門禁", "zh"),
    ("", "en"), ("😀 \u200b ４７１１", "en"), ("\uf900", "zh"),
])
def test_the_language_is_the_query_script(query: str, language: str) -> None:
    assert language_of(query) == language


def test_the_report_is_worded_in_the_query_language() -> None:
    chinese = report("北院大门的密码", "密码是 4711 [1]。", CITED)
    assert chinese.startswith("# 北院大门的密码\n\n密码是 4711 [1]。\n\n## 笔记\n\n"
                              "[1] 记忆 7（user:ada）：The gate code")
    english = report("gate code", "", [])
    assert english == "# gate code\n\n(no answer)\n\n## Notes\n\n(none found)\n"
    # A snippet's braces stay text: the catalogue fills each placeholder once.
    odd = report("x", "y", [{**CITED[0], "snippet": "{snippet} {n}"}])
    assert "[1] memory 7 (user:ada): {snippet} {n}" in odd
