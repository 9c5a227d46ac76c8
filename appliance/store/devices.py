"""Devices in the memory file: events, the registry, the quarantine and the outbox.

Invariants:
- An event batch is one transaction: its new events become memories (kind event, source the
  device), their dedupe keys are recorded and the registry is updated, all or nothing.
- An event is stored at most once per dedupe key: ``id:<payload id>`` keys are kept as long as
  the broker may redeliver (mqtt.session_expiry_s), ``h:<hash>`` keys for mqtt.dedupe_window_s;
  a hash key seen again after its window is a new event.
- The quarantine keeps its newest QUARANTINE_KEPT rows; its counters per kind count everything,
  flooded messages that were only counted included.
- The outbox hands out, per target, only its oldest undelivered item, and only when due: what
  goes upstream arrives in the order it was queued, whatever fails in between.
"""

from __future__ import annotations

import json
import time

import apsw

from appliance.config import MqttConfig
from appliance.phrases import Phrase
from appliance.protocol.devices import (
    DevicePage,
    DeviceQuery,
    DeviceRow,
    EventIn,
    EventsAfter,
    NewEvents,
    OutboxIn,
    OutboxItem,
    OutboxResult,
    OutboxStats,
    QuarantineBatch,
    QuarantinePage,
    QuarantineQuery,
    QuarantineRow,
)
from appliance.protocol.store import MemoryIn, MemoryRecord
from appliance.store.errors import Missing
from appliance.store.longterm import RECORD_COLUMNS, LongTerm
from appliance.store.sql import fetch_all, fetch_one, integer, scalar

QUARANTINE_KEPT = 10_000
OUTBOX_KEPT_S = 7 * 86_400  # delivered (or dropped) outbox rows are kept a week, for the record
DEVICE_COLUMNS = "id, first_seen, last_seen, online, online_at, event_count, last_topic, last_payload"
OUTBOX_COLUMNS = "id, target, topic, payload, created_at, attempts, next_attempt_at, last_error"


def _device(row: tuple[object, ...]) -> DeviceRow:
    ident, first, last, online, online_at, count, topic, payload = row
    return DeviceRow.model_validate({"device_id": ident, "first_seen": first, "last_seen": last,
                                     "online": None if online is None else bool(online), "online_at": online_at,
                                     "event_count": count, "last_topic": topic, "last_payload": payload})


def _outbox(row: tuple[object, ...]) -> OutboxItem:
    ident, target, topic, payload, created, attempts, due, error = row
    return OutboxItem.model_validate({"id": ident, "target": target, "topic": topic,
                                      "payload": json.loads(str(payload)), "created_at": created,
                                      "attempts": attempts, "next_attempt_at": due, "last_error": error})


