"""After a rollback: the memory file a newer release migrated, and the copy taken before the update.

Migrations run forward only (schema.py), so a release cannot read a file that a newer one migrated.
An update's installer therefore has the store back the file up first (`<state_dir>/update/
pre-update.db`, the online backup of `memory.backup`) before it writes the other slot
(appliance/cli/update.py). When the newer release fails and the box falls back to this one, the
store, before it opens the file:

1. does nothing unless memory.db's schema is newer than this release's;
2. does nothing more unless the pre-update copy exists and this release can read it (the store then
   stays degraded and says why, as it always did with a file too new);
3. moves memory.db (with its -wal and -shm) aside as memory.db.schema-N (kept: what was written on
   the newer release is there, for a later update or a technician), and puts a copy of the
   pre-update backup in its place. The backup itself stays, so a second rollback finds it too.

The return value says what happened, for the log and the store's health detail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import apsw

from appliance.store.schema import SCHEMA_VERSION

PRE_UPDATE_BACKUP = Path("update") / "pre-update.db"  # under the state folder


def schema_of(path: Path) -> int:
    conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        row = conn.execute("PRAGMA user_version").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def restore_after_rollback(memory_file: Path, backup: Path) -> str | None:
    """Steps 1-3 of the module docstring; None when the file is readable as it is."""
    if not memory_file.exists():
        return None
    try:
        found = schema_of(memory_file)
    except apsw.Error:
        return None  # not ours to judge here: opening it says what is wrong
    if found <= SCHEMA_VERSION:
        return None
    try:
        saved = schema_of(backup) if backup.exists() else None
    except apsw.Error:
        saved = None
    if saved is None or saved > SCHEMA_VERSION:
        return None
    aside = memory_file.with_name(f"{memory_file.name}.schema-{found}")
    for suffix in ("", "-wal", "-shm"):
        part = memory_file.with_name(memory_file.name + suffix)
        if part.exists():
            part.replace(aside.with_name(aside.name + suffix))
    partial = memory_file.with_name(f".{memory_file.name}.restoring")
    shutil.copyfile(backup, partial)
    partial.replace(memory_file)
    return (f"rolled back: {memory_file.name} had schema {found}, newer than this release's {SCHEMA_VERSION}; "
            f"restored the pre-update backup (schema {saved}) and kept the newer file as {aside.name}")
