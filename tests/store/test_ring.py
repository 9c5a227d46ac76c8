"""The short-term ring: bounded per conversation, ordered, isolated, and sealed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.protocol.store import RingEntryIn, RingRead
from tests.store.conftest import open_db


def test_ring_keeps_the_last_n_per_conversation(tmp_path: Path) -> None:
    db = open_db(tmp_path, ring_size=5)
    for i in range(12):
        db.ring.append(RingEntryIn(conversation="a", text=f"a{i}", role="user" if i % 2 else "assistant"))
    db.ring.append(RingEntryIn(conversation="b", text="b0"))
    assert [e.text for e in db.ring.read("a", 100)] == [f"a{i}" for i in range(7, 12)]
    assert [e.text for e in db.ring.read("a", 2)] == ["a10", "a11"]
    assert [e.seq for e in db.ring.read("a", 2)] == [11, 12]
    assert [e.text for e in db.ring.read("b", 10)] == ["b0"]
    assert db.ring.read("nobody", 10) == []
    assert db.conn.execute("SELECT count(*) FROM ring WHERE conversation = 'a'").fetchone()[0] == 5


@pytest.mark.parametrize("conversation", ["", "a b", "../etc", "x" * 65, "'; DROP TABLE ring; --"])
def test_bad_conversation_ids_are_refused(conversation: str) -> None:
    with pytest.raises(ValidationError, match="conversation"):
        RingEntryIn(conversation=conversation, text="x")
    with pytest.raises(ValidationError):
        RingRead(conversation=conversation)
