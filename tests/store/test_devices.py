"""The device book on a real memory file: dedupe, the registry, the quarantine and the outbox's order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import MemoryConfig, MqttConfig
from appliance.protocol.devices import (
    DeviceQuery,
    EventIn,
    OutboxIn,
    OutboxResult,
    QuarantineBatch,
    QuarantineIn,
    QuarantineQuery,
)
from appliance.store.db import MemoryDB
from appliance.store.devices import QUARANTINE_KEPT
from appliance.store.errors import Missing
from tests.store.conftest import DIM


@pytest.fixture
def book(tmp_path: Path) -> Iterator[MemoryDB]:
    mqtt = MqttConfig(dedupe_window_s=60, session_expiry_s=3600)
    memory = MemoryDB(tmp_path / "memory.db", MemoryConfig(vector_dim=DIM), tmp_path / "keys" / "memory.key",
                      mqtt=mqtt)
    yield memory
    memory.close()


def event(device: str, key: str, text: str = "{}", at: float | None = None, kind: str = "event") -> EventIn:
    return EventIn.model_validate({"device": device, "topic": f"devices/{device}/{kind}s", "kind": kind,
                                   "key": key, "text": text, "received_at": at or time.time()})


def test_a_batch_stores_each_key_once_and_updates_the_registry(book: MemoryDB) -> None:
    batch = [event("door", "id:1", '{"id":1}'), event("door", "id:2", '{"id":2}'), event("door", "id:1", '{"id":1}'),
             event("boiler", "h:abc", "21.5", kind="state")]
    assert book.devices.ingest(batch) == (3, 1)
    assert book.devices.ingest(batch) == (0, 4)  # a redelivery of the whole batch
    rows = {d.device_id: d for d in book.devices.devices(DeviceQuery()).items}
    assert rows["door"].event_count == 2 and rows["door"].last_payload == '{"id":2}'
    assert rows["boiler"].event_count == 1 and rows["boiler"].online is None
    assert book.stats().memories == 3
    recent = book.devices.recent_events("door", 10)
    assert [r.text for r in recent] == ['{"id":2}', '{"id":1}'] and recent[0].kind == "event"


def test_a_content_hash_is_new_again_after_its_window(book: MemoryDB) -> None:
    long_ago = time.time() - 120
    assert book.devices.ingest([event("meter", "h:same", "1", at=long_ago)]) == (1, 0)
    book.conn.execute("UPDATE event_keys SET at = ?", (long_ago,))
    assert book.devices.ingest([event("meter", "h:same", "1")]) == (1, 0)  # the same reading, a minute later
    assert book.devices.ingest([event("meter", "h:same", "1")]) == (0, 1)  # within the window: a redelivery


def test_pruning_keeps_id_keys_for_the_session_and_hash_keys_for_the_window(book: MemoryDB) -> None:
    book.devices.ingest([event("m", "id:kept"), event("m", "h:gone")])
    now = time.time()
    assert book.devices.prune(now + 61) == 1
    assert book.devices.ingest([event("m", "id:kept")]) == (0, 1)
    assert book.devices.prune(now + 3601) == 1
    assert book.devices.ingest([event("m", "id:kept")]) == (1, 0)


def test_availability_and_listing(book: MemoryDB) -> None:
    book.devices.ingest([event(f"sensor-{i:02}", f"id:{i}") for i in range(30)])
    assert book.devices.availability("sensor-03", True, time.time()) == 1
    assert book.devices.availability("never-sent-an-event", False, time.time()) == 1
    online = book.devices.devices(DeviceQuery(online=True)).items
    assert [d.device_id for d in online] == ["sensor-03"]
    first = book.devices.devices(DeviceQuery(prefix="sensor-", limit=20))
    second = book.devices.devices(DeviceQuery(prefix="sensor-", limit=20, cursor=first.next_cursor))
    names = [d.device_id for d in first.items + second.items]
    assert len(names) == len(set(names)) == 30 and second.next_cursor is None
    assert book.devices.device("never-sent-an-event").online is False
    with pytest.raises(Missing):
        book.devices.device("nobody")


def test_the_quarantine_counts_everything_and_keeps_the_newest(book: MemoryDB) -> None:
    def item(i: int) -> QuarantineIn:
        return QuarantineIn(kind="not_json", reason="not JSON", topic="devices/x/events", device="x", size=3,
                            sample=f"#{i}", at=time.time())

    for start in range(0, QUARANTINE_KEPT + 500, 5000):
        book.devices.quarantine(QuarantineBatch(items=[item(i) for i in range(start, start + 5000)]))
    book.devices.quarantine(QuarantineBatch(items=[], counted_only={"rate_limited": 7}))
    page = book.devices.quarantined(QuarantineQuery(limit=3))
    assert page.counts == {"not_json": 15_000, "rate_limited": 7}
    assert [q.sample for q in page.items] == ["#14999", "#14998", "#14997"]
    kept = book.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    assert kept == QUARANTINE_KEPT


def test_the_outbox_hands_out_in_order_even_when_one_fails(book: MemoryDB) -> None:
    ids = [book.devices.outbox_add(OutboxIn(target="mqtt", topic="alerts", payload={"n": n}), 100).id
           for n in range(3)]
    book.devices.outbox_add(OutboxIn(target="webhook", topic="alerts", payload={"n": 9}), 100)
    first = book.devices.outbox_next("mqtt")
    assert first is not None and first.id == ids[0]
    # It fails: until it is due again, nothing behind it goes either (order before throughput).
    book.devices.outbox_done(OutboxResult(id=first.id, delivered=False, error="refused", retry_at=time.time() + 60))
    assert book.devices.outbox_next("mqtt") is None
    webhook = book.devices.outbox_next("webhook")  # the other target has its own line
    assert webhook is not None and webhook.payload == {"n": 9}
    book.conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE id = ?", (first.id,))
    again = book.devices.outbox_next("mqtt")
    assert again is not None and again.id == ids[0] and again.attempts == 1 and again.last_error == "refused"
    for ident in ids:
        item = book.devices.outbox_next("mqtt")
        assert item is not None and item.id == ident
        assert book.devices.outbox_done(OutboxResult(id=ident, delivered=True)) == 1
    assert book.devices.outbox_done(OutboxResult(id=ids[0], delivered=True)) == 0  # already done
    stats = book.devices.outbox_stats()
    assert stats.pending == 1 and stats.delivered == 3


def test_the_outbox_drops_its_oldest_past_the_limit_and_prunes_the_delivered(book: MemoryDB) -> None:
    for n in range(15):
        book.devices.outbox_add(OutboxIn(target="mqtt", topic="t", payload=n), max_items=10)
    stats = book.devices.outbox_stats()
    assert stats.pending == 10
    item = book.devices.outbox_next("mqtt")
    assert item is not None and item.payload == 5
    book.devices.outbox_done(OutboxResult(id=item.id, delivered=True))
    assert book.devices.prune(time.time() + 8 * 86_400) >= 6  # the delivered one and the five dropped
    assert book.conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 9


def test_events_survive_reopening(tmp_path: Path) -> None:
    path, key = tmp_path / "memory.db", tmp_path / "keys" / "memory.key"
    first = MemoryDB(path, MemoryConfig(vector_dim=DIM), key, mqtt=MqttConfig())
    first.devices.ingest([event("door", "id:1")])
    first.devices.outbox_add(OutboxIn(target="mqtt", topic="t", payload="kept"), 100)
    first.close()
    second = MemoryDB(path, MemoryConfig(vector_dim=DIM), key, mqtt=MqttConfig())
    try:
        assert second.devices.ingest([event("door", "id:1")]) == (0, 1)
        item = second.devices.outbox_next("mqtt")
        assert item is not None and item.payload == "kept"
    finally:
        second.close()


def test_a_device_over_its_quota_has_its_oldest_events_archived_and_no_other(book: MemoryDB) -> None:
    """mqtt.device_quota_events: what the store's minute job does (service.py _enforce_device_quota)."""
    start = time.time() - 10_000
    book.devices.ingest([event("backlog", f"id:{n}", f'{{"n": {n}}}', at=start + n) for n in range(3000)])
    book.devices.ingest([event("calm", f"id:c{n}", at=start + n) for n in range(10)])
    assert book.devices_over_quota(1000) == ["backlog"]
    moved, steps = 0, 0
    while step := book.archive.overflow("backlog", 1000):
        moved, steps = moved + step, steps + 1
    assert moved == 2000 and steps == 1  # the segment size (2,000) a step
    live = [r[0] for r in book.conn.execute("SELECT text FROM memories WHERE source = 'backlog' ORDER BY created_at")]
    assert len(live) == 1000 and live[0] == '{"n": 2000}'  # the newest 1,000 stay
    archived = book.conn.execute("SELECT count(*), max(created_at) FROM archive_index WHERE source = 'backlog'")
    count, newest_archived = archived.fetchone()
    assert count == 2000 and newest_archived == pytest.approx(start + 1999)  # the oldest went, nothing lost
    assert book.conn.execute("SELECT count(*) FROM memories WHERE source = 'calm'").fetchone()[0] == 10
    assert book.archive.overflow("backlog", 1000) == 0  # within the quota now
