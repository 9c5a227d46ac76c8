"""Schedules saved through the commands (REST CRUD), kept in the store beside the tasks they fire.

The store keeps each schedule's body as its author wrote it (validated by the command layer with
appliance/schedules/model.py before it gets here) and the role its tasks run with; the agent is
told to reload when one changes. Schedules from the schedules file are not stored: they are the
file's, and read-only through the commands.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from appliance.protocol.common import Changed, Empty, Message, endpoint

SCHEDULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ScheduleName(Message):
    name: str = Field(pattern=SCHEDULE_NAME)


class StoredSchedule(Message):
    name: str = Field(pattern=SCHEDULE_NAME)
    body: dict[str, JsonValue] = Field(description="the schedule's fields as its author wrote them")
    run_as: Literal["admin", "operator", "viewer"]
    updated_by: str = Field(min_length=1, max_length=128)
    updated_at: float = 0.0


class SchedulePut(Message):
    schedule: StoredSchedule
    mode: Literal["create", "replace"] = Field(description="create: refused if the name exists; replace: "
                                                           "refused unless it does")


class StoredSchedules(Message):
    items: list[StoredSchedule]


STORE_SCHEDULES = endpoint("store", "schedules/list", Empty, StoredSchedules)
STORE_SCHEDULE_PUT = endpoint("store", "schedules/put", SchedulePut, StoredSchedule)
STORE_SCHEDULE_DELETE = endpoint("store", "schedules/delete", ScheduleName, Changed)

# The agent reads the schedules again (the file and the store) and restarts its clock and event
# triggers with them; ``changed`` is how many it now runs.
AGENT_SCHEDULES_RELOAD = endpoint("agent", "schedules/reload", Empty, Changed)
