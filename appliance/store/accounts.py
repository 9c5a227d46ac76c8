"""Accounts in the memory file: users, refresh token families, app tokens, the revocation feed.

Invariants:
- A username is unique regardless of case; a user is never deleted, only disabled.
- Each refresh token can be used once. Using one twice (a stolen copy replayed, or the real
  client racing the thief) revokes its whole family: every token descended from one login.
- Every revocation (a token, a user disabled or enabled again) is an event with an increasing
  id; processes that check tokens follow the events, so a revocation made by any process takes
  effect in all of them. Token events are dropped a day after the token would have expired.
- At least one enabled admin remains: the last one cannot be disabled or demoted.
- Lockout: after security.login_failures_before_lockout consecutive failures a user is locked
  for lockout_s, doubling with each further failure up to lockout_max_s; a success or an
  admin's unlock clears it.
"""

from __future__ import annotations

import time

import apsw

from appliance.config import SecurityConfig
from appliance.phrases import Phrase
from appliance.protocol.accounts import (
    AppToken,
    AppTokenIn,
    RefreshIssue,
    RefreshVerdict,
    RevocationEvent,
    Revocations,
    UserCreate,
    UserInfo,
    UserSecret,
    UserUpdate,
)
from appliance.store.errors import Conflict, Missing
from appliance.store.sql import fetch_all, fetch_one, integer

USER_COLUMNS = "username, role, disabled, locked_until, failed_logins, last_login_at, created_at, password_hash"
TOKEN_COLUMNS = "jti, name, role, kid, created_by, expires_at, created_at, revoked_at"  # noqa: S105
EXPIRED_EVENTS_KEPT_S = 86_400
FEED_PAGE = 1000


def _user(row: tuple[object, ...]) -> UserSecret:
    username, role, disabled, locked, failed, last, created, digest = row
    return UserSecret.model_validate({"username": username, "role": role, "disabled": bool(disabled),
                                      "locked_until": locked, "failed_logins": failed, "last_login_at": last,
                                      "created_at": created, "password_hash": digest})


def _token(row: tuple[object, ...]) -> AppToken:
    keys = TOKEN_COLUMNS.split(", ")
    return AppToken.model_validate(dict(zip(keys, row, strict=True)))


