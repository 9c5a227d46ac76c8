"""The users command group (users, app tokens, signing keys): how each command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt; accounts in
tests/control/test_accounts.py) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

from tests.helpers import declarations

# What each users command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_USERS = {
    'users.list': ('read', 'admin', None, None),
    'users.create': ('write', 'admin', None, None),
    'users.update': ('write', 'admin', None, None),
    'tokens.list': ('read', 'admin', None, None),
    'tokens.create': ('write', 'admin', None, None),
    'tokens.revoke': ('write', 'admin', None, None),
    'keys.rotate': ('write', 'admin', None, None),
}


def test_the_users_commands_are_declared_as_decided() -> None:
    assert declarations('users') == DECLARED_USERS
