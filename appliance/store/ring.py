"""The short-term ring: the last N interactions of each conversation, sealed at rest.

Entries are numbered per conversation; an append deletes whatever falls more than N behind,
so the table never holds more than N entries of one conversation. Appends commit with
synchronous=NORMAL (see db.py): a crash loses none, a power cut may lose the newest.
"""

from __future__ import annotations

import time

import apsw

from appliance.protocol.store import RingEntry, RingEntryIn
from appliance.store.crypto import Sealer
from appliance.store.sealed import RING
from appliance.store.sql import fetch_all, integer


class Ring:
    def __init__(self, conn: apsw.Connection, size: int, sealer: Sealer) -> None:
        self.conn = conn
        self.size = size
        self.sealer = sealer

    def append(self, entry: RingEntryIn) -> RingEntry:
        now = time.time()
        self.conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.conn:
                last = integer(self.conn, "SELECT max(seq) FROM ring WHERE conversation = ?", (entry.conversation,))
                seq = last + 1
                sealed = self.sealer.seal(entry.text.encode(), RING.context(entry.conversation, seq))
                self.conn.execute("INSERT INTO ring(conversation, seq, role, sealed, created_at) "
                                  "VALUES (?, ?, ?, ?, ?)", (entry.conversation, seq, entry.role, sealed, now))
                self.conn.execute("DELETE FROM ring WHERE conversation = ? AND seq <= ?",
                                  (entry.conversation, seq - self.size))
        finally:
            self.conn.execute("PRAGMA synchronous=FULL")
        return RingEntry(conversation=entry.conversation, role=entry.role, text=entry.text, seq=seq, created_at=now)

    def read(self, conversation: str, k: int) -> list[RingEntry]:
        rows = fetch_all(self.conn,
            "SELECT seq, role, sealed, created_at FROM ring WHERE conversation = ? ORDER BY seq DESC LIMIT ?",
            (conversation, k))
        return [RingEntry(conversation=conversation, seq=seq, role=role, created_at=created,
                          text=self.sealer.open(sealed, RING.context(conversation, seq)).decode())
                for seq, role, sealed, created in reversed(rows)]
