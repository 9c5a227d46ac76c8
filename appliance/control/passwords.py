"""Password hashes: scrypt (stdlib hashlib), self-describing so the cost can be raised later.

    scrypt$<log2 N>$<r>$<p>$<salt, base64>$<hash, base64>

Hashing costs ~170 ms and 32 MiB at the default cost 15 on a 2-core box, so callers run it
off the event loop (`hash_password_async`, `verify_password_async`). A stored hash of another
cost still verifies; a login with it is the moment to re-hash at the configured cost.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

from pydantic import Field

from appliance.phrases import Phrase

R, P, KEY_BYTES, SALT_BYTES = 8, 1, 32, 16
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 256
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"


class BadHash(ValueError):
    """A stored hash that is not in the format above."""


def password_problem(password: str) -> Phrase | None:
    """Why a new password is refused, or None. Length is what matters (no composition rules);
    the same rules are in the request schemas (NewPassword), so clients can check first."""
    if len(password) < MIN_PASSWORD_CHARS:
        return Phrase("password.too_short", n=MIN_PASSWORD_CHARS)
    if len(password) > MAX_PASSWORD_CHARS:
        return Phrase("password.too_long", n=MAX_PASSWORD_CHARS)
    if not re.fullmatch(NO_CONTROL_CHARACTERS, password):
        return Phrase("password.control_characters")
    return None


def new_password_field(description: str = "at least 10 characters, no control characters", **default: Any) -> Any:
    """The schema of a password being set: the rules of password_problem, for clients to see."""
    return Field(**default, min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS, description=description,
                 json_schema_extra={"pattern": NO_CONTROL_CHARACTERS, "writeOnly": True})


def _scrypt(password: str, salt: bytes, cost: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**cost, r=r, p=p, dklen=KEY_BYTES,
                          maxmem=2 * 128 * r * 2**cost + (1 << 20))


def hash_password(password: str, cost: int) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, cost, R, P)
    return f"scrypt${cost}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, cost, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(cost), int(r), int(p))
    except ValueError as exc:
        raise BadHash(f"not an scrypt hash this code can check: {exc}") from None
    return hmac.compare_digest(actual, expected)


async def hash_password_async(password: str, cost: int) -> str:
    return await asyncio.to_thread(hash_password, password, cost)


async def verify_password_async(password: str, encoded: str) -> bool:
    return await asyncio.to_thread(verify_password, password, encoded)