class AccountBook:
    def __init__(self, conn: apsw.Connection, policy: SecurityConfig) -> None:
        self.conn = conn
        self.policy = policy

    # --- users ------------------------------------------------------------------------------

    def user(self, username: str) -> UserSecret:
        row = fetch_one(self.conn, f"SELECT {USER_COLUMNS} FROM users WHERE username = ?", (username,))  # noqa: S608
        if row is None:
            raise Missing(Phrase("user.not_found", username=username))
        return _user(row)

    def users(self) -> list[UserInfo]:
        rows = fetch_all(self.conn, f"SELECT {USER_COLUMNS} FROM users ORDER BY username")  # noqa: S608
        return [UserInfo.model_validate(_user(r).model_dump(exclude={"password_hash"})) for r in rows]

    def create_user(self, new: UserCreate) -> UserInfo:
        now = time.time()
        with self.conn:
            if new.only_if_none and integer(self.conn, "SELECT count(*) FROM users"):
                raise Conflict(Phrase("user.first_exists"))
            if fetch_one(self.conn, "SELECT 1 FROM users WHERE username = ?", (new.username,)):
                raise Conflict(Phrase("user.exists", username=new.username))
            self.conn.execute("INSERT INTO users(username, role, password_hash, created_at, updated_at) "
                              "VALUES (?, ?, ?, ?, ?)", (new.username, new.role, new.password_hash, now, now))
        return self._info(new.username)

    def update_user(self, change: UserUpdate) -> UserInfo:
        now = time.time()
        with self.conn:
            current = self.user(change.username)
            demoted = change.role is not None and change.role != "admin"
            if current.role == "admin" and not current.disabled and (demoted or change.disabled) and integer(
                    self.conn, "SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0") == 1:
                raise Conflict(Phrase("user.last_admin", username=current.username))
            if change.role is not None:
                self.conn.execute("UPDATE users SET role = ? WHERE username = ?", (change.role, change.username))
            if change.password_hash is not None:
                self.conn.execute("UPDATE users SET password_hash = ? WHERE username = ?",
                                  (change.password_hash, change.username))
            if change.unlock:
                self.conn.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE username = ?",
                                  (change.username,))
            if change.disabled is not None and change.disabled != current.disabled:
                self.conn.execute("UPDATE users SET disabled = ? WHERE username = ?",
                                  (int(change.disabled), change.username))
                kind = "user-disabled" if change.disabled else "user-enabled"
                self.conn.execute("INSERT INTO revocations(kind, value, at) VALUES (?, ?, ?)",
                                  (kind, current.username, now))
            if change.disabled or change.password_hash is not None or change.role is not None:
                # Sessions made under the old password, role or state end: their refresh tokens die.
                self.conn.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE username = ? AND revoked_at "
                                  "IS NULL", (now, current.username))
            self.conn.execute("UPDATE users SET updated_at = ? WHERE username = ?", (now, change.username))
        return self._info(change.username)

    def record_login(self, username: str, ok: bool) -> UserInfo:
        now, policy = time.time(), self.policy
        with self.conn:
            user = self.user(username)
            if ok:
                self.conn.execute("UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = ? "
                                  "WHERE username = ?", (now, username))
            else:
                failed = user.failed_logins + 1
                locked = None
                if failed >= policy.login_failures_before_lockout:
                    doublings = min(failed - policy.login_failures_before_lockout, 30)
                    locked = now + min(policy.lockout_max_s, policy.lockout_s * 2**doublings)
                self.conn.execute("UPDATE users SET failed_logins = ?, locked_until = ? WHERE username = ?",
                                  (failed, locked, username))
        return self._info(username)

    def _info(self, username: str) -> UserInfo:
        return UserInfo.model_validate(self.user(username).model_dump(exclude={"password_hash"}))

    # --- refresh tokens ---------------------------------------------------------------------

    def issue_refresh(self, issue: RefreshIssue) -> int:
        with self.conn:
            self.conn.execute("INSERT INTO refresh_tokens(jti, family, username, issued_at, expires_at) "
                              "VALUES (?, ?, ?, ?, ?)",
                              (issue.jti, issue.family, issue.username, time.time(), issue.expires_at))
        return 1

    def use_refresh(self, jti: str) -> RefreshVerdict:
        now = time.time()
        with self.conn:
            row = fetch_one(self.conn, "SELECT family, username, expires_at, used_at, revoked_at FROM refresh_tokens "
                                       "WHERE jti = ?", (jti,))
            verdict = RefreshVerdict(state="unknown")
            if row is not None:
                family, username, expires, used, revoked = row
                if revoked is not None:
                    verdict = RefreshVerdict(state="revoked", username=username, family=family)
                elif expires < now:
                    verdict = RefreshVerdict(state="expired", username=username, family=family)
                elif used is not None:
                    self.conn.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND "
                                      "revoked_at IS NULL", (now, family))
                    verdict = RefreshVerdict(state="reused", username=username, family=family)
                else:
                    self.conn.execute("UPDATE refresh_tokens SET used_at = ? WHERE jti = ?", (now, jti))
                    verdict = RefreshVerdict(state="ok", username=username, family=family)
        return verdict

    def revoke_family(self, family: str) -> int:
        with self.conn:
            self.conn.execute("UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL",
                              (time.time(), family))
            changed = int(self.conn.changes())
        return changed  # noqa: RET504 - after the block: mypy cannot see that apsw's __exit__ never swallows

    # --- app tokens -------------------------------------------------------------------------

    def create_token(self, token: AppTokenIn) -> AppToken:
        with self.conn:
            self.conn.execute("INSERT INTO app_tokens(jti, name, role, kid, created_by, expires_at, created_at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (token.jti, token.name, token.role, token.kid, token.created_by, token.expires_at,
                               time.time()))
        return self._app_token(token.jti)

    def tokens(self) -> list[AppToken]:
        rows = fetch_all(self.conn, f"SELECT {TOKEN_COLUMNS} FROM app_tokens ORDER BY created_at")  # noqa: S608
        return [_token(r) for r in rows]

    def revoke_token(self, jti: str) -> AppToken:
        now = time.time()
        with self.conn:
            token = self._app_token(jti)
            if token.revoked_at is None:
                self.conn.execute("UPDATE app_tokens SET revoked_at = ? WHERE jti = ?", (now, jti))
                self.add_revocation(jti, token.expires_at)
        return self._app_token(jti)

    def _app_token(self, jti: str) -> AppToken:
        row = fetch_one(self.conn, f"SELECT {TOKEN_COLUMNS} FROM app_tokens WHERE jti = ?", (jti,))  # noqa: S608
        if row is None:
            raise Missing(Phrase("token.not_found", jti=jti))
        return _token(row)

    def latest_expiry(self, kid: str) -> float | None:
        row = fetch_one(self.conn, "SELECT max(expires_at) FROM app_tokens WHERE kid = ? AND revoked_at IS NULL",
                        (kid,))
        return float(row[0]) if row and row[0] is not None else None

    # --- the revocation feed ----------------------------------------------------------------

    def add_revocation(self, jti: str, expires_at: float) -> int:
        """Record that ``jti`` must no longer be accepted (inside or outside a transaction)."""
        now = time.time()
        with self.conn:
            self.conn.execute("INSERT INTO revocations(kind, value, expires_at, at) VALUES ('token', ?, ?, ?)",
                              (jti, expires_at, now))
            self.conn.execute("DELETE FROM revocations WHERE kind = 'token' AND expires_at < ?",
                              (now - EXPIRED_EVENTS_KEPT_S,))
        return 1

    def revocations(self, after: int) -> Revocations:
        last = integer(self.conn, "SELECT max(id) FROM revocations")
        if after == 0:  # the whole current state: revoked tokens still unexpired, users disabled now
            tokens = fetch_all(self.conn, "SELECT id, value, expires_at FROM revocations WHERE kind = 'token' AND "
                                          "expires_at > ? ORDER BY id", (time.time(),))
            users = fetch_all(self.conn, "SELECT username FROM users WHERE disabled = 1")
            events = [RevocationEvent(id=i, kind="token", value=v, expires_at=e) for i, v, e in tokens]
            events += [RevocationEvent(id=last, kind="user-disabled", value=u) for (u,) in users]
            return Revocations(events=events, last=last)
        rows = fetch_all(self.conn, "SELECT id, kind, value, expires_at FROM revocations WHERE id > ? ORDER BY id "
                                    "LIMIT ?", (after, FEED_PAGE))
        events = [RevocationEvent(id=i, kind=k, value=v, expires_at=e) for i, k, v, e in rows]
        return Revocations(events=events, last=events[-1].id if events else max(after, last))
