"""The admin command group (status, configuration, audit, models): how each command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

from tests.helpers import declarations

# What each admin command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_ADMIN = {
    'system.status': ('read', 'viewer', None, None),
    'system.config': ('read', 'admin', None, None),
    'audit.list': ('read', 'admin', None, None),
    'audit.verify': ('read', 'admin', None, None),
    'models.list': ('read', 'viewer', None, None),
    'models.set_default': ('write', 'admin', None, None),
    'models.plan': ('read', 'viewer', None, None),
}


def test_the_admin_commands_are_declared_as_decided() -> None:
    assert declarations('admin') == DECLARED_ADMIN
