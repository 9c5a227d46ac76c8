"""What the CLI does to the memory file directly: restore a backup, verify the audit chain.

Restore needs the store stopped (the store is the only writer); it checks the backup first
(SQLite integrity, schema version, vector dimension) and copies it in with SQLite's backup
API, so the live file's WAL and shared memory are handled by SQLite, never by file copies.
Audit verification opens the file read-only and works whether or not the store runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import apsw

from appliance.config import ApplianceConfig
from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError
from appliance.protocol.common import HEALTH, ServiceName
from appliance.protocol.services import SERVICE_NAMES
from appliance.protocol.store import AuditVerdict
from appliance.store.audit import AuditLog
from appliance.store.db import connect
from appliance.store.schema import SCHEMA_VERSION
from appliance.store.sql import integer, scalar


class OfflineError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def services_answering(config: ApplianceConfig, names: tuple[ServiceName, ...] = SERVICE_NAMES) -> list[ServiceName]:
    """Those of ``names`` that answer over IPC now (what must be stopped before the files are touched)."""

    async def ask(name: ServiceName) -> bool:
        client = IpcClient(name, config.socket_path(name), timeout_s=2.0)
        try:
            await client.call(HEALTH)
            return True
        except IpcError:
            return False
        finally:
            await client.close()

    async def all_of() -> list[bool]:
        return list(await asyncio.gather(*(ask(name) for name in names)))

    return [name for name, up in zip(names, asyncio.run(all_of()), strict=True) if up]


def _store_running(config: ApplianceConfig) -> bool:
    return bool(services_answering(config, ("store",)))


def check_backup(path: Path, dim: int) -> str:
    if not path.is_file():
        raise OfflineError(f"{path}: no such file", code=2)
    try:
        conn = connect(path, readonly=True)
    except apsw.Error as exc:
        raise OfflineError(f"{path}: cannot open as SQLite: {exc}", code=2) from None
    try:
        verdict = scalar(conn, "PRAGMA integrity_check")
        if verdict != "ok":
            raise OfflineError(f"{path}: integrity check failed: {verdict}", code=2)
        version = integer(conn, "PRAGMA user_version")
        if not 1 <= version <= SCHEMA_VERSION:
            raise OfflineError(f"{path}: schema version {version} is not one this release reads "
                               f"(1..{SCHEMA_VERSION})", code=2)
        stored_dim = integer(conn, "SELECT value FROM meta WHERE key = 'vector_dim'")
        if stored_dim != dim:
            raise OfflineError(f"{path}: holds {stored_dim}-dim vectors, memory.vector_dim is {dim}", code=2)
        memories = integer(conn, "SELECT count(*) FROM memories")
    except apsw.Error as exc:
        raise OfflineError(f"{path}: not a memory file: {exc}", code=2) from None
    finally:
        conn.close()
    return f"schema {version}, {memories} memories"


def restore_backup(config: ApplianceConfig, backup: Path) -> str:
    summary = check_backup(backup, config.memory.vector_dim)
    if _store_running(config):
        raise OfflineError("the store is running; stop it first (systemctl stop appliance-store)")
    live = config.memory_dir / "memory.db"
    live.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    copy_database(backup, live)
    return summary


def copy_database(source_file: Path, target_file: Path) -> None:
    """``source_file`` into ``target_file`` through SQLite's backup API (its WAL and locks handled by
    SQLite, never by a file copy), the target's WAL folded in after."""
    source = apsw.Connection(str(source_file), flags=apsw.SQLITE_OPEN_READONLY)
    dest = apsw.Connection(str(target_file))
    try:
        with dest.backup("main", source, "main") as copy:
            while not copy.done:
                copy.step(1024)
        dest.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    finally:
        dest.close()
        source.close()


def verify_audit(config: ApplianceConfig) -> AuditVerdict:
    path = config.memory_dir / "memory.db"
    if not path.is_file():
        raise OfflineError(f"{path}: no memory file yet", code=2)
    conn = connect(path, readonly=True)
    try:
        if integer(conn, "PRAGMA user_version") < 2:
            return AuditVerdict(ok=True, rows=0, reason="this file predates the audit log")
        return AuditLog(conn).verify()
    finally:
        conn.close()
