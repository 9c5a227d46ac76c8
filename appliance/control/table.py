"""The appliance's command table: every group's commands, assembled once."""

from __future__ import annotations

from appliance.control import (
    admin,
    auth,
    capabilities,
    chat,
    devices,
    llm,
    memory,
    messages,
    notify,
    schedules,
    site,
    system,
    tasks,
    update,
    users,
)
from appliance.control.command import CommandTable


def default_table() -> CommandTable:
    return CommandTable(system.COMMANDS, capabilities.COMMANDS, admin.COMMANDS, auth.COMMANDS, users.COMMANDS,
                        memory.COMMANDS, chat.COMMANDS, llm.COMMANDS, devices.COMMANDS, tasks.COMMANDS,
                        schedules.COMMANDS, messages.COMMANDS, notify.COMMANDS, site.COMMANDS, update.COMMANDS)
