"""notify: a message to people, over every transport the box has (the notify.send command)."""

from __future__ import annotations

from pydantic import Field, JsonValue

from appliance.control.caller import Role
from appliance.phrases import Phrase
from appliance.protocol.common import Message
from appliance.taskkinds.base import RunFailed, Running, TaskKind


class NotifyFields(Message):
    message: str = Field(min_length=1, max_length=4000, description="what people read")
    topic: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[^#+\x00]+$",
                              description="the site broker's topic (default agent.alert_topic)")


async def alert(running: Running, text: str, topic: str | None = None) -> JsonValue:
    """notify.send as the task's creator; a message that reached nobody fails the task."""
    task = running.task
    sent = await running.call("notify.send", {"text": text, "kind": "alert", "topic": topic,
                                              "data": {"task": task.id, "input": task.spec.input}})
    outcome: dict[str, JsonValue] = sent.model_dump(mode="json")
    await running.step("alert sent", outcome)
    if not sent.reached:
        raise RunFailed(Phrase("notify.reached_nobody", why="; ".join(f"{k}: {v}" for k, v in sent.failed.items())),
                        outcome)
    return outcome


async def run(running: Running, fields: NotifyFields) -> JsonValue:
    return await alert(running, fields.message, fields.topic)


KIND = TaskKind("notify", "A message to the site's staff over every transport.", NotifyFields, Role.OPERATOR, run)
