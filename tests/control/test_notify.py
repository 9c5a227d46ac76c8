"""The notify command group (notify.send): how each command is declared.

Its behaviour is tested through the surfaces (tests/api, tests/cli, tests/mqtt) and, for the owner and
provenance rules, tests/control/test_dispatcher.py and tests/api/test_matrix.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.control.notify import NotifyResult
from appliance.control.table import default_table
from appliance.ipc.peers import Peers
from appliance.protocol.store import STORE_AUDIT_LIST, AuditQuery
from tests.helpers import declarations, update_config

StartServices = Callable[..., Awaitable[Peers]]

# What each notify command is, pinned: a change of effect, permission, owner rule or tool face is a
# decision, made here on purpose (the effect decides the audit; the owner rule whose rows a caller
# may touch; the tool what the agent is offered).
DECLARED_NOTIFY = {
    'notify.send': ('external', 'operator', None, 'notify'),
}


def test_the_notify_commands_are_declared_as_decided() -> None:
    assert declarations('notify') == DECLARED_NOTIFY


async def test_notify_sends_over_what_is_configured_and_says_what_reached(config_file: Path,
                                                                         services: StartServices) -> None:
    """With the api and the broker away only the outbox takes it; a transport the box does not have is
    refused before anything is sent (409); every call is audited with what it reached."""
    config = update_config(config_file, mqtt={"uplink": {"webhook": {"url": "https://hooks.example/alerts"}}})
    peers = await services("store")
    dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("test"))
    otto = Caller("otto", Role.OPERATOR, "rest")
    sent = await dispatcher.call("notify.send", {"text": "the dock door is stuck", "kind": "alert"}, otto)
    assert isinstance(sent, NotifyResult) and sent.reached
    assert set(sent.sent) == {"webhook"} and set(sent.failed) == {"site", "websocket"}
    with pytest.raises(CommandError) as missing:
        await dispatcher.call("notify.send", {"text": "x", "to": ["uplink"]}, otto)
    assert (missing.value.code, missing.value.field) == ("conflict", "to")
    with pytest.raises(CommandError) as viewer:
        await dispatcher.call("notify.send", {"text": "x"}, Caller("vera", Role.VIEWER, "rest"))
    assert viewer.value.code == "forbidden"
    rows = (await peers.store.call(STORE_AUDIT_LIST, AuditQuery(limit=5))).items
    assert [(r.action, r.details["ok"]) for r in rows[:2]] == [("notify.send", False), ("notify.send", True)]
    assert rows[1].details["sent"] == ["webhook"]
