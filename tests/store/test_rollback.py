"""A rollback after a newer release migrated the memory file: the store restores the pre-update
backup and keeps the newer file aside (appliance/store/rollback.py), on real SQLite files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState
from appliance.protocol.store import STORE_BACKUP, STORE_REMEMBER, BackupRequest, MemoryIn
from appliance.store.db import connect, migrate
from appliance.store.rollback import PRE_UPDATE_BACKUP, restore_after_rollback, schema_of
from appliance.store.schema import SCHEMA_VERSION
from tests.helpers import serve, wait_ready


def memory_file(path: Path, fact: str) -> Path:
    conn = connect(path)
    migrate(conn, path, 8)
    conn.execute("CREATE TABLE IF NOT EXISTS probe (fact TEXT)")
    conn.execute("INSERT INTO probe VALUES (?)", (fact,))
    conn.close()
    return path


def newer(path: Path) -> None:
    """What a newer release's migration leaves: a schema number this release has not heard of."""
    conn = connect(path)
    conn.execute("INSERT INTO probe VALUES ('written on the newer release')")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


def facts(path: Path) -> list[str]:
    conn = connect(path, readonly=True)
    try:
        return [row[0] for row in conn.execute("SELECT fact FROM probe")]
    finally:
        conn.close()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "memory").mkdir()
    live = memory_file(tmp_path / "memory" / "memory.db", "before the update")
    backup = tmp_path / "update" / "pre-update.db"
    backup.parent.mkdir()
    shutil.copyfile(live, backup)
    return live, backup


def test_a_file_this_release_reads_is_left_alone(files: tuple[Path, Path]) -> None:
    live, backup = files
    assert restore_after_rollback(live, backup) is None
    assert facts(live) == ["before the update"]


def test_a_newer_file_is_kept_aside_and_the_pre_update_backup_restored(files: tuple[Path, Path]) -> None:
    live, backup = files
    newer(live)
    said = restore_after_rollback(live, backup)
    assert said is not None and f"schema {SCHEMA_VERSION + 1}" in said and "kept the newer file" in said
    assert schema_of(live) == SCHEMA_VERSION and facts(live) == ["before the update"]
    aside = live.with_name(f"memory.db.schema-{SCHEMA_VERSION + 1}")
    assert facts(aside) == ["before the update", "written on the newer release"]
    assert backup.exists()  # a second rollback finds it too
    assert restore_after_rollback(live, backup) is None


@pytest.mark.parametrize("backup_state", ["missing", "newer too", "not sqlite"])
def test_without_a_backup_this_release_can_read_nothing_is_moved(files: tuple[Path, Path],
                                                                 backup_state: str) -> None:
    live, backup = files
    newer(live)
    if backup_state == "missing":
        backup.unlink()
    elif backup_state == "newer too":
        newer(backup)
    else:
        backup.write_bytes(b"garbage" * 100)
    assert restore_after_rollback(live, backup) is None
    assert schema_of(live) == SCHEMA_VERSION + 1
    assert sorted(p.name for p in live.parent.iterdir() if ".schema-" in p.name) == []


@pytest.mark.slow
async def test_the_store_process_restores_at_start_and_comes_up_ready(config_file: Path, tmp_path: Path) -> None:
    """The real store, started on a file a newer release migrated, with the installer's backup beside it."""
    config = load_config(config_file)
    peers = Peers(config)
    try:
        first = serve(config_file, "store", log=tmp_path / "store-1.log")
        await wait_ready(peers.client("store"))
        await peers.store.call(STORE_REMEMBER, MemoryIn(text="before the update", kind="fact"))
        backup = config.paths.state_dir / PRE_UPDATE_BACKUP
        backup.parent.mkdir(parents=True, exist_ok=True)
        await peers.store.call(STORE_BACKUP, BackupRequest(path=str(backup)))
        first.terminate()
        first.wait(15)
        live = config.memory_dir / "memory.db"
        newer_conn = connect(live)
        newer_conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        newer_conn.close()
        second = serve(config_file, "store", log=tmp_path / "store-2.log")
        try:
            await wait_ready(peers.client("store"))
            health = await peers.store.call(HEALTH)
            assert health.state is ServiceState.READY and health.detail.startswith("1 memories"), health.detail
            assert live.with_name(f"memory.db.schema-{SCHEMA_VERSION + 1}").exists()
            assert "rolled back" in (tmp_path / "store-2.log").read_text()
        finally:
            second.terminate()
            second.wait(15)
    finally:
        await peers.close()
