"""The keys that sign tokens: Ed25519 with a key id (`kid`) and rotation, or one HS256 secret.

Ed25519 keys live in ``<state_dir>/keys/jwt/``, owner-only: ``<kid>.pem`` each (the kid is the
first 16 hex digits of the SHA-256 of the public key), ``current`` naming the one that signs,
and ``<kid>.retire`` holding the unix time after which tokens signed by a rotated-out key are
refused (the latest expiry of any token it signed). Files are written to a temporary name and
linked into place, so a process reading them never sees half a key; the api reloads the folder
when a token names a kid it does not know. A key from before rotation existed
(``keys/jwt-ed25519.pem``) is adopted as the first key.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.config import ApplianceConfig

HS256_KID = "hs256"


class SigningKeyError(Exception):
    """The key folder cannot be used; the message names the file."""


def kid_of(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _owner_of(path: Path, like: Path) -> None:
    # root running `appliance keys rotate` must not leave files the service user cannot read.
    if os.geteuid() == 0:
        owner = like.stat()
        os.chown(path, owner.st_uid, owner.st_gid)


def _write_once(path: Path, data: bytes, like: Path) -> bool:
    """Write ``path`` atomically unless it exists; False when another process won the race."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    _owner_of(tmp, like)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _replace(path: Path, data: bytes, like: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    _owner_of(tmp, like)
    tmp.replace(path)


class SigningKeys:
    """The Ed25519 key ring of one box; `HmacKey` is the HS256 alternative."""

    algorithm = "EdDSA"

    def __init__(self, folder: Path, state_dir: Path) -> None:
        self.folder = folder
        self._state_dir = state_dir
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._retire: dict[str, float] = {}
        self.current = ""
        self.load()

    @classmethod
    def for_config(cls, config: ApplianceConfig) -> SigningKeys | HmacKey:
        if config.security.jwt_secret is not None:
            return HmacKey(config.security.jwt_secret.get_secret_value().encode())
        return cls(config.paths.state_dir / "keys" / "jwt", config.paths.state_dir)

    def load(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _owner_of(self.folder, self._state_dir)
        legacy = self.folder.parent / "jwt-ed25519.pem"
        if legacy.exists() and not (self.folder / "current").exists():
            key = self._read(legacy)
            _write_once(self.folder / f"{kid_of(key.public_key())}.pem", legacy.read_bytes(), self._state_dir)
            _write_once(self.folder / "current", kid_of(key.public_key()).encode(), self._state_dir)
        if not (self.folder / "current").exists():
            self._new_key(make_current=True)
        private, retire = {}, {}
        for path in self.folder.glob("*.pem"):
            private[path.stem] = self._read(path)
            if (marker := path.with_suffix(".retire")).exists():
                retire[path.stem] = float(marker.read_text())
        current = (self.folder / "current").read_text().strip()
        if current not in private:
            raise SigningKeyError(f"{self.folder / 'current'} names key {current!r}, which is not in {self.folder}")
        self._private, self._retire, self.current = private, retire, current

    def _read(self, path: Path) -> Ed25519PrivateKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"{path}: cannot read the signing key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{path} does not hold an Ed25519 private key")
        return key

    def _new_key(self, *, make_current: bool) -> str:
        key = Ed25519PrivateKey.generate()
        kid = kid_of(key.public_key())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        _write_once(self.folder / f"{kid}.pem", pem, self._state_dir)
        if make_current and not _write_once(self.folder / "current", kid.encode(), self._state_dir):
            pass  # another process made the first key at the same moment: theirs is current
        return kid

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        return self.current, self._private[self.current]

    def verifying_key(self, kid: str) -> Ed25519PublicKey | None:
        """The public key of ``kid`` while tokens it signed may still be accepted."""
        return self._private[kid].public_key() if self.accepts(kid) else None

    def accepts(self, kid: str) -> bool:
        """Whether tokens signed by ``kid`` may still be accepted (cheap: no key is derived)."""
        return kid in self._private and self._retire.get(kid, float("inf")) >= time.time()

    def rotate(self, retire_old_at: float) -> str:
        """A new key signs from now on; the old one verifies until ``retire_old_at``."""
        old = self.current
        kid = self._new_key(make_current=False)
        _replace(self.folder / f"{old}.retire", f"{retire_old_at:.0f}".encode(), self._state_dir)
        _replace(self.folder / "current", kid.encode(), self._state_dir)
        self._prune()
        self.load()
        return kid

    def _prune(self) -> None:
        """Delete keys whose tokens have all expired."""
        now = time.time()
        for marker in self.folder.glob("*.retire"):
            if float(marker.read_text()) < now:
                marker.with_suffix(".pem").unlink(missing_ok=True)
                marker.unlink()

    def kids(self) -> list[str]:
        return sorted(self._private)


class HmacKey:
    """security.jwt_secret: one shared HS256 secret (at least 32 bytes, checked by the config)."""

    algorithm = "HS256"
    current = HS256_KID

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signing_key(self) -> tuple[str, bytes]:
        return HS256_KID, self._secret

    def verifying_key(self, kid: str) -> bytes | None:
        return self._secret if kid == HS256_KID else None

    def accepts(self, kid: str) -> bool:
        return kid == HS256_KID

    def load(self) -> None:
        """Nothing to reload: the secret comes from the configuration."""

    def rotate(self, retire_old_at: float) -> str:
        raise SigningKeyError("HS256 has one secret (security.jwt_secret): change it to rotate; every token then ends")

    def kids(self) -> list[str]:
        return [HS256_KID]
