"""ask: a question answered by the model from the memories it recalls, with citations."""

from __future__ import annotations

from pydantic import Field, JsonValue

from appliance.control.caller import Role
from appliance.control.chat import ChatReply, chat_reply
from appliance.protocol.common import Message
from appliance.taskkinds.base import Running, TaskKind

PROGRESS_EVERY_TOKENS = 32
ANSWER_TOKENS = 512


class AskFields(Message):
    query: str = Field(min_length=1, max_length=4000, description="the question")


async def answer(running: Running, message: str, k: int, recall: str | None = None) -> ChatReply:
    """The chat command's answer as the task's creator, with memories recalled for ``recall`` (else
    the message); progress every few tokens (recall is the first 10 %, then the answer)."""
    async def progress(tokens: int) -> None:
        if tokens % PROGRESS_EVERY_TOKENS == 0:
            await running.step("generating", {"percent": 10 + int(85 * tokens / ANSWER_TOKENS), "tokens": tokens})

    request = {"message": message, "k": k, "max_tokens": ANSWER_TOKENS, "priority": running.task.spec.priority,
               "recall": recall}
    return await chat_reply(running.dispatcher, request, running.caller, progress)


def result(reply: ChatReply) -> dict[str, JsonValue]:
    return {"answer": reply.text, "citations": [c.model_dump(mode="json") for c in reply.citations]}


async def run(running: Running, fields: AskFields) -> JsonValue:
    return result(await answer(running, fields.query, k=4))


KIND = TaskKind("ask", "A question answered from memory, with citations.", AskFields, Role.VIEWER, run,
                resumable=True, model_work=True)
