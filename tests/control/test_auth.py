"""The auth command group (sign-in, sessions, one's own password): how each command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt; accounts in
tests/control/test_accounts.py) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

from tests.helpers import declarations

# What each auth command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_AUTH = {
    'auth.setup_status': ('read', 'public', None, None),
    'auth.setup': ('write', 'public', None, None),
    'auth.login': ('write', 'public', None, None),
    'auth.token': ('write', 'public', None, None),
    'auth.refresh': ('write', 'public', None, None),
    'auth.logout': ('write', 'viewer', None, None),
    'auth.me': ('read', 'viewer', None, None),
    'auth.password': ('write', 'viewer', None, None),
}


def test_the_auth_commands_are_declared_as_decided() -> None:
    assert declarations('auth') == DECLARED_AUTH
