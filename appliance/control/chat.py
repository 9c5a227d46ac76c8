"""Chat with the agent: memories recalled for the question, the model's reply streamed token by token.

The reply's last event carries the citations: the memories that were put before the model,
numbered as the prompt numbered them, so a client can show which ones the answer used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from appliance.control.caller import Caller, Permission, role_allows
from appliance.control.command import Command, Context, Effect, HttpRoute, OwnRow, command
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.phrases import Phrase
from appliance.protocol.common import MAX_PROMPT_CHARS, ConversationId, Message
from appliance.protocol.engine import ENGINE_GENERATE, ChatMessage, GenerateRequest, Priority
from appliance.protocol.store import (
    STORE_OWNER,
    STORE_OWNER_CLAIM,
    STORE_RING_APPEND,
    STORE_RING_READ,
    OwnerClaim,
    OwnerKey,
    RingEntryIn,
    RingRead,
)

NO_REPLY = "(no reply)"  # what an empty answer is remembered and shown as
SYSTEM_PROMPT = ("You are the assistant of an on-site appliance. Answer briefly, in a full sentence, in the "
                 "same language as the question, even when the notes are in another. Cite the numbered notes "
                 "below as [1], [2] when they help; do not invent facts.")
SNIPPET_CHARS = 400


class ChatRequest(Message):
    message: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS // 4)
    conversation: ConversationId | None = Field(None, description="keep the turns in this conversation's ring")
    history: int = Field(6, ge=0, le=50, description="earlier turns of the conversation to include")
    use_memory: bool = Field(True, description="recall memories for the question and cite them")
    recall: str | None = Field(None, min_length=1, max_length=4096,
                               description="recall memories for this instead of the message (e.g. a search "
                                           "task's query, without the instructions around it)")
    k: int = Field(4, ge=1, le=20, description="memories to recall")
    max_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    priority: Priority = Field(Priority.INTERACTIVE, description="the engine's queue: tasks ask as scheduled work")


class Citation(Message):
    n: int
    memory_id: int
    source: str
    kind: str
    snippet: str
    score: float


class ChatEvent(Message):
    type: Literal["token", "done"]
    text: str = ""
    citations: list[Citation] = Field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallback: str | None = Field(None, description="why memories were searched by text only, or not at all")


async def _citations(ctx: Context, request: ChatRequest) -> tuple[list[Citation], str | None]:
    if not request.use_memory:
        return [], None
    reply = await ctx.memory.recall(request.recall or request.message[:4096], k=request.k)
    cited = [Citation(n=i, memory_id=hit.record.id, source=hit.record.source, kind=hit.record.kind,
                      snippet=hit.record.text[:SNIPPET_CHARS], score=round(hit.score, 4))
             for i, hit in enumerate(reply.hits, 1)]
    return cited, reply.fallback


async def conversation_owner(ctx: Context, request: ChatRequest) -> str | None:
    if request.conversation is None:
        return None
    return (await ctx.peers.store.call(STORE_OWNER, OwnerKey(resource="conversation",
                                                             key=request.conversation))).owner


async def chat(ctx: Context, request: ChatRequest) -> AsyncIterator[ChatEvent]:
    if request.conversation:  # the first to talk in a conversation owns it (its turns are theirs to read)
        claimed = await ctx.peers.store.call(STORE_OWNER_CLAIM, OwnerClaim(
            resource="conversation", key=request.conversation, owner=ctx.caller.subject[:128]))
        if claimed.owner != ctx.caller.subject and not role_allows(ctx.caller.role, Permission.ADMIN):
            raise CommandError("forbidden", Phrase("chat.conversation_not_yours", id=request.conversation),
                               field="conversation")
    citations, fallback = await _citations(ctx, request)
    system = SYSTEM_PROMPT
    if citations:
        system += "\n\nNotes:\n" + "\n".join(f"[{c.n}] ({c.source}) {c.snippet}" for c in citations)
    messages = [ChatMessage(role="system", content=system)]
    if request.conversation and request.history:
        earlier = await ctx.peers.store.call(STORE_RING_READ, RingRead(conversation=request.conversation,
                                                                       k=request.history))
        messages += [ChatMessage(role=e.role, content=e.text) for e in earlier.entries if e.role != "system"]
    messages.append(ChatMessage(role="user", content=request.message))
    generate = GenerateRequest(messages=messages, max_tokens=request.max_tokens, temperature=request.temperature,
                               priority=request.priority, fit_context=True)
    pieces: list[str] = []
    async with contextlib.aclosing(ctx.peers.engine.stream(ENGINE_GENERATE, generate, timeout_s=120)) as chunks:
        async for chunk in chunks:
            if not chunk.done:
                pieces.append(chunk.text)
                yield ChatEvent(type="token", text=chunk.text)
                continue
            if request.conversation:
                for role, text in (("user", request.message), ("assistant", "".join(pieces) or NO_REPLY)):
                    await ctx.peers.store.call(STORE_RING_APPEND, RingEntryIn(
                        conversation=request.conversation, role=role, text=text[:65536]))
            # Notes are the system message's last lines: those the engine left out to fit were not used.
            used = citations[: max(0, len(citations) - chunk.system_lines_dropped)]
            yield ChatEvent(type="done", citations=used, finish_reason=chunk.finish_reason,
                            prompt_tokens=chunk.prompt_tokens, completion_tokens=chunk.completion_tokens,
                            fallback=fallback)


@dataclass(frozen=True)
class ChatReply:
    """A whole answer: its text, the memories it cites, and the last event (tokens, finish reason)."""

    text: str
    citations: list[Citation]
    done: ChatEvent | None

    def with_sources(self) -> str:
        """The text with its cited sources under it, for places that show plain text (chat gateways)."""
        sources = "".join(f"\n[{c.n}] {c.source}" for c in self.citations)
        return self.text + (f"\n{sources}" if sources else "")


async def chat_reply(dispatcher: Dispatcher, request: Mapping[str, Any], caller: Caller,
                     on_token: Callable[[int], Awaitable[None]] | None = None) -> ChatReply:
    """The `chat` command drained into one answer: the one place that does it (gateways, Home
    Assistant's ask, ask and search tasks). ``on_token`` is told the count after each token."""
    pieces: list[str] = []
    done: ChatEvent | None = None
    async with contextlib.aclosing(dispatcher.stream("chat", request, caller)) as events:
        async for event in events:
            assert isinstance(event, ChatEvent)
            if event.type == "token":
                pieces.append(event.text)
                if on_token is not None:
                    await on_token(len(pieces))
            else:
                done = event
    return ChatReply("".join(pieces).strip(), list(done.citations) if done else [], done)


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("chat", "Ask the agent: memories recalled and cited, the reply streamed token by token.", ChatRequest,
            ChatEvent, Permission.VIEWER, chat, effect=Effect.READ, streaming=True,
            owner=OwnRow("conversation", "conversation", conversation_owner, own=Permission.VIEWER,
                         others=Permission.ADMIN),
            http=(HttpRoute("POST", "/api/v1/chat"),)),
)
