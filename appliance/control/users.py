"""Admin commands over accounts: users, device and app tokens, and the signing key's rotation."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, SecretStr

from appliance.control.auth import checked_password
from appliance.control.caller import Permission, Role
from appliance.control.command import CONSOLE_ONLY, Command, Context, Effect, HttpRoute, command
from appliance.control.errors import CommandError
from appliance.control.keys import SigningKeyError
from appliance.control.passwords import hash_password_async, new_password_field
from appliance.protocol.accounts import (
    ACCOUNTS_KEY_EXPIRY,
    ACCOUNTS_TOKEN_CREATE,
    ACCOUNTS_TOKEN_REVOKE,
    ACCOUNTS_TOKENS,
    ACCOUNTS_USER_CREATE,
    ACCOUNTS_USER_UPDATE,
    ACCOUNTS_USERS,
    TOKEN_NAME_PATTERN,
    USERNAME_PATTERN,
    AppToken,
    AppTokenIn,
    AppTokens,
    Kid,
    TokenId,
    UserCreate,
    UserInfo,
    Users,
    UserUpdate,
)
from appliance.protocol.common import Empty, Message


class NewUser(Message):
    username: str = Field(pattern=USERNAME_PATTERN)
    role: Role
    password: SecretStr = new_password_field()


class UserChange(Message):
    username: str = Field(pattern=USERNAME_PATTERN)
    role: Role | None = None
    disabled: bool | None = None
    password: SecretStr | None = new_password_field("a new password (default: unchanged)", default=None)
    unlock: bool = Field(False, description="clear failed logins and any lockout")


class NewToken(Message):
    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="what the device or app is")
    role: Role
    ttl_s: int | None = Field(None, ge=60, le=365 * 86_400, description="default security.token_ttl_s")


class IssuedToken(Message):
    token: str = Field(description="shown once: store it now")
    jti: str
    name: str
    role: Role
    expires_at: float


class Rotated(Message):
    kid: str
    old_kid: str
    old_accepted_until: float = Field(description="tokens signed by the old key are refused after this")


async def list_users(ctx: Context, _: Empty) -> Users:
    return await ctx.peers.store.call(ACCOUNTS_USERS)


async def create_user(ctx: Context, request: NewUser) -> UserInfo:
    digest = await hash_password_async(checked_password(request.password), ctx.config.security.scrypt_cost)
    return await ctx.peers.store.call(ACCOUNTS_USER_CREATE, UserCreate(
        username=request.username, role=request.role.value, password_hash=digest))


async def update_user(ctx: Context, request: UserChange) -> UserInfo:
    digest = None
    if request.password is not None:
        digest = await hash_password_async(checked_password(request.password), ctx.config.security.scrypt_cost)
    change = UserUpdate(username=request.username, role=request.role.value if request.role else None,
                        disabled=request.disabled, password_hash=digest, unlock=request.unlock)
    return await ctx.peers.store.call(ACCOUNTS_USER_UPDATE, change)


async def list_tokens(ctx: Context, _: Empty) -> AppTokens:
    return await ctx.peers.store.call(ACCOUNTS_TOKENS)


async def create_token(ctx: Context, request: NewToken) -> IssuedToken:
    ttl = request.ttl_s or ctx.config.security.token_ttl_s
    issued = ctx.accounts.issue_app_token(request.name, request.role, ttl)
    await ctx.peers.store.call(ACCOUNTS_TOKEN_CREATE, AppTokenIn(
        jti=issued.jti, name=request.name, role=request.role.value, kid=issued.kid,
        created_by=ctx.caller.subject[:128], expires_at=issued.expires_at))
    return IssuedToken(token=issued.token, jti=issued.jti, name=request.name, role=request.role,
                       expires_at=issued.expires_at)


async def revoke_token(ctx: Context, request: TokenId) -> AppToken:
    return await ctx.peers.store.call(ACCOUNTS_TOKEN_REVOKE, request)


async def rotate_key(ctx: Context, _: Empty) -> Rotated:
    """A new signing key; the old one verifies until every token it signed has expired."""
    keys = ctx.accounts.authority.keys
    old = keys.current
    latest = (await ctx.peers.store.call(ACCOUNTS_KEY_EXPIRY, Kid(kid=old))).expires_at or 0.0
    security = ctx.config.security
    until = max(latest, time.time() + max(security.access_ttl_s, security.refresh_ttl_s))
    try:
        kid = keys.rotate(until)
    except SigningKeyError as exc:
        raise CommandError("conflict", str(exc)) from None
    return Rotated(kid=kid, old_kid=old, old_accepted_until=until)


def _user_row(request: Any, _reply: Any) -> dict[str, Any]:
    fields = request.model_dump(exclude={"password"}, exclude_none=True, mode="json")
    return {**fields, "password_changed": getattr(request, "password", None) is not None}


def _token_row(request: NewToken, reply: IssuedToken | None) -> dict[str, Any]:
    return {"name": request.name, "role": request.role.value, **({"jti": reply.jti} if reply else {})}


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("users.list", "Every user, with role, state and lockout.", Empty, Users, Permission.ADMIN, list_users,
            effect=Effect.READ,
            http=(HttpRoute("GET", "/api/v1/users"),), tags=("users",)),
    command("users.create", "A new user with a role and an initial password.", NewUser, UserInfo, Permission.ADMIN,
            create_user, effect=Effect.WRITE, http=(HttpRoute("POST", "/api/v1/users", 201),), audit=_user_row,
            tags=("users",)),
    command("users.update", "Change a user's role or password, disable or enable them, or clear a lockout.",
            UserChange, UserInfo, Permission.ADMIN, update_user, effect=Effect.WRITE,
            http=(HttpRoute("PATCH", "/api/v1/users/{username}"),), audit=_user_row, tags=("users",)),
    command("tokens.list", "Device and app tokens (never the tokens themselves).", Empty, AppTokens,
            Permission.ADMIN, list_tokens, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/tokens"),),
            tags=("users",)),
    command("tokens.create", "A named device or app token with a role; shown once.", NewToken, IssuedToken,
            Permission.ADMIN, create_token, effect=Effect.WRITE, http=(HttpRoute("POST", "/api/v1/tokens", 201),),
            audit=_token_row, tags=("users",)),
    command("tokens.revoke", "Revoke a device or app token; it stops working within a second.", TokenId, AppToken,
            Permission.ADMIN, revoke_token, effect=Effect.WRITE, http=(HttpRoute("DELETE", "/api/v1/tokens/{jti}"),),
            audit=lambda request, _reply: {"jti": request.jti}, tags=("users",)),
    command("keys.rotate", "Sign with a new key from now on; the old one verifies until its tokens expire.",
            Empty, Rotated, Permission.ADMIN, rotate_key, effect=Effect.WRITE, surfaces=CONSOLE_ONLY,
            audit=lambda _request, reply: {"kid": reply.kid, "old_kid": reply.old_kid} if reply else {},
            tags=("users",)),
)


