"""The audit log: append-only rows, each hash-chained to the one before it (SHA-256).

    hash(n) = sha256(hash(n-1) || canonical JSON [id, user_id, action, timestamp, ip_address, details])

with hash(0) = 64 zeros. Triggers refuse UPDATE and DELETE; the newest id and hash are also
kept in ``meta`` (audit_head), so cutting rows off the end is caught as well. Changing a row,
deleting one, or inserting one out of chain makes `verify` name the first row that no longer
fits. What a chain cannot stop: someone with write access rewriting every row from the
tampered one onwards and the head with it; docs/memory.md says how to anchor the head outside.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import apsw

from appliance.protocol.store import AuditIn, AuditPage, AuditQuery, AuditRow, AuditVerdict
from appliance.store.sql import fetch_all, fetch_one, time_range

GENESIS = "0" * 64


def row_hash(prev_hash: str, ident: int, user_id: str, action: str, timestamp: float, ip: str | None,
             details: Any) -> str:
    body = json.dumps([ident, user_id, action, timestamp, ip, details], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(prev_hash.encode() + body.encode()).hexdigest()


class AuditLog:
    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn

    def _head(self) -> tuple[int, str]:
        row = fetch_one(self.conn, "SELECT value FROM meta WHERE key = 'audit_head'")
        if row is None:
            return 0, GENESIS
        ident, _, digest = str(row[0]).partition(":")
        return int(ident), digest

    def append(self, entry: AuditIn) -> AuditRow:
        now = time.time()
        with self.conn:
            last_id, prev = self._head()
            ident = last_id + 1
            digest = row_hash(prev, ident, entry.user_id, entry.action, now, entry.ip_address, entry.details)
            self.conn.execute(
                "INSERT INTO audit(id, user_id, action, timestamp, ip_address, details, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ident, entry.user_id, entry.action, now, entry.ip_address, json.dumps(entry.details), prev, digest))
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('audit_head', ?)", (f"{ident}:{digest}",))
        return AuditRow(id=ident, timestamp=now, **entry.model_dump())

    def page(self, query: AuditQuery) -> AuditPage:
        clauses, params = time_range("timestamp", query.since, query.until)
        if query.user is not None:
            clauses.append("user_id = ?")
            params.append(query.user)
        if query.action is not None:
            if query.action.endswith("."):
                clauses.append("substr(action, 1, ?) = ?")
                params += [len(query.action), query.action]
            else:
                clauses.append("action = ?")
                params.append(query.action)
        if query.cursor is not None:
            clauses.append("id < ?")
            params.append(int(query.cursor))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = fetch_all(self.conn, f"SELECT id, user_id, action, timestamp, ip_address, details FROM audit {where} "  # noqa: S608
                                    "ORDER BY id DESC LIMIT ?", (*params, query.limit + 1))
        items = [AuditRow(id=i, user_id=u, action=a, timestamp=t, ip_address=ip, details=json.loads(d))
                 for i, u, a, t, ip, d in rows[: query.limit]]
        more = len(rows) > query.limit
        return AuditPage(items=items, next_cursor=str(items[-1].id) if more else None)

    def verify(self) -> AuditVerdict:
        expected_id, prev = 1, GENESIS
        count = 0
        cursor = self.conn.execute(
            "SELECT id, user_id, action, timestamp, ip_address, details, prev_hash, hash FROM audit ORDER BY id")
        for ident, user_id, action, timestamp, ip, details, prev_hash, digest in cursor:
            if ident != expected_id:
                what = f"row {expected_id} is missing" if ident > expected_id else "an id out of order"
                return AuditVerdict(ok=False, rows=count, first_bad_id=ident, reason=f"{what} before row {ident}")
            if prev_hash != prev:
                return AuditVerdict(ok=False, rows=count, first_bad_id=ident,
                                    reason=f"row {ident} does not chain to row {ident - 1}")
            try:
                parsed = json.loads(details)
            except ValueError:
                return AuditVerdict(ok=False, rows=count, first_bad_id=ident,
                                    reason=f"row {ident} details are not JSON")
            if row_hash(prev, ident, user_id, action, timestamp, ip, parsed) != digest:
                return AuditVerdict(ok=False, rows=count, first_bad_id=ident,
                                    reason=f"row {ident} was changed after it was written (hash mismatch)")
            prev, expected_id, count = digest, expected_id + 1, count + 1
        head_id, head_hash = self._head()
        if (head_id, head_hash) != (count, prev if count else GENESIS):
            bad = count + 1 if head_id > count else head_id
            return AuditVerdict(ok=False, rows=count, first_bad_id=bad,
                                reason=f"the log ends at row {count} but its head says row {head_id}: rows were "
                                       "removed from the end or added without the head")
        return AuditVerdict(ok=True, rows=count)
