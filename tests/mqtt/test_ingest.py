"""mqtt/ingest.py's split of a batch into store requests (pure: no broker, no store)."""

from __future__ import annotations

from appliance.mqtt.ingest import chunks
from appliance.protocol.devices import EventIn


def event(i: int, chars: int) -> EventIn:
    return EventIn(device="d", topic="devices/d/events", key=f"id:{i}", text="x" * chars, received_at=0.0)


def test_requests_stay_under_the_byte_budget_and_the_item_limit() -> None:
    events = [event(i, 60_000) for i in range(200)]
    sizes = list(chunks(events, 10_000, 2 << 20))
    assert sum(sizes) == 200
    assert all(n * 60_000 <= 2 << 20 for n in sizes) and sizes[0] == 34  # 34 of ~60 KB fit in 2 MiB
    small = [event(i, 10) for i in range(25_000)]
    assert list(chunks(small, 10_000, 2 << 20)) == [10_000, 10_000, 5_000]


def test_an_item_larger_than_the_budget_goes_alone() -> None:
    events = [event(0, 10), event(1, 5_000), event(2, 10)]
    assert list(chunks(events, 100, 1_000)) == [1, 1, 1]
    assert list(chunks([], 100, 1_000)) == []
