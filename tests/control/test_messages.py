"""The messages command group (broadcast): how each command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

from tests.helpers import declarations

# What each messages command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_MESSAGES = {
    'messages.broadcast': ('external', 'operator', None, None),
}


def test_the_messages_commands_are_declared_as_decided() -> None:
    assert declarations('messages') == DECLARED_MESSAGES
