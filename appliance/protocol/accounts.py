"""The store's account messages: users, refresh token families, app tokens, the revocation feed.

Passwords never cross here, only their scrypt hashes (made and checked in the process that
serves the login, off its event loop); the store keeps the lockout state so it survives
restarts and is the same for every process.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from appliance.protocol.common import Changed, Empty, Message, endpoint

RoleName = Literal["admin", "operator", "viewer"]
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._:@-]{0,63}$"  # noqa: S105 - a pattern, not a secret
JTI_PATTERN = r"^[0-9a-f]{32}$"


class Username(Message):
    username: str = Field(pattern=USERNAME_PATTERN)


class UserInfo(Message):
    username: str
    role: RoleName
    disabled: bool
    locked_until: float | None = Field(None, description="unix time the lockout ends, while it lasts")
    failed_logins: int = 0
    last_login_at: float | None = None
    created_at: float


class UserSecret(UserInfo):
    password_hash: str


class UserCreate(Message):
    username: str = Field(pattern=USERNAME_PATTERN)
    role: RoleName
    password_hash: str = Field(min_length=16, max_length=512)
    only_if_none: bool = Field(False, description="refuse unless no user exists yet (first-boot setup)")


class UserUpdate(Message):
    username: str = Field(pattern=USERNAME_PATTERN)
    role: RoleName | None = None
    disabled: bool | None = None
    password_hash: str | None = Field(None, min_length=16, max_length=512)
    unlock: bool = Field(False, description="clear the failed-login count and any lockout")


class Users(Message):
    users: list[UserInfo]


class LoginResult(Message):
    username: str = Field(pattern=USERNAME_PATTERN)
    ok: bool


class RefreshIssue(Message):
    jti: str = Field(pattern=JTI_PATTERN)
    family: str = Field(pattern=JTI_PATTERN)
    username: str = Field(pattern=USERNAME_PATTERN)
    expires_at: float


class RefreshUse(Message):
    jti: str = Field(pattern=JTI_PATTERN)


class RefreshVerdict(Message):
    state: Literal["ok", "reused", "revoked", "expired", "unknown"]
    username: str = ""
    family: str = ""


class Family(Message):
    family: str = Field(pattern=JTI_PATTERN)


class AppTokenIn(Message):
    jti: str = Field(pattern=JTI_PATTERN)
    name: str = Field(pattern=TOKEN_NAME_PATTERN)
    role: RoleName
    kid: str = Field(min_length=1, max_length=64)
    created_by: str = Field(min_length=1, max_length=128)
    expires_at: float


class AppToken(AppTokenIn):
    created_at: float
    revoked_at: float | None = None


class AppTokens(Message):
    tokens: list[AppToken]


class TokenId(Message):
    jti: str = Field(pattern=JTI_PATTERN)


class Revoke(Message):
    jti: str = Field(pattern=JTI_PATTERN)
    expires_at: float = Field(description="when the token would have expired anyway")


class Kid(Message):
    kid: str = Field(min_length=1, max_length=64)


class LatestExpiry(Message):
    expires_at: float | None = Field(None, description="the latest expiry of an unrevoked token signed by the key")


class RevocationEvent(Message):
    id: int
    kind: Literal["token", "user-disabled", "user-enabled"]
    value: str
    expires_at: float | None = None


class RevocationsSince(Message):
    after: int = Field(0, ge=0, description="the last event id already applied; 0 for the whole current state")


class Revocations(Message):
    events: list[RevocationEvent]
    last: int


ACCOUNTS_USER_GET = endpoint("store", "users/get", Username, UserSecret)
ACCOUNTS_USERS = endpoint("store", "users/list", Empty, Users)
ACCOUNTS_USER_CREATE = endpoint("store", "users/create", UserCreate, UserInfo)
ACCOUNTS_USER_UPDATE = endpoint("store", "users/update", UserUpdate, UserInfo)
ACCOUNTS_LOGIN_RESULT = endpoint("store", "users/login-result", LoginResult, UserInfo)
ACCOUNTS_REFRESH_ISSUE = endpoint("store", "refresh/issue", RefreshIssue, Changed)
ACCOUNTS_REFRESH_USE = endpoint("store", "refresh/use", RefreshUse, RefreshVerdict)
ACCOUNTS_REFRESH_REVOKE = endpoint("store", "refresh/revoke-family", Family, Changed)
ACCOUNTS_TOKEN_CREATE = endpoint("store", "tokens/create", AppTokenIn, AppToken)
ACCOUNTS_TOKENS = endpoint("store", "tokens/list", Empty, AppTokens)
ACCOUNTS_TOKEN_REVOKE = endpoint("store", "tokens/revoke", TokenId, AppToken)
ACCOUNTS_KEY_EXPIRY = endpoint("store", "tokens/latest-expiry", Kid, LatestExpiry)
ACCOUNTS_REVOKE = endpoint("store", "revocations/add", Revoke, Changed)
ACCOUNTS_REVOCATIONS = endpoint("store", "revocations/since", RevocationsSince, Revocations)