class DeviceBook:
    def __init__(self, conn: apsw.Connection, longterm: LongTerm, config: MqttConfig) -> None:
        self.conn = conn
        self.longterm = longterm
        self.config = config

    # --- events -----------------------------------------------------------------------------

    def _is_new(self, event: EventIn, now: float) -> bool:
        """Record the event's dedupe key; False when it was seen (within its window for a hash key)."""
        self.conn.execute("INSERT OR IGNORE INTO event_keys(device, key, at) VALUES (?, ?, ?)",
                          (event.device, event.key, now))
        if self.conn.changes():
            return True
        if event.key.startswith("h:"):
            seen = fetch_one(self.conn, "SELECT at FROM event_keys WHERE device = ? AND key = ?",
                             (event.device, event.key))
            if seen is not None and seen[0] < now - self.config.dedupe_window_s:
                self.conn.execute("UPDATE event_keys SET at = ? WHERE device = ? AND key = ?",
                                  (now, event.device, event.key))
                return True
        return False

    def ingest(self, events: list[EventIn]) -> tuple[int, int]:
        """(stored, duplicates) of one batch, committed together."""
        now = time.time()
        stored = duplicates = 0
        latest: dict[str, tuple[int, EventIn]] = {}
        with self.longterm.transaction():
            for event in events:
                if not self._is_new(event, now):
                    duplicates += 1
                    continue
                metadata: dict[str, object] = {"topic": event.topic, "event": event.kind, "type": event.type,
                                               "ts": event.ts}
                if event.flood:
                    metadata["flood"] = True
                self.longterm.insert(MemoryIn(text=event.text, kind="event", source=event.device,
                                              metadata=metadata, created_at=event.received_at))
                count = latest.get(event.device, (0, event))[0]
                latest[event.device] = (count + 1, event)
                stored += 1
            for device, (count, last) in latest.items():
                self.conn.execute(
                    "INSERT INTO devices(id, first_seen, last_seen, event_count, last_topic, last_payload) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen, "
                    "event_count = event_count + excluded.event_count, last_topic = excluded.last_topic, "
                    "last_payload = excluded.last_payload",
                    (device, last.received_at, last.received_at, count, last.topic, last.text[:4096]))
        return stored, duplicates

    def prune(self, now: float | None = None) -> int:
        """Drop what is past its use: hash keys after the dedupe window, id keys after the session,
        and outbox rows OUTBOX_KEPT_S after they were delivered (or dropped)."""
        now = now or time.time()
        with self.conn:
            self.conn.execute("DELETE FROM event_keys WHERE substr(key, 1, 2) = 'h:' AND at < ?",
                              (now - self.config.dedupe_window_s,))
            pruned = int(self.conn.changes())
            self.conn.execute("DELETE FROM event_keys WHERE at < ?",
                              (now - max(self.config.dedupe_window_s, self.config.session_expiry_s),))
            pruned += int(self.conn.changes())
            self.conn.execute("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND "
                              "max(delivered_at, created_at) < ?", (now - OUTBOX_KEPT_S,))
            pruned += int(self.conn.changes())
        return pruned

    # --- the registry -----------------------------------------------------------------------

    def availability(self, device: str, online: bool, at: float) -> int:
        with self.conn:
            self.conn.execute(
                "INSERT INTO devices(id, first_seen, last_seen, online, online_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET online = excluded.online, online_at = excluded.online_at",
                (device, at, at, int(online), at))
        return 1

    def device(self, device: str) -> DeviceRow:
        row = fetch_one(self.conn, f"SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?", (device,))  # noqa: S608
        if row is None:
            raise Missing(Phrase("device.not_found", device=device))
        return _device(row)

    def devices(self, query: DeviceQuery) -> DevicePage:
        clauses, params = [], list[object]()
        if query.online is not None:
            clauses.append("online = ?")
            params.append(int(query.online))
        if query.prefix is not None:
            clauses.append("substr(id, 1, ?) = ?")
            params += [len(query.prefix), query.prefix]
        if query.cursor is not None:
            clauses.append("id > ?")
            params.append(query.cursor)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = fetch_all(self.conn, f"SELECT {DEVICE_COLUMNS} FROM devices {where} ORDER BY id LIMIT ?",  # noqa: S608
                         (*params, query.limit + 1))
        items = [_device(r) for r in rows[: query.limit]]
        return DevicePage(items=items, next_cursor=items[-1].device_id if len(rows) > query.limit else None)

    def recent_events(self, device: str, limit: int) -> list[MemoryRecord]:
        rows = fetch_all(self.conn, f"SELECT {RECORD_COLUMNS} FROM memories WHERE source = ? AND kind = 'event' "  # noqa: S608
                                    "AND forgotten_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?",
                         (device, limit))
        return [self.longterm.record_from_row(row) for row in rows]

    def events_after(self, query: EventsAfter) -> NewEvents:
        if query.after_id is None:
            return NewEvents(records=[], cursor=int(scalar(self.conn, "SELECT coalesce(max(id), 0) FROM memories")))
        rows = fetch_all(self.conn, f"SELECT {RECORD_COLUMNS} FROM memories WHERE id > ? AND kind = 'event' "  # noqa: S608
                                    "AND forgotten_at IS NULL ORDER BY id LIMIT ?", (query.after_id, query.limit))
        records = [self.longterm.record_from_row(row) for row in rows]
        return NewEvents(records=records, cursor=records[-1].id if records else query.after_id)

    # --- the quarantine ---------------------------------------------------------------------

    def quarantine(self, batch: QuarantineBatch) -> int:
        with self.conn:
            self.conn.executemany(
                "INSERT INTO quarantine(at, kind, reason, topic, device, size, sample) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(q.at, q.kind, q.reason, q.topic, q.device, q.size, q.sample) for q in batch.items])
            counts: dict[str, int] = {str(kind): n for kind, n in batch.counted_only.items()}
            for item in batch.items:
                counts[item.kind] = counts.get(item.kind, 0) + 1
            self.conn.executemany(
                "INSERT INTO quarantine_counts(kind, count) VALUES (?, ?) "
                "ON CONFLICT(kind) DO UPDATE SET count = count + excluded.count", list(counts.items()))
            self.conn.execute("DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?",
                              (QUARANTINE_KEPT,))
        return len(batch.items)

    def quarantined(self, query: QuarantineQuery) -> QuarantinePage:
        clauses, params = [], list[object]()
        for column, value in (("kind", query.kind), ("device", query.device)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.cursor is not None:
            clauses.append("id < ?")
            params.append(int(query.cursor))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = fetch_all(self.conn, "SELECT id, at, kind, reason, topic, device, size, sample FROM quarantine "  # noqa: S608
                                    f"{where} ORDER BY id DESC LIMIT ?", (*params, query.limit + 1))
        keys = ("id", "at", "kind", "reason", "topic", "device", "size", "sample")
        items = [QuarantineRow.model_validate(dict(zip(keys, r, strict=True))) for r in rows[: query.limit]]
        counts = {str(k): int(c) for k, c in fetch_all(self.conn, "SELECT kind, count FROM quarantine_counts")}
        more = len(rows) > query.limit
        return QuarantinePage(items=items, counts=counts, next_cursor=str(items[-1].id) if more else None)

    # --- the outbox -------------------------------------------------------------------------

    def outbox_add(self, item: OutboxIn, max_items: int) -> OutboxItem:
        now = time.time()
        with self.conn:
            self.conn.execute("INSERT INTO outbox(target, topic, payload, created_at, next_attempt_at) "
                              "VALUES (?, ?, ?, ?, ?)", (item.target, item.topic, json.dumps(item.payload), now, now))
            ident = self.conn.last_insert_rowid()
            # Past the limit the oldest undelivered items give way (counted as dropped in their error).
            self.conn.execute("UPDATE outbox SET delivered_at = -1, last_error = 'dropped: outbox over its limit' "
                              "WHERE delivered_at IS NULL AND id <= ? - ?", (ident, max_items))
        row = fetch_one(self.conn, f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (ident,))  # noqa: S608
        assert row is not None
        return _outbox(row)

    def outbox_next(self, target: str) -> OutboxItem | None:
        """The oldest undelivered item of ``target``, if it is due now (later ones wait behind it)."""
        row = fetch_one(self.conn, f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE target = ? AND "  # noqa: S608
                                   "delivered_at IS NULL ORDER BY id LIMIT 1", (target,))
        if row is None:
            return None
        item = _outbox(row)
        return item if item.next_attempt_at <= time.time() else None

    def outbox_done(self, result: OutboxResult) -> int:
        with self.conn:
            if result.delivered:
                self.conn.execute("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = '' "
                                  "WHERE id = ? AND delivered_at IS NULL", (time.time(), result.id))
            else:
                self.conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                                  "WHERE id = ? AND delivered_at IS NULL", (result.error, result.retry_at, result.id))
            changed = int(self.conn.changes())
        return changed  # noqa: RET504 - after the block: mypy cannot see that apsw's __exit__ never swallows

    def outbox_stats(self) -> OutboxStats:
        row = fetch_one(self.conn, "SELECT count(*), min(created_at) FROM outbox WHERE delivered_at IS NULL")
        delivered = integer(self.conn, "SELECT count(*) FROM outbox WHERE delivered_at > 0")
        pending, oldest = row if row else (0, None)
        return OutboxStats(pending=int(pending), oldest_at=oldest, delivered=delivered)
