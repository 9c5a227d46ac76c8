"""Who is asking, and what their role lets them do.

Roles are ordered: admin can do all an operator can, an operator all a viewer can. A command
needs one `Permission`: public (anyone, even without a token), or the least role that may
call it. The dispatcher is the only place that compares the two.

A caller that acts for a task carries its provenance: the task's id, and whether the task has
read untrusted data (device payloads, entity names, files, memories not written by staff). The
dispatcher audits every call made for a task, reads too, and refuses a tainted task's calls that
actuate or leave the box unless a person approved that exact call (control/dispatcher.py).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class Permission(StrEnum):
    PUBLIC = "public"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
NEEDED = {Permission.PUBLIC: 0, Permission.VIEWER: 1, Permission.OPERATOR: 2, Permission.ADMIN: 3}

Surface = Literal["rest", "websocket", "mqtt", "agent", "cli"]


def role_allows(role: Role | None, permission: Permission) -> bool:
    return NEEDED[permission] <= (RANK[role] if role is not None else 0)


@dataclass(frozen=True)
class Caller:
    """An authenticated (or anonymous: role None) caller, and the surface it came through."""

    subject: str
    role: Role | None
    via: Surface
    ip: str | None = None
    token_id: str | None = None  # the jti of the token it came with
    expires_at: float | None = None  # when that token expires
    task: int | None = None  # the task this call is made for (the agent's tools, a task's own steps)
    untrusted: bool = False  # that task has read untrusted data: its actuate/external calls need approval
    approved: frozenset[str] = frozenset()  # fingerprints of the exact calls a person approved for it

    def for_task(self, task: int, *, untrusted: bool = False, approved: frozenset[str] = frozenset()) -> Caller:
        """The same person, acting through one of their tasks."""
        return replace(self, via="agent", task=task, untrusted=untrusted, approved=approved)

    @classmethod
    def anonymous(cls, via: Surface, ip: str | None = None) -> Caller:
        return cls("anonymous", None, via, ip)

    @classmethod
    def local(cls) -> Caller:
        """A person at the box's console: whoever can reach the services' sockets is an admin."""
        return cls(f"local:{getpass.getuser()}", Role.ADMIN, "cli")
