"""The audit log's hash chain, and `appliance audit verify` catching each kind of tampering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from appliance.protocol.store import AuditIn
from appliance.store.db import MemoryDB
from tests.store.conftest import open_db


def _filled(folder: Path, rows: int = 5) -> MemoryDB:
    db = open_db(folder)
    for i in range(rows):
        db.audit.append(AuditIn(user_id=f"user{i}", action="memory.remember", ip_address="10.0.0.7",
                                details={"id": i, "note": "ünïcode"}))
    return db


def _as_attacker(db: MemoryDB, *sql: str) -> None:
    """Someone with write access to the file: the append-only triggers do not stop them."""
    with db.conn:
        db.conn.execute("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete")
        for statement in sql:
            db.conn.execute(statement)


def test_untouched_chain_verifies(tmp_path: Path) -> None:
    verdict = _filled(tmp_path).audit.verify()
    assert verdict.ok and verdict.rows == 5


def test_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    db = _filled(tmp_path)
    with pytest.raises(apsw.ConstraintError, match="append-only"):
        db.conn.execute("UPDATE audit SET action = 'x' WHERE id = 2")
    with pytest.raises(apsw.ConstraintError, match="append-only"):
        db.conn.execute("DELETE FROM audit WHERE id = 2")


@pytest.mark.parametrize(("attack", "bad_row", "reason"), [
    ("UPDATE audit SET details = '{\"id\": 99}' WHERE id = 3", 3, "changed"),
    ("UPDATE audit SET user_id = 'mallory' WHERE id = 1", 1, "changed"),
    ("DELETE FROM audit WHERE id = 2", 3, "row 2 is missing"),
    ("DELETE FROM audit WHERE id = 5", 5, "removed from the end"),
    ("INSERT INTO audit VALUES (6, 'm', 'x', 0, NULL, '{}', 'f00', 'ba4')", 6, "does not chain"),
])
def test_verify_names_the_first_bad_row(tmp_path: Path, attack: str, bad_row: int, reason: str) -> None:
    db = _filled(tmp_path)
    _as_attacker(db, attack)
    verdict = db.audit.verify()
    assert not verdict.ok
    assert verdict.first_bad_id == bad_row
    assert reason in verdict.reason


def test_cli_verify_exits_non_zero_naming_the_row(tmp_path: Path) -> None:
    db = _filled(tmp_path / "memory")
    config = tmp_path / "agent.yaml"
    config.write_text(f"memory:\n  vector_dim: 16\n  storage_path: {tmp_path / 'memory'}\n"
                      f"paths:\n  state_dir: {tmp_path}\n  runtime_dir: {tmp_path / 'run'}\n")
    command = [sys.executable, "-m", "appliance", "--config", str(config), "audit", "verify"]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    _as_attacker(db, "UPDATE audit SET action = 'nothing happened' WHERE id = 4")
    db.close()
    bad = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "audit chain broken at row 4" in bad.stderr
