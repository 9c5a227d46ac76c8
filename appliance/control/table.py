"""The appliance's command table: every group's commands, assembled once."""

from __future__ import annotations

from appliance.control import admin, auth, chat, devices, llm, memory, messages, schedules, system, tasks, users
from appliance.control.command import CommandTable


def default_table() -> CommandTable:
    return CommandTable(system.COMMANDS, admin.COMMANDS, auth.COMMANDS, users.COMMANDS, memory.COMMANDS,
                        chat.COMMANDS, llm.COMMANDS, devices.COMMANDS, tasks.COMMANDS,
                        schedules.COMMANDS, messages.COMMANDS)
