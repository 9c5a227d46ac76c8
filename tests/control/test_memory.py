"""The memory command group (remember, search, documents, archive, backups): how each command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

from tests.helpers import declarations

# What each memory command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_MEMORY = {
    'memory.remember': ('write', 'operator', None, 'remember'),
    'memory.search': ('read', 'viewer', None, 'search_memory'),
    'memory.get': ('read', 'viewer', None, None),
    'memory.forget': ('write', 'admin', None, None),
    'memory.stats': ('read', 'viewer', None, None),
    'memory.ingest': ('write', 'operator', 'OwnRow', None),
    'memory.archive': ('write', 'operator', None, None),
    'memory.find_archived': ('read', 'viewer', None, None),
    'memory.unarchive': ('write', 'operator', None, None),
    'memory.backfill': ('write', 'operator', None, None),
    'memory.backup': ('write', 'admin', None, None),
    'memory.rotate_key': ('write', 'admin', None, None),
}


def test_the_memory_commands_are_declared_as_decided() -> None:
    assert declarations('memory') == DECLARED_MEMORY
