"""The bilingual tokenizer: Chinese cut into characters and bigrams, English into words, on a real
FTS5 table and through recall's text pass."""
# ruff: noqa: RUF001 - full-width letters and punctuation are what these tests are about

from __future__ import annotations

import time
from pathlib import Path

import apsw
import pytest

from appliance.protocol.store import MemoryIn, RecallRequest
from appliance.store.db import MemoryDB, connect
from appliance.store.words import document_tokens, query_terms

FACTS = [
    "二号实验室的冰箱温度必须保持在零下十八度以下。",
    "锅炉每年十月由供应商检修保养一次。",
    "投影仪的遥控器放在三楼会议室的抽屉里。",
    "北门的门禁密码是四七一一，每月第一天更换。",
    "仓库的灭火器由保安每周检查一次，上次检查是十一月三日。",
]
QUESTIONS = [  # (question, the fact that answers it)
    ("冰箱应该多冷", 0), ("锅炉什么时候保养", 1), ("投影仪遥控器在哪", 2), ("北门密码是多少", 3),
    ("门禁密码多久换一次", 3), ("灭火器多久检查一次", 4), ("实验室冰箱的温度要求", 0),
]


def forms(text: str) -> list[str]:
    return [form for _, _, *rest in document_tokens(text) for form in rest]


def test_han_runs_are_characters_with_their_bigrams_and_latin_runs_are_words() -> None:
    assert list(document_tokens("冰箱温度")) == [(0, 1, "冰", "冰箱"), (1, 2, "箱", "箱温"), (2, 3, "温", "温度"),
                                              (3, 4, "度")]
    assert forms("Wi-Fi密码 is Café_42") == ["wi", "fi", "密", "密码", "码", "is", "cafe", "42"]
    assert query_terms("冰箱应该多冷") == ["冰箱", "箱应", "应该", "该多", "多冷"]
    assert query_terms("锅") == ["锅"]  # a question of one character
    assert query_terms("Where is the projector 遥控器?") == ["where", "is", "the", "projector", "遥控", "控器"]


def test_folding_full_width_traditional_invisible_and_emoji() -> None:
    assert forms("ＡＢＣ１２３") == ["abc123"]  # full-width letters and digits are plain ones
    assert forms("溫度計") == forms("温度计")  # traditional characters match their simplified forms
    assert forms("冰\u200b箱\ufeff") == forms("冰箱")  # zero-width space and BOM vanish, the word holds
    assert forms("门禁🔒密码") == ["门", "门禁", "禁", "密", "密码", "码"]  # emoji separate
    assert query_terms("，。！？【】") == [] and query_terms("") == []  # full-width punctuation only
    offsets = list(document_tokens("ａ冰"))
    assert offsets == [(0, 1, "a"), (1, 2, "冰")]  # offsets stay those of the text as written


def test_a_megabyte_of_one_han_run_is_cut_in_bounded_time() -> None:
    started = time.perf_counter()
    count = sum(1 for _ in document_tokens("冰" * 1_000_000))
    assert count == 1_000_000
    assert time.perf_counter() - started < 30  # linear (about 1 s here); a quadratic cut would not end


def test_fts5_finds_chinese_of_one_two_and_more_characters(tmp_path: Path) -> None:
    conn = connect(tmp_path / "words.db")
    conn.execute("CREATE VIRTUAL TABLE f USING fts5(text, content='', contentless_delete=1, tokenize='bilingual')")
    for n, fact in enumerate(FACTS, 1):
        conn.execute("INSERT INTO f(rowid, text) VALUES (?, ?)", (n, fact))

    def found(query: str) -> list[int]:
        return [row[0] for row in conn.execute("SELECT rowid FROM f WHERE f MATCH ? ORDER BY rowid", (query,))]

    assert found('"锅"') == [2]
    assert found('"冰箱"') == [1]
    assert found('"冰箱温度"') == [1]  # a longer word: its bigrams in a row, a substring match
    assert found('"温度冰箱"') == []  # the same bigrams in another order are not the phrase
    assert found('"檢查"') == [5]  # asked in traditional characters
    with pytest.raises(apsw.SQLError, match="no such tokenizer"):
        other = apsw.Connection(str(tmp_path / "words.db"))
        other.execute("SELECT * FROM f WHERE f MATCH 'x'").fetchall()  # what a plain sqlite3 shell sees
    conn.close()


def test_seven_chinese_questions_find_their_fact_first_by_text(db: MemoryDB) -> None:
    """The probe of issue 27: five facts in Chinese, seven short questions, text search alone."""
    ids = [db.longterm.remember(MemoryIn(text=fact, kind="fact")) for fact in FACTS]
    for question, answer in QUESTIONS:
        hits = db.recall(RecallRequest(query=question, k=3, mode="text")).hits
        assert hits and hits[0].record.id == ids[answer], (question, [h.record.text for h in hits])


def test_hostile_and_odd_queries_give_sensible_answers(db: MemoryDB) -> None:
    ids = [db.longterm.remember(MemoryIn(text=fact, kind="fact")) for fact in FACTS]
    db.longterm.remember(MemoryIn(text="The boiler is serviced every October 保养", kind="fact"))
    for query in ('"冰箱" OR *', "冰箱) NEAR(", "门禁🔒", "\u200b", "ｂｏｉｌｅｒ", "鍋爐", "冰" * 5000):
        hits = db.recall(RecallRequest(query=query[:4000], k=3, mode="text")).hits
        assert all(h.record.id for h in hits), query
    assert db.recall(RecallRequest(query="鍋爐", k=1, mode="text")).hits[0].record.id == ids[1]
    assert "boiler" in db.recall(RecallRequest(query="ｂｏｉｌｅｒ", k=1, mode="text")).hits[0].record.text
