"""The system command group (health, the full report, metrics): how each command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

from tests.helpers import declarations

# What each system command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_SYSTEM = {
    'system.health': ('read', 'public', None, 'box_health'),
    'system.health_report': ('read', 'public', None, None),
    'system.metrics': ('read', 'viewer', None, None),
}


def test_the_system_commands_are_declared_as_decided() -> None:
    assert declarations('system') == DECLARED_SYSTEM
