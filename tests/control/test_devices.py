"""The devices command group (the registry, device commands, the quarantine, the outbox): how each
command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

from tests.helpers import declarations

# What each devices command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_DEVICES = {
    'devices.list': ('read', 'viewer', None, 'list_devices'),
    'devices.get': ('read', 'viewer', None, 'get_device'),
    'devices.command': ('actuate', 'operator', None, 'send_device_command'),
    'devices.quarantine': ('read', 'viewer', None, None),
    'outbox.status': ('read', 'viewer', None, None),
    'devices.publish': ('actuate', 'operator', None, None),
    'outbox.enqueue': ('external', 'operator', None, None),
}


def test_the_devices_commands_are_declared_as_decided() -> None:
    assert declarations('devices') == DECLARED_DEVICES
