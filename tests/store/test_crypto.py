"""Encryption at rest: the key ring file, nonces, tampering, rotation, and what reaches the disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from appliance.protocol.store import ArchiveQuery, MemoryIn, RingEntryIn
from appliance.store.crypto import KeyRing, KeyRingError, Sealer
from appliance.store.db import MemoryDB
from appliance.store.errors import StoreError
from tests.store.conftest import open_db, unit

SECRET = "wifi password is Tr0ub4dor&3"


def test_key_file_is_created_owner_only(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys" / "memory.key")
    assert stat.S_IMODE(ring.path.stat().st_mode) == 0o600
    assert KeyRing.load_or_create(ring.path).keys == ring.keys


def test_group_readable_or_malformed_key_files_are_refused(tmp_path: Path) -> None:
    ring = KeyRing.load_or_create(tmp_path / "k")
    ring.path.chmod(0o640)
    with pytest.raises(KeyRingError, match="readable by others"):
        KeyRing.load_or_create(ring.path)
    bad = tmp_path / "bad"
    bad.write_text('{"current": "zz", "keys": {}}')
    bad.chmod(0o600)
    with pytest.raises(KeyRingError, match="not in the ring"):
        KeyRing.load_or_create(bad)


def test_systemd_credential_wins_and_cannot_be_rotated_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = KeyRing.load_or_create(tmp_path / "made")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "memory-key").write_bytes(source.path.read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    ring = KeyRing.load_or_create(tmp_path / "ignored")
    assert ring.from_credential and ring.keys == source.keys
    assert not (tmp_path / "ignored").exists()
    with pytest.raises(KeyRingError, match="systemd credential"):
        ring.save()


def test_values_are_bound_to_their_place(tmp_path: Path) -> None:
    epochs = iter(range(1, 100))
    sealer = Sealer(KeyRing.load_or_create(tmp_path / "k"), lambda _kid: next(epochs))
    sealed = sealer.seal(b"hello", "memory:1")
    assert sealer.open(sealed, "memory:1") == b"hello"
    with pytest.raises(KeyRingError, match="authentication failed"):
        sealer.open(sealed, "memory:2")
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(KeyRingError, match="authentication failed"):
        sealer.open(bytes(flipped), "memory:1")


def test_nonces_never_repeat_across_reopen(tmp_path: Path) -> None:
    seen: set[bytes] = set()
    for _ in range(3):
        db = open_db(tmp_path)
        for i in range(5):
            entry = db.ring.append(RingEntryIn(conversation="c", text=f"t{i}"))
            sealed = db.conn.execute("SELECT sealed FROM ring WHERE conversation = 'c' AND seq = ?",
                                     (entry.seq,)).fetchone()[0]
            nonce = bytes(sealed[1:13])
            assert nonce not in seen
            seen.add(nonce)
        db.close()


def test_epochs_are_committed_alone_and_never_taken_in_a_transaction(tmp_path: Path) -> None:
    first = open_db(tmp_path)
    kid = first.keys.current
    assert first.conn.execute("SELECT value FROM meta WHERE key = ?", (f"nonce_epoch:{kid}",)).fetchone()[0] == "1"
    with pytest.raises(StoreError, match="inside a transaction"), first.conn:
        first.sealer._new_epoch(kid)
    first.close()
    second = open_db(tmp_path)
    assert second.sealer._epoch == 2
    second.close()


def _file_bytes(db: MemoryDB) -> bytes:
    wal = Path(f"{db.path}-wal")
    return db.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_encrypted_fields_never_reach_the_file_in_clear(db: MemoryDB, rng: np.random.Generator) -> None:
    db.longterm.remember(MemoryIn(text=SECRET, sensitive=True, metadata={"room": "R2D2-secret"},
                                  embedding=unit(rng), created_at=1.0))
    db.ring.append(RingEntryIn(conversation="staff-1", text="ring says " + SECRET))
    assert db.longterm.get(1).text == SECRET  # type: ignore[union-attr]
    for _ in db.archive.steps(86_400):
        pass
    assert db.archive.find(ArchiveQuery(limit=1))[0].text == SECRET
    db.checkpoint()
    raw = _file_bytes(db)
    for needle in (b"Tr0ub4dor", b"R2D2-secret"):
        assert needle not in raw


def test_rotation_reseals_everything_and_drops_the_old_key(db: MemoryDB, rng: np.random.Generator) -> None:
    db.longterm.remember(MemoryIn(text=SECRET, sensitive=True, embedding=unit(rng)))
    db.longterm.remember(MemoryIn(text="old plain", embedding=unit(rng), created_at=1.0))
    db.ring.append(RingEntryIn(conversation="c", text="hello"))
    for _ in db.archive.steps(86_400):
        pass
    old = db.keys.current
    rotated = db.rotate_key()
    assert rotated.key_id != old and rotated.reencrypted >= 3
    assert list(db.keys.keys) == [rotated.key_id]
    assert old not in db.keys.path.read_text()
    assert db.longterm.get(1).text == SECRET  # type: ignore[union-attr]
    assert db.ring.read("c", 1)[0].text == "hello"
    db.archive._cache = None
    assert db.archive.find(ArchiveQuery())[0].text == "old plain"
    assert os.stat(db.keys.path).st_mode & 0o077 == 0
