"""Signed access tokens (JWT): Ed25519 by default, HS256 when security.jwt_secret is set.

The Ed25519 key is made on first use in <state_dir>/keys, owner-only, and written atomically
so the api and the `appliance token create` command can never see half a key.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ValidationError

from appliance.config import ApplianceConfig
from appliance.control.caller import Caller, Role, Surface
from appliance.control.errors import CommandError

ISSUER = "appliance"
AUDIENCE = "appliance-api"
MAX_TOKEN_CHARS = 8192


class TokenError(Exception):
    """The token is not acceptable; the message says why without echoing it."""


class Claims(BaseModel):
    sub: str
    role: Role
    iat: int
    exp: int
    jti: str


def _give_to_owner_of(path: Path, state_dir: Path) -> None:
    # root running `appliance token create` must not leave a key the service user cannot read.
    if os.geteuid() == 0:
        owner = state_dir.stat()
        os.chown(path, owner.st_uid, owner.st_gid)


def load_or_create_ed25519(state_dir: Path) -> Ed25519PrivateKey:
    path = state_dir / "keys" / "jwt-ed25519.pem"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _give_to_owner_of(path.parent, state_dir)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        _give_to_owner_of(tmp, state_dir)
        try:
            os.link(tmp, path)  # fails if another process won the race; then we use its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TokenError(f"{path} does not hold an Ed25519 private key")
    return key


class TokenAuthority:
    def __init__(self, signing_key: Ed25519PrivateKey | bytes,
                 verify_key: Ed25519PublicKey | bytes, algorithm: str) -> None:
        self._signing_key = signing_key
        self._verify_key = verify_key
        self.algorithm = algorithm

    @classmethod
    def from_config(cls, config: ApplianceConfig) -> TokenAuthority:
        if config.security.jwt_secret is not None:
            secret = config.security.jwt_secret.get_secret_value().encode()
            return cls(secret, secret, "HS256")
        key = load_or_create_ed25519(config.paths.state_dir)
        return cls(key, key.public_key(), "EdDSA")

    def issue(self, subject: str, role: Role, ttl_s: int) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "role": role.value,
                  "iat": now, "nbf": now, "exp": now + ttl_s, "jti": secrets.token_hex(16)}
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm)

    def verify(self, token: str) -> Claims:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("token is empty or longer than 8192 characters")
        try:
            data = jwt.decode(token, self._verify_key, algorithms=[self.algorithm],
                              audience=AUDIENCE, issuer=ISSUER,
                              options={"require": ["exp", "iat", "sub", "aud", "iss"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"token is not valid: {exc}") from None
        try:
            return Claims.model_validate(data)
        except ValidationError as exc:
            raise TokenError(f"token claims are not valid: {exc.errors()[0]['msg']}") from None

    def caller(self, token: str, via: Surface, ip: str | None = None) -> Caller:
        """The caller a bearer token stands for; an unacceptable token is ``unauthorized``."""
        try:
            claims = self.verify(token)
        except TokenError as exc:
            raise CommandError("unauthorized", str(exc)) from None
        return Caller(claims.sub, claims.role, via, ip, claims.jti)
