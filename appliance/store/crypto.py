"""Encryption at rest: AES-256-GCM with keys from an owner-only key ring file.

Sealed value layout: ``0x01 | nonce (12) | ciphertext | tag (16)``. The nonce is the key's
4-byte id, a 32-bit epoch and a 32-bit counter. Each Sealer takes a fresh epoch that is
committed to the database on its own, before anything is sealed (at open and after a key
rotation, never inside another transaction), and counts from 0 in memory. So a nonce is
never used twice with one key, across restarts and crashes included: a crash can lose an
epoch, never hand one out twice. Every value is bound to where it lives (associated data such as ``memory:42``), so
a ciphertext copied onto another row does not decrypt.

The key ring comes from a systemd credential (``$CREDENTIALS_DIRECTORY/memory-key``) when one
is given, otherwise from the key file, created 0600 on first start.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.store.errors import StoreError

FORMAT = 1
KEY_BYTES = 32
COUNTER_LIMIT = 1 << 32
EPOCH_LIMIT = 1 << 32
CREDENTIAL_NAME = "memory-key"


class KeyRingError(StoreError):
    """The key ring is missing, malformed, or lacks the key a value was sealed with."""


@dataclass
class KeyRing:
    current: str
    keys: dict[str, bytes]
    path: Path
    from_credential: bool = False

    @staticmethod
    def _parse(raw: bytes, where: Path) -> tuple[str, dict[str, bytes]]:
        try:
            doc = json.loads(raw)
            keys = {kid: base64.b64decode(value, validate=True) for kid, value in doc["keys"].items()}
            current = doc["current"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyRingError(f"{where}: not a key ring ({exc.__class__.__name__}: {exc})") from None
        for kid, key in keys.items():
            if len(bytes.fromhex(kid)) != 4 or len(key) != KEY_BYTES:
                raise KeyRingError(f"{where}: key {kid!r} must be an 8-hex-digit id with a 32-byte key")
        if current not in keys:
            raise KeyRingError(f"{where}: current key {current!r} is not in the ring")
        return current, keys

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and (cred := Path(credentials) / CREDENTIAL_NAME).is_file():
            current, keys = cls._parse(cred.read_bytes(), cred)
            return cls(current, keys, cred, from_credential=True)
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise KeyRingError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
            current, keys = cls._parse(path.read_bytes(), path)
            return cls(current, keys, path)
        kid = secrets.token_hex(4)
        ring = cls(kid, {kid: secrets.token_bytes(KEY_BYTES)}, path)
        ring.save()
        return ring

    def save(self) -> None:
        """Write the ring atomically, owner-only, and fsync it before it replaces the old one."""
        if self.from_credential:
            raise KeyRingError(f"the key ring comes from the systemd credential {self.path}; change it there")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        doc = {"current": self.current, "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()}}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(doc).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def add_new_current(self) -> str:
        kid = secrets.token_hex(4)
        while kid in self.keys:
            kid = secrets.token_hex(4)
        self.keys[kid] = secrets.token_bytes(KEY_BYTES)
        self.current = kid
        return kid


class Sealer:
    """Seals and opens values; ``new_epoch(key_id)`` commits and returns that key's next epoch."""

    def __init__(self, ring: KeyRing, new_epoch: Callable[[str], int]) -> None:
        self.ring = ring
        self._new_epoch = new_epoch
        self.refresh()

    def refresh(self) -> None:
        """Pick up a changed ring (after rotation) and start a new epoch; call outside transactions."""
        self._aeads = {kid: AESGCM(key) for kid, key in self.ring.keys.items()}
        self._epoch = self._new_epoch(self.ring.current)
        self._counter = 0

    def _nonce(self) -> bytes:
        if self._counter >= COUNTER_LIMIT:
            # 4 billion seals in one run: only now can an epoch be taken inside a transaction,
            # so db.py refuses that and a restart (which takes a new epoch) continues.
            self._epoch, self._counter = self._new_epoch(self.ring.current), 0
        counter = self._counter
        self._counter += 1
        return bytes.fromhex(self.ring.current) + self._epoch.to_bytes(4, "big") + counter.to_bytes(4, "big")

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = self._nonce()
        return bytes([FORMAT]) + nonce + self._aeads[self.ring.current].encrypt(nonce, plaintext, context.encode())

    def key_of(self, sealed: bytes) -> str:
        return sealed[1:5].hex()

    def open(self, sealed: bytes, context: str) -> bytes:
        if len(sealed) < 29 or sealed[0] != FORMAT:
            raise KeyRingError(f"{context}: not a sealed value")
        kid = self.key_of(sealed)
        aead = self._aeads.get(kid)
        if aead is None:
            raise KeyRingError(f"{context}: sealed with key {kid}, which is not in the key ring")
        try:
            return aead.decrypt(sealed[1:13], sealed[13:], context.encode())
        except InvalidTag:
            raise KeyRingError(f"{context}: authentication failed (tampered, or moved from another row)") from None
