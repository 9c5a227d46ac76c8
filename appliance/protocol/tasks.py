"""Tasks: the durable queue in the store, its state machine, the step log; and the agent's own endpoints.

A task is created ``queued`` and ends in exactly one of the final states. The store refuses any
other move (TRANSITIONS), so two writers (the agent finishing a task, an operator cancelling it)
cannot both win. Every task keeps a step log numbered per task from 1, which a client that lost
its connection replays from the last number it saw.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, JsonValue

from appliance.phrases import Phrase, PhraseWire, words
from appliance.protocol.common import Changed, Empty, Message, endpoint


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


FINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT})
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.WAITING_APPROVAL, TaskState.CANCELLED,
                                 TaskState.FAILED}),
    # TIMED_OUT: nobody decided within the task's timeout.
    TaskState.WAITING_APPROVAL: frozenset({TaskState.QUEUED, TaskState.CANCELLED, TaskState.TIMED_OUT}),
    # QUEUED: resumed after a restart; WAITING_APPROVAL: an agent run's call waits for a person.
    TaskState.RUNNING: frozenset({TaskState.QUEUED, TaskState.WAITING_APPROVAL} | FINAL),
    **{state: frozenset() for state in FINAL},
}
# A kind's name: its declaration (fields, roles, runner) is in appliance/taskkinds/, which only the
# command layer and the agent read; the store keeps the spec as it was validated there.
KIND_NAME = r"^[a-z][a-z0-9_]{0,31}$"
Priority = Literal["interactive", "scheduled", "background"]
ACTION_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class TaskSpec(Message):
    """What to run, as stored with the task: the kind, what every kind shares, and the kind's own
    fields (validated against the kind's declaration when the task was created; kept as given)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = Field(pattern=KIND_NAME)
    timeout_s: float = Field(300.0, gt=0, le=86_400)
    priority: Priority = "interactive"
    input: JsonValue = Field(None, description="what a fallback is given: the failure it follows")

    def fields(self) -> dict[str, JsonValue]:
        """The kind's own fields (everything but what every kind shares)."""
        return dict(self.model_extra or {})


class TaskNew(Message):
    spec: TaskSpec
    created_by: str = Field(min_length=1, max_length=128)
    role: Literal["admin", "operator", "viewer"]
    schedule: str | None = Field(None, max_length=64)
    max_attempts: int = Field(1, ge=1, le=20)
    not_before: float = 0.0


class TaskRow(Message):
    id: int
    state: TaskState
    spec: TaskSpec
    created_by: str
    role: str
    schedule: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    progress: float = Field(ge=0, le=100)
    attempts: int
    max_attempts: int
    not_before: float
    result: JsonValue = None
    error: str = ""
    error_phrase: PhraseWire | None = Field(None, description="the error by code, for a client's own language")
    last_seq: int = Field(description="the number of the task's newest step")
    approved_by: str | None = Field(None, description="who approved it, for an action that needs approval")


class TaskId(Message):
    id: int = Field(ge=1, le=2**63 - 1)


class StepRow(Message):
    seq: int
    at: float
    message: str
    data: JsonValue = None
    phrase: PhraseWire | None = Field(None, description="the message by code, for a client's own language")


class TaskDetail(Message):
    task: TaskRow
    steps: list[StepRow]


class TaskDetailQuery(TaskId):
    after_seq: int = Field(0, ge=0, le=2**63 - 1, description="only steps after this number (to resume)")
    steps: int = Field(200, ge=0, le=1000)


class TaskQuery(Message):
    state: list[TaskState] | None = Field(None, max_length=7)
    schedule: str | None = Field(None, max_length=64)
    kind: str | None = Field(None, pattern=KIND_NAME)
    limit: int = Field(50, ge=1, le=500)
    cursor: int | None = Field(None, ge=1, le=2**63 - 1, description="next_cursor of the page before")


class TaskPage(Message):
    items: list[TaskRow]
    next_cursor: int | None = None


class TaskUpdate(Message):
    """A move of the state machine (checked by the store), with what the move carries."""

    id: int = Field(ge=1, le=2**63 - 1)
    state: TaskState | None = None
    expect: list[TaskState] | None = Field(None, description="refused unless the task is in one of these states")
    progress: float | None = Field(None, ge=0, le=100)
    result: JsonValue = None
    error: str | None = Field(None, max_length=4000)
    error_phrase: PhraseWire | None = None
    not_before: float | None = None
    attempts: int | None = Field(None, ge=0)
    approved_by: str | None = Field(None, min_length=1, max_length=128)


class StepIn(Message):
    id: int = Field(ge=1, le=2**63 - 1)
    message: str = Field(min_length=1, max_length=4000)
    data: JsonValue = None
    phrase: PhraseWire | None = None

    @classmethod
    def saying(cls, ident: int, message: str | Phrase, data: JsonValue = None) -> StepIn:
        """A step in the box's words: a Phrase is recorded with its English text and its code."""
        text, phrase = words(message)
        return cls(id=ident, message=text[:4000], data=data, phrase=phrase)


class Resumable(Message):
    kinds: list[str] = Field(default_factory=list, max_length=64,
                             description="kinds whose cut-short runs are queued again (the rest fail)")


class Recovered(Message):
    requeued: list[int]
    failed: list[int]


class ScheduleMark(Message):
    name: str = Field(min_length=1, max_length=64)
    last_fire: float


class Fire(Message):
    """One schedule fire: its task (none when ``skip_if_busy`` and the schedule's last task is
    queued or running) and its mark, written together."""

    task: TaskNew
    at: float
    skip_if_busy: bool = False


class Fires(Message):
    fires: list[Fire] = Field(min_length=1, max_length=10_000)


class Fired(Message):
    created: list[int | None] = Field(description="per fire, the new task's id, or None when it was skipped")


class ScheduleMarks(Message):
    marks: dict[str, float]


STORE_TASK_CREATE = endpoint("store", "tasks/create", TaskNew, TaskRow)
STORE_TASK_GET = endpoint("store", "tasks/get", TaskDetailQuery, TaskDetail)
STORE_TASKS = endpoint("store", "tasks/list", TaskQuery, TaskPage)
STORE_TASK_UPDATE = endpoint("store", "tasks/update", TaskUpdate, TaskRow)
STORE_TASK_STEP = endpoint("store", "tasks/step", StepIn, Changed)
STORE_TASK_NEXT = endpoint("store", "tasks/next", Empty, TaskPage)
STORE_TASKS_RECOVER = endpoint("store", "tasks/recover", Resumable, Recovered)
STORE_SCHEDULE_MARK = endpoint("store", "schedules/mark", ScheduleMark, Changed)
STORE_SCHEDULE_MARKS = endpoint("store", "schedules/marks", Empty, ScheduleMarks)
STORE_SCHEDULE_FIRE = endpoint("store", "schedules/fire", Fires, Fired)

# The agent's own endpoints: a new task is waiting; stop a running one.
AGENT_WAKE = endpoint("agent", "tasks/wake", Empty, Empty)
AGENT_CANCEL = endpoint("agent", "tasks/cancel", TaskId, Changed)
