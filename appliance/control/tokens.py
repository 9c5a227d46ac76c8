"""Signed tokens (JWT): what they claim, how they are made, and how they are checked.

Every token carries iss, aud, sub, role, typ, jti, iat, nbf and exp, and names its signing key
in the header (kid). The accepted algorithm is the server's (EdDSA, or HS256 with
security.jwt_secret), never read from the token. Types:

- ``access``: a login's short-lived bearer token (security.access_ttl_s, 15 min);
- ``refresh``: trades for a new access token once (its family is tracked in the store);
- ``app``: a named device or app token made by an admin, revocable, with its own lifetime.

Only access and app tokens authenticate a request; a refresh token sent as a bearer is refused.
Whether a valid token was revoked is decided by its holder of revocations (control/accounts.py).

Checking a signature is most of what a request that reads costs the api (bench/results/
api-openloop-vm.md: 58 % of its CPU under GET /api/v1/auth/me), and a client sends the same token
many times. So a token whose signature and claims passed is remembered, and its next use skips
both. The rules:

1. only a token that passed every check is remembered, by its exact text;
2. it is remembered for at most VERIFIED_FOR_S and never past its exp: an expired token is
   checked again (and refused as expired);
3. its signing key is asked on every use whether it is still accepted (a dictionary lookup, not a
   signature): a key retired or removed stops its tokens at once, remembered or not;
4. the type a caller accepts is checked on every use, remembered or not;
5. at most VERIFIED_MAX tokens are remembered; the oldest goes first;
6. revocation and disabled users are not decided here: the caller checks them on every use.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jwt
from pydantic import BaseModel, ValidationError

from appliance.control.caller import Role
from appliance.control.keys import HmacKey, SigningKeys

ISSUER = "appliance"
AUDIENCE = "appliance-api"
MAX_TOKEN_CHARS = 8192
RELOAD_AFTER_S = 5.0
VERIFIED_FOR_S = 30.0
VERIFIED_MAX = 4096
TokenType = Literal["access", "refresh", "app"]


class TokenError(Exception):
    """The token is not acceptable; the message says why without echoing it."""


class Claims(BaseModel):
    sub: str
    role: Role
    typ: TokenType
    jti: str
    iat: int
    exp: int
    fam: str | None = None  # refresh tokens: the family (one login and its rotations)


@dataclass(frozen=True)
class Issued:
    token: str
    jti: str
    kid: str
    expires_at: int


class TokenAuthority:
    def __init__(self, keys: SigningKeys | HmacKey, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.clock = clock
        self._reloaded_at = 0.0
        self._verified: dict[str, tuple[float, str, Claims]] = {}  # token -> (remembered until, kid, claims)

    @property
    def algorithm(self) -> str:
        return self.keys.algorithm

    def issue(self, typ: TokenType, subject: str, role: Role, ttl_s: int, *, family: str | None = None) -> Issued:
        now = int(time.time())
        jti = secrets.token_hex(16)
        claims: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "role": role.value,
                                     "typ": typ, "jti": jti, "iat": now, "nbf": now, "exp": now + ttl_s}
        if family is not None:
            claims["fam"] = family
        kid, key = self.keys.signing_key()
        token = jwt.encode(claims, key, algorithm=self.algorithm, headers={"kid": kid})
        return Issued(token=token, jti=jti, kid=kid, expires_at=now + ttl_s)

    def _key_for(self, kid: str) -> object:
        key = self.keys.verifying_key(kid)
        if key is None and time.monotonic() - self._reloaded_at > RELOAD_AFTER_S:
            self._reloaded_at = time.monotonic()  # a key rotated by another process: look again, rarely
            self.keys.load()
            key = self.keys.verifying_key(kid)
        if key is None:
            raise TokenError("token is signed with a key this box does not know (or no longer accepts)")
        return key

    def verify(self, token: str, *, accept: tuple[TokenType, ...] = ("access", "app")) -> Claims:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError(f"token is empty or longer than {MAX_TOKEN_CHARS} characters")
        now = self.clock()
        remembered = self._verified.get(token)
        if remembered is not None and remembered[0] > now and self.keys.accepts(remembered[1]):
            claims = remembered[2]
        else:
            self._verified.pop(token, None)
            kid, claims = self._checked(token)
            if len(self._verified) >= VERIFIED_MAX:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = (min(now + VERIFIED_FOR_S, claims.exp), kid, claims)
        if claims.typ not in accept:
            raise TokenError(f"a {claims.typ} token cannot be used here (this needs {' or '.join(accept)})")
        return claims

    def _checked(self, token: str) -> tuple[str, Claims]:
        """The key id and claims of ``token`` after every check: key, signature, audience, issuer, times."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"token is not valid: {exc}") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token names no signing key (kid)")
        try:
            data = jwt.decode(token, self._key_for(kid), algorithms=[self.algorithm],  # type: ignore[arg-type]
                              audience=AUDIENCE, issuer=ISSUER,
                              options={"require": ["exp", "iat", "sub", "aud", "iss", "jti", "typ"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"token is not valid: {exc}") from None
        try:
            return kid, Claims.model_validate(data)
        except ValidationError as exc:
            raise TokenError(f"token claims are not valid: {exc.errors()[0]['msg']}") from None
