"""The appliance's command table: every group's commands, assembled once."""

from __future__ import annotations

from appliance.control import chat, memory, system
from appliance.control.command import CommandTable


def default_table() -> CommandTable:
    return CommandTable(system.COMMANDS, memory.COMMANDS, chat.COMMANDS)
