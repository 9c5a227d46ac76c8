"""Authentication for every surface: tokens to callers, logins, refresh, logout, first-boot setup.

One `Accounts` lives in each process that serves people (the api; the CLI makes one to sign
app tokens). It holds the signing keys, and follows the store's revocation feed so that a
token revoked anywhere, or a user disabled anywhere, stops working here within a second.

Logins are limited twice: per address (a token bucket of security.login_per_ip_per_minute, in
this process) and per user (the store's lockout, which survives restarts). A locked account or
a spent bucket is refused before any password is hashed, so a flood of guesses costs little.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass

from pydantic import Field

from appliance.config import ApplianceConfig
from appliance.control.caller import Caller, Role, Surface
from appliance.control.errors import CommandError
from appliance.control.keys import SigningKeys
from appliance.control.passwords import BadHash, hash_password, verify_password_async
from appliance.control.tokens import Issued, TokenAuthority, TokenError
from appliance.ipc.errors import IpcError, NotFound
from appliance.ipc.peers import Peers
from appliance.phrases import Phrase
from appliance.protocol.accounts import (
    ACCOUNTS_LOGIN_RESULT,
    ACCOUNTS_REFRESH_ISSUE,
    ACCOUNTS_REFRESH_REVOKE,
    ACCOUNTS_REFRESH_USE,
    ACCOUNTS_REVOCATIONS,
    ACCOUNTS_REVOKE,
    ACCOUNTS_USER_CREATE,
    ACCOUNTS_USER_GET,
    ACCOUNTS_USERS,
    USERNAME_PATTERN,
    Family,
    LoginResult,
    RefreshIssue,
    RefreshUse,
    RevocationsSince,
    Revoke,
    UserCreate,
    Username,
    UserSecret,
)
from appliance.protocol.common import Message

FOLLOW_EVERY_S = 1.0
WRONG_LOGIN = Phrase("auth.wrong_login")
# Spent on unknown users too, so a login's time does not tell whether the name exists.
_DUMMY_HASH = hash_password("not-a-real-password", 10)


class TokenPair(Message):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_token: str
    refresh_expires_in: int
    username: str
    role: Role


@dataclass
class _Bucket:
    tokens: float
    at: float


class Accounts:
    def __init__(self, config: ApplianceConfig, peers: Peers, log: logging.Logger) -> None:
        self.config = config
        self.security = config.security
        self.peers = peers
        self.log = log
        self._authority: TokenAuthority | None = None
        self._revoked: dict[str, float] = {}  # jti -> when it would have expired anyway
        self._disabled: set[str] = set()
        self._last_event = 0
        self._buckets: dict[str, _Bucket] = {}
        self.setup_token: str | None = None
        self._follower: asyncio.Task[None] | None = None

    @property
    def authority(self) -> TokenAuthority:
        """The signing keys, read (or made) on first use: the key folder is only touched when needed."""
        if self._authority is None:
            self._authority = TokenAuthority(SigningKeys.for_config(self.config))
        return self._authority

    # --- checking tokens --------------------------------------------------------------------

    def caller(self, token: str, via: Surface, ip: str | None = None) -> Caller:
        """The caller a bearer token stands for; anything unacceptable is ``unauthorized``."""
        try:
            claims = self.authority.verify(token)
        except TokenError as exc:
            raise CommandError("unauthorized", Phrase("auth.token_invalid", why=str(exc))) from None
        if claims.jti in self._revoked:
            raise CommandError("unauthorized", Phrase("auth.token_revoked"))
        if claims.typ == "access" and claims.sub.lower() in self._disabled:
            raise CommandError("unauthorized", Phrase("auth.user_disabled"))
        return Caller(claims.sub, claims.role, via, ip, claims.jti, claims.exp)

    def still_valid(self, caller: Caller) -> str | None:
        """None while ``caller``'s token still stands; else why not (revoked, user disabled). For
        connections that outlive a request (the WebSocket), which checked the token once."""
        if caller.token_id is not None and caller.token_id in self._revoked:
            return "token was revoked"
        if caller.subject.lower() in self._disabled:
            return "this user is disabled"
        return None

    async def follow_revocations(self) -> None:
        """Load the current revocations, then keep following the store's feed (a background task)."""
        while True:
            with contextlib.suppress(IpcError):
                await self.catch_up()
            await asyncio.sleep(FOLLOW_EVERY_S)

    async def catch_up(self) -> None:
        feed = await self.peers.store.call(ACCOUNTS_REVOCATIONS, RevocationsSince(after=self._last_event))
        for event in feed.events:
            if event.kind == "token":
                self._revoked[event.value] = event.expires_at or 0.0
            elif event.kind == "user-disabled":
                self._disabled.add(event.value.lower())
            else:
                self._disabled.discard(event.value.lower())
        self._last_event = feed.last
        now = time.time()
        self._revoked = {jti: exp for jti, exp in self._revoked.items() if exp > now}

    def start_following(self) -> None:
        self._follower = asyncio.create_task(self.follow_revocations(), name="follow-revocations")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower

    # --- logins -----------------------------------------------------------------------------

    def _spend_attempt(self, ip: str | None) -> None:
        """Per-address token bucket; refuse with the time until the next attempt is allowed."""
        per_minute = self.security.login_per_ip_per_minute
        now = time.monotonic()
        bucket = self._buckets.get(ip or "?")
        if bucket is None:
            if len(self._buckets) > 10_000:  # forget addresses whose buckets are full again
                self._buckets = {k: b for k, b in self._buckets.items() if now - b.at < 60}
            bucket = self._buckets[ip or "?"] = _Bucket(per_minute, now)
        bucket.tokens = min(per_minute, bucket.tokens + (now - bucket.at) * per_minute / 60)
        bucket.at = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) * 60 / per_minute
            raise CommandError("rate_limited", Phrase("auth.too_many_attempts", ip=str(ip), wait_s=f"{wait:.0f}"),
                               retry_after=round(wait, 1))
        bucket.tokens -= 1

    async def _user(self, username: str) -> UserSecret | None:
        if not re.fullmatch(USERNAME_PATTERN, username):
            return None  # no such user can exist; answered like any unknown name
        try:
            return await self.peers.store.call(ACCOUNTS_USER_GET, Username(username=username))
        except NotFound:
            return None

    async def check_password(self, username: str, password: str, ip: str | None) -> UserSecret:
        """The user, if the password is right and the account may log in now; else a refusal."""
        self._spend_attempt(ip)
        user = await self._user(username)
        if user is not None and user.locked_until is not None and user.locked_until > time.time():
            wait = user.locked_until - time.time()
            raise CommandError("rate_limited", Phrase("auth.too_many_failures", username=username,
                                                      wait_s=f"{wait:.0f}"), retry_after=round(wait, 1))
        try:
            ok = await verify_password_async(password, user.password_hash if user else _DUMMY_HASH)
        except BadHash:
            self.log.error("user %s has an unreadable password hash", username)
            ok = False
        if user is None or user.disabled:
            raise CommandError("unauthorized", WRONG_LOGIN)
        await self.peers.store.call(ACCOUNTS_LOGIN_RESULT, LoginResult(username=user.username, ok=ok))
        if not ok:
            raise CommandError("unauthorized", WRONG_LOGIN)
        return user

    async def issue_pair(self, username: str, role: Role, family: str | None = None) -> TokenPair:
        access = self.authority.issue("access", username, role, self.security.access_ttl_s)
        family = family or secrets.token_hex(16)
        refresh = self.authority.issue("refresh", username, role, self.security.refresh_ttl_s, family=family)
        await self.peers.store.call(ACCOUNTS_REFRESH_ISSUE, RefreshIssue(
            jti=refresh.jti, family=family, username=username, expires_at=refresh.expires_at))
        return TokenPair(access_token=access.token, expires_in=self.security.access_ttl_s,
                         refresh_token=refresh.token, refresh_expires_in=self.security.refresh_ttl_s,
                         username=username, role=role)

    async def refresh(self, token: str) -> TokenPair:
        try:
            claims = self.authority.verify(token, accept=("refresh",))
        except TokenError as exc:
            raise CommandError("unauthorized", Phrase("auth.token_invalid", why=str(exc))) from None
        verdict = await self.peers.store.call(ACCOUNTS_REFRESH_USE, RefreshUse(jti=claims.jti))
        if verdict.state == "reused":
            self.log.warning("refresh token of %s used twice: its whole family is revoked", claims.sub,
                             extra={"USER": claims.sub})
            raise CommandError("unauthorized", Phrase("auth.refresh_reused"))
        if verdict.state != "ok":
            raise CommandError("unauthorized", Phrase("auth.refresh_state", state=verdict.state))
        user = await self._user(verdict.username)
        if user is None or user.disabled:
            raise CommandError("unauthorized", Phrase("auth.user_disabled"))
        return await self.issue_pair(user.username, Role(user.role), family=verdict.family)

    async def logout(self, caller: Caller, refresh_token: str | None) -> int:
        """End the caller's access token now, and the refresh family it came with; how many ended."""
        ended = 0
        if caller.token_id is not None and caller.expires_at is not None:
            await self.peers.store.call(ACCOUNTS_REVOKE, Revoke(jti=caller.token_id, expires_at=caller.expires_at))
            self._revoked[caller.token_id] = caller.expires_at
            ended += 1
        if refresh_token:
            try:
                claims = self.authority.verify(refresh_token, accept=("refresh",))
            except TokenError as exc:
                raise CommandError("bad_request", Phrase("field.problem", field="refresh_token", problem=str(exc)),
                                   field="refresh_token") from None
            if claims.sub != caller.subject or claims.fam is None:
                raise CommandError("forbidden", Phrase("auth.refresh_not_yours"), field="refresh_token")
            ended += (await self.peers.store.call(ACCOUNTS_REFRESH_REVOKE, Family(family=claims.fam))).changed
        return ended

    def issue_app_token(self, name: str, role: Role, ttl_s: int) -> Issued:
        return self.authority.issue("app", f"token:{name}", role, ttl_s)

    # --- first boot -------------------------------------------------------------------------

    async def prepare_first_boot(self) -> str | None:
        """With no user yet, a one-time setup token (printed by the caller); None when users exist."""
        users = await self.peers.store.call(ACCOUNTS_USERS)
        self.setup_token = None if users.users else secrets.token_urlsafe(24)
        return self.setup_token

    async def setup(self, setup_token: str, username: str, password_hash: str) -> None:
        """Create the first admin with the one-time token; the token is spent either way it ends."""
        expected = self.setup_token
        if expected is None or not hmac.compare_digest(setup_token.encode(), expected.encode()):
            raise CommandError("unauthorized", Phrase("auth.setup_token_wrong"))
        await self.peers.store.call(ACCOUNTS_USER_CREATE, UserCreate(username=username, role="admin",
                                                                     password_hash=password_hash, only_if_none=True))
        self.setup_token = None
