"""The site command group (entities): how each command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

from tests.helpers import declarations

# What each site command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_SITE = {
    'entities.list': ('read', 'viewer', None, 'list_entities'),
    'entities.get': ('read', 'viewer', None, 'get_entity'),
    'entities.set': ('actuate', 'operator', None, 'set_entity'),
}


def test_the_site_commands_are_declared_as_decided() -> None:
    assert declarations('site') == DECLARED_SITE
