"""The memory file: one SQLite database (apsw, WAL) holding every tier, opened by the store only.

Durability (docs/memory.md): WAL with synchronous=FULL, so every acknowledged write of a
memory, document, archive segment or audit row has been fsynced and survives a power cut.
Short-term ring appends commit with synchronous=NORMAL: a crashed process loses none of them,
a power cut may lose ring entries written since the last fsynced commit. The WAL is
checkpointed automatically every 1000 pages and truncated to journal_size_limit afterwards.
secure_delete is on: erased content is overwritten in the file, and leaves the WAL at the
next checkpoint.
Not thread-safe by design: the store service calls it from one thread only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path

import apsw
import sqlite_vec

from appliance.config import MemoryConfig, MqttConfig, SecurityConfig
from appliance.protocol.store import BackupDone, KeyRotated, RecallRequest, RecallResponse, StoreStats
from appliance.store import textindex, vectormodel, words
from appliance.store.accounts import AccountBook
from appliance.store.archive import Archive
from appliance.store.audit import AuditLog
from appliance.store.crypto import EPOCH_LIMIT, KeyRing, KeyRingError, Sealer
from appliance.store.devices import DeviceBook
from appliance.store.errors import StoreError
from appliance.store.longterm import LongTerm
from appliance.store.recall import recall_memories
from appliance.store.ring import Ring
from appliance.store.schema import SCHEMA_VERSION, migration_sql
from appliance.store.sealed import SEALED_COLUMNS, SEGMENT
from appliance.store.site import SiteBook
from appliance.store.sql import fetch_all, integer
from appliance.store.tasks import TaskBook

BUSY_TIMEOUT_MS = 5_000
JOURNAL_SIZE_LIMIT = 64 << 20
BACKUP_STEP_PAGES = 1024


def connect(path: Path, *, readonly: bool = False) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    conn = apsw.Connection(str(path), flags=flags)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    words.register(conn)  # memory_fts's tokenizer: without it the full-text index cannot be read
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())  # version 1 files hold a vec0 table
    conn.enable_load_extension(False)
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    conn.execute("PRAGMA synchronous=FULL")
    # Forgotten and archived content is overwritten in the file, not left in free pages.
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def migrate(conn: apsw.Connection, path: Path, dim: int, *, strict_dim: bool = True) -> None:
    """Bring the file to this release's schema. With ``strict_dim`` a file of another vector dimension
    is refused; without it the caller re-embeds (vectormodel.py)."""
    version = integer(conn, "PRAGMA user_version")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} has schema {version}, newer than this release's {SCHEMA_VERSION}")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with conn:
            conn.execute(migration_sql(target, dim))
    stored = integer(conn, "SELECT value FROM meta WHERE key = 'vector_dim'")
    if strict_dim and stored != dim:
        raise StoreError(f"{path} holds {stored}-dim vectors but memory.vector_dim is {dim}; "
                         "keep the dimension or start a new file")


class MemoryDB:
    def __init__(self, path: Path, config: MemoryConfig, key_path: Path,
                 security: SecurityConfig | None = None, mqtt: MqttConfig | None = None, *,
                 vector_model: str | None = None) -> None:
        """``vector_model``: the embedding model's identity (config.embedding_identity); a file whose
        vectors another model made is re-embedded (vectormodel.py). None (tools, tests): no such
        check, and a file of another vector dimension is refused."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.config = config
        self.conn = connect(path)
        migrate(self.conn, path, config.vector_dim, strict_dim=vector_model is None)
        reembed = vectormodel.reconcile(self.conn, config.vector_dim, vector_model) if vector_model else None
        try:
            self.keys = KeyRing.load_or_create(key_path)
        except (KeyRingError, OSError) as exc:
            self.conn.close()
            raise StoreError(str(exc)) from None
        self.sealer = Sealer(self.keys, self._new_epoch)
        self.longterm = LongTerm(self.conn, config, self.sealer)
        self.longterm.text_rebuild = textindex.pending(self.conn)
        self.longterm.vector_model, self.longterm.reembed = vector_model, reembed
        self.ring = Ring(self.conn, config.ring_size, self.sealer)
        self.archive = Archive(self.conn, config, self.sealer, self.longterm)
        self.audit = AuditLog(self.conn)
        self.accounts = AccountBook(self.conn, security or SecurityConfig())
        self.devices = DeviceBook(self.conn, self.longterm, mqtt or MqttConfig())
        self.tasks = TaskBook(self.conn)
        self.site = SiteBook(self.conn, self.longterm)

    def claim(self, resource: str, key: str, owner: str) -> str:
        """``key`` becomes ``owner``'s unless someone holds it already; whose it is now."""
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO owners(resource, key, owner, created_at) VALUES (?, ?, ?, ?)",
                              (resource, key, owner, time.time()))
            held = self.owner(resource, key)
        assert held is not None
        return held

    def owner(self, resource: str, key: str) -> str | None:
        row = self.conn.execute("SELECT owner FROM owners WHERE resource = ? AND key = ?", (resource, key)).fetchone()
        return str(row[0]) if row else None

    def _new_epoch(self, key_id: str) -> int:
        """Commit ``key_id``'s next nonce epoch on its own: no rollback or crash can hand it out twice."""
        if self.conn.in_transaction:
            raise StoreError("a nonce epoch cannot be taken inside a transaction; restart the store")
        name = f"nonce_epoch:{key_id}"
        with self.conn:
            epoch = integer(self.conn, "SELECT value FROM meta WHERE key = ?", (name,)) + 1
            if epoch >= EPOCH_LIMIT:
                raise StoreError("this key's nonce epochs are used up; rotate it (appliance memory rotate-key)")
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, str(epoch)))
        return epoch

    def index_text(self, batch: int = textindex.BATCH) -> bool:
        """One batch of the full-text rebuild a migration left (textindex.py); whether more is left."""
        rebuild = self.longterm.text_rebuild
        if rebuild is None:
            return False
        more = textindex.step(self.conn, rebuild, batch)
        if not more:
            self.longterm.text_rebuild = None
        return more

    def devices_over_quota(self, quota: int) -> list[str]:
        """Devices that may hold more live events than ``quota`` (they sent more than that, ever)."""
        return [str(r[0]) for r in self.conn.execute("SELECT id FROM devices WHERE event_count > ?", (quota,))]

    def recall(self, request: RecallRequest) -> RecallResponse:
        return recall_memories(self.longterm, request)

    def stats(self) -> StoreStats:
        def count(sql: str) -> int:
            return integer(self.conn, sql)

        wal = Path(f"{self.path}-wal")
        return StoreStats(
            memories=count("SELECT count(*) FROM memories WHERE forgotten_at IS NULL"),
            vectors=count("SELECT count(*) FROM vectors"),
            forgotten=count("SELECT count(*) FROM memories WHERE forgotten_at IS NOT NULL"),
            archived=count("SELECT count(*) FROM archive_index"),
            segments=count("SELECT count(*) FROM archive_segments"),
            ring_entries=count("SELECT count(*) FROM ring"),
            audit_rows=count("SELECT count(*) FROM audit"),
            file_bytes=self.path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else 0,
            index=str(self.longterm.describe_index()),
            schema_version=count("PRAGMA user_version"),
        )

    def backup_steps(self, target: Path) -> Generator[int, None, None]:
        """Copy the live database to ``target`` a step at a time; yields the pages left.

        The caller runs each step as its own unit of work on the store thread, so requests are
        served between steps; writes made meanwhile through this connection reach the copy too.
        """
        if not target.is_absolute():
            raise StoreError(f"backup path {target} must be absolute")
        tmp = target.with_name(f".{target.name}.partial")
        try:
            dest = apsw.Connection(str(tmp))
        except apsw.Error as exc:
            raise StoreError(f"cannot write a backup at {target}: {exc}") from None
        try:
            with dest.backup("main", self.conn, "main") as backup:
                while not backup.done:
                    backup.step(BACKUP_STEP_PAGES)
                    yield backup.remaining
            dest.execute("PRAGMA journal_mode=DELETE")
        except GeneratorExit:
            tmp.unlink(missing_ok=True)  # abandoned half-way: leave no partial copy behind
            raise
        finally:
            dest.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)

    def backup(self, target: Path) -> BackupDone:
        started = time.monotonic()
        for _ in self.backup_steps(target):
            pass
        return BackupDone(path=str(target), bytes=target.stat().st_size,
                          pages=self.page_count(), took_s=time.monotonic() - started)

    def page_count(self) -> int:
        return integer(self.conn, "PRAGMA page_count")

    def rotate_key(self) -> KeyRotated:
        """Seal everything under a fresh key, then drop the old keys from the ring.

        The ring is saved with both keys before any value changes, so a crash at any point
        leaves every value readable; running the rotation again finishes it.
        """
        old_keys = set(self.keys.keys)
        new_id = self.keys.add_new_current()
        try:
            self.keys.save()
        except KeyRingError as exc:
            del self.keys.keys[new_id]
            raise StoreError(str(exc)) from None
        self.sealer.refresh()
        count = 0
        with self.conn:
            for column in SEALED_COLUMNS:
                # Only the constant names of sealed.py are formatted into these statements.
                table, keys = column.table, column.key_columns
                where = " AND ".join(f"{k} = ?" for k in keys)
                rows = fetch_all(self.conn,
                    f"SELECT sealed, {column.context_sql}, {', '.join(keys)} FROM {table} "  # noqa: S608
                    "WHERE sealed IS NOT NULL")
                for sealed, context, *row_key in rows:
                    if self.sealer.key_of(sealed) == new_id:
                        continue
                    resealed = self.sealer.seal(self.sealer.open(sealed, context), context)
                    self.conn.execute(f"UPDATE {table} SET sealed = ? WHERE {where}", (resealed, *row_key))  # noqa: S608
                    if column is SEGMENT:
                        self.archive.update_checksum(int(row_key[0]), resealed)
                    count += 1
        for kid in old_keys:
            del self.keys.keys[kid]
        self.keys.save()
        self.sealer.refresh()
        return KeyRotated(key_id=new_id, reencrypted=count)

    def checkpoint(self) -> None:
        self.conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)

    def close(self) -> None:
        self.conn.close()
