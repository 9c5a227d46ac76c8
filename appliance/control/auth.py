"""Authentication commands: first-boot setup, login (JSON or the OAuth2 password form), refresh,
logout, who am I, and changing one's own password.

Every attempt is audited (a failed login too, naming the user tried); passwords are SecretStr,
so they never reach a log, an audit row or an error message.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr

from appliance.control.accounts import TokenPair
from appliance.control.caller import Permission, Role
from appliance.control.command import Command, Context, Effect, HttpRoute, Reply, command
from appliance.control.errors import CommandError
from appliance.control.passwords import (
    MAX_PASSWORD_CHARS,
    hash_password_async,
    new_password_field,
    password_problem,
)
from appliance.phrases import Phrase
from appliance.protocol.accounts import (
    ACCOUNTS_USER_UPDATE,
    USERNAME_PATTERN,
    UserUpdate,
)
from appliance.protocol.common import Empty, Message


class SetupStatus(Message):
    needed: bool = Field(description="no user exists yet: create the first admin with the setup token")


class SetupRequest(Message):
    setup_token: SecretStr = Field(min_length=1, max_length=256,
                                   description="printed to the journal when the api starts with no user")
    username: str = Field(pattern=USERNAME_PATTERN)
    password: SecretStr = new_password_field()


class LoginRequest(Message):
    username: str = Field(min_length=1, max_length=64)
    password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class OAuthTokenRequest(Message):
    """RFC 6749 token request, as an OAuth2 client sends it (form-encoded): password or refresh_token."""

    grant_type: Literal["password", "refresh_token"] = "password"
    username: str | None = Field(None, min_length=1, max_length=64)
    password: SecretStr | None = Field(None, min_length=1, max_length=MAX_PASSWORD_CHARS)
    refresh_token: SecretStr | None = Field(None, min_length=1, max_length=8192)
    scope: str = Field("", max_length=256, description="accepted and ignored: roles, not scopes, decide")
    client_id: str | None = Field(None, max_length=256)
    client_secret: SecretStr | None = Field(None, max_length=256)


class RefreshRequest(Message):
    refresh_token: SecretStr = Field(min_length=1, max_length=8192)


class LogoutRequest(Message):
    refresh_token: SecretStr | None = Field(None, min_length=1, max_length=8192,
                                            description="also end the session this refresh token belongs to")


class Me(Message):
    subject: str
    role: Role
    via: str
    expires_at: float | None = None


class PasswordChange(Message):
    current_password: SecretStr = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    new_password: SecretStr = new_password_field()


def checked_password(secret: SecretStr, field: str = "password") -> str:
    password = secret.get_secret_value()
    if problem := password_problem(password):
        raise CommandError("bad_request", Phrase("field.problem", field=field, problem=str(problem)), field=field)
    return password


async def setup_status(ctx: Context, _: Empty) -> SetupStatus:
    return SetupStatus(needed=ctx.accounts.setup_token is not None)


async def setup(ctx: Context, request: SetupRequest) -> TokenPair:
    password = checked_password(request.password)
    digest = await hash_password_async(password, ctx.config.security.scrypt_cost)
    await ctx.accounts.setup(request.setup_token.get_secret_value(), request.username, digest)
    ctx.log.warning("first admin %s created with the setup token", request.username, extra={"USER": request.username})
    return await ctx.accounts.issue_pair(request.username, Role.ADMIN)


async def login(ctx: Context, request: LoginRequest) -> TokenPair:
    user = await ctx.accounts.check_password(request.username, request.password.get_secret_value(), ctx.caller.ip)
    return await ctx.accounts.issue_pair(user.username, Role(user.role))


async def oauth_token(ctx: Context, request: OAuthTokenRequest) -> TokenPair:
    if request.grant_type == "refresh_token":
        if request.refresh_token is None:
            raise CommandError("bad_request", Phrase("auth.refresh_token_needed"), field="refresh_token")
        return await ctx.accounts.refresh(request.refresh_token.get_secret_value())
    if request.username is None or request.password is None:
        raise CommandError("bad_request", Phrase("auth.username_password_needed"),
                           field="username" if request.username is None else "password")
    return await login(ctx, LoginRequest(username=request.username, password=request.password))


async def refresh(ctx: Context, request: RefreshRequest) -> TokenPair:
    return await ctx.accounts.refresh(request.refresh_token.get_secret_value())


async def logout(ctx: Context, request: LogoutRequest) -> Reply:
    token = request.refresh_token.get_secret_value() if request.refresh_token else None
    ended = await ctx.accounts.logout(ctx.caller, token)
    return Reply(detail=f"{ended} token(s) ended")


async def me(ctx: Context, _: Empty) -> Me:
    caller = ctx.caller
    assert caller.role is not None  # the dispatcher let only a caller with a role through
    return Me(subject=caller.subject, role=caller.role, via=caller.via, expires_at=caller.expires_at)


async def change_password(ctx: Context, request: PasswordChange) -> Reply:
    if ctx.caller.token_id is None or ctx.caller.subject.startswith(("token:", "local:")):
        raise CommandError("forbidden", Phrase("auth.password_only_users"))
    new = checked_password(request.new_password, "new_password")
    await ctx.accounts.check_password(ctx.caller.subject, request.current_password.get_secret_value(),
                                      ctx.caller.ip)
    digest = await hash_password_async(new, ctx.config.security.scrypt_cost)
    await ctx.peers.store.call(ACCOUNTS_USER_UPDATE, UserUpdate(username=ctx.caller.subject, password_hash=digest))
    return Reply(detail="password changed; other sessions of this user have ended")


def _tried(request: Any, reply: TokenPair | None) -> dict[str, Any]:
    username = reply.username if reply else getattr(request, "username", None)
    return {"user_id": username} if username else {}


def _auth(path: str) -> tuple[HttpRoute, ...]:
    return (HttpRoute("POST", f"/api/v1/auth/{path}", max_body_bytes=16 * 1024, form=True),)


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("auth.setup_status", "Whether the box still waits for its first admin.", Empty, SetupStatus,
            Permission.PUBLIC, setup_status, effect=Effect.READ, http=(HttpRoute("GET", "/api/v1/auth/setup"),),
            tags=("auth",)),
    command("auth.setup", "Create the first admin with the one-time setup token; logs in.", SetupRequest, TokenPair,
            Permission.PUBLIC, setup, effect=Effect.WRITE, http=_auth("setup"), audit=_tried, tags=("auth",)),
    command("auth.login", "Log in: a 15-minute access token and a refresh token.", LoginRequest, TokenPair,
            Permission.PUBLIC, login, effect=Effect.WRITE, http=_auth("login"), audit=_tried, tags=("auth",)),
    command("auth.token", "OAuth2 token endpoint (password and refresh_token grants, form-encoded).",
            OAuthTokenRequest, TokenPair, Permission.PUBLIC, oauth_token, effect=Effect.WRITE, http=_auth("token"),
            audit=_tried, tags=("auth",)),
    command("auth.refresh", "Trade a refresh token (once) for new tokens; a reused one ends its whole family.",
            RefreshRequest, TokenPair, Permission.PUBLIC, refresh, effect=Effect.WRITE, http=_auth("refresh"),
            audit=_tried, tags=("auth",)),
    command("auth.logout", "End this access token now, and the session of the refresh token given.", LogoutRequest,
            Reply, Permission.VIEWER, logout, effect=Effect.WRITE, http=_auth("logout"), tags=("auth",)),
    command("auth.me", "Who the token belongs to, its role and when it expires.", Empty, Me, Permission.VIEWER, me,
            effect=Effect.READ,
            http=(HttpRoute("GET", "/api/v1/auth/me"),), tags=("auth",)),
    command("auth.password", "Change one's own password (ends one's other sessions).", PasswordChange, Reply,
            Permission.VIEWER, change_password, effect=Effect.WRITE, http=_auth("password"), tags=("auth",)),
)
