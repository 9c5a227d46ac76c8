"""shell: an inline command line (an argv, never a shell string), run in the default sandbox; admins only."""

from __future__ import annotations

from pydantic import Field, JsonValue, field_validator

from appliance.control.caller import Role
from appliance.protocol.common import Message
from appliance.taskkinds.base import RunFailed, Running, TaskKind


class ShellFields(Message):
    argv: list[str] = Field(min_length=1, max_length=256, description="the program and its arguments")

    @field_validator("argv")
    @classmethod
    def _elements(cls, value: list[str]) -> list[str]:
        if any(len(part) > 4096 or "\x00" in part for part in value) or not value[0]:
            raise ValueError("each element at most 4096 characters, no NUL, and a program first")
        return value


async def run(running: Running, fields: ShellFields) -> JsonValue:
    agent = running.config.agent
    ran = await running.sandbox(list(fields.argv), limits=agent.default_limits, readable=list(agent.command_readable))
    if not ran.ok:
        raise RunFailed(ran.summary, ran.result)
    return ran.result


KIND = TaskKind("shell", "A command line run in the default sandbox (admins only).", ShellFields, Role.ADMIN, run)
