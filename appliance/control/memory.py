"""Memory commands: remember, search, get, forget, stats, ingest, archive, backup, key rotation.

Request models here are what every surface validates against: REST fills them from the query
string or the body, the WebSocket channel from a frame, the CLI from its arguments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import Field, ValidationError

from appliance.chunking import chunk_text
from appliance.control.caller import Permission, role_allows
from appliance.control.command import CONSOLE_ONLY, Command, Context, Effect, HttpRoute, OwnRow, Tool, command
from appliance.control.errors import CommandError
from appliance.phrases import Phrase
from appliance.protocol.common import Empty, Message, Tag
from appliance.protocol.store import (
    MAX_DOCUMENT_CHARS,
    MAX_TAGS,
    STORE_ARCHIVE,
    STORE_ARCHIVE_FIND,
    STORE_BACKUP,
    STORE_FORGET,
    STORE_GET,
    STORE_OWNER,
    STORE_OWNER_CLAIM,
    STORE_RESTORE,
    STORE_ROTATE_KEY,
    STORE_STATS,
    ArchivedRecords,
    ArchiveProgress,
    ArchiveQuery,
    ArchiveRequest,
    BackupDone,
    BackupRequest,
    Forgotten,
    KeyRotated,
    MemoryFields,
    MemoryId,
    MemoryIn,
    MemoryKind,
    MemoryRecord,
    OwnerClaim,
    OwnerKey,
    RecallFilters,
    RecallMode,
    RecallResponse,
    Restored,
    RestoreRequest,
    StoreStats,
)


class RememberRequest(MemoryFields):
    """A memory to store; the engine embeds its text (a vector is never taken from outside).
    An empty source becomes the caller (``user:<subject>``)."""


class Remembered(Message):
    id: int
    embedded: bool = Field(description="stored with a vector; false while the engine cannot embed")


class SearchRequest(Message):
    """A search. Over REST these are query parameters; kind, source and tag may repeat."""

    q: str = Field(min_length=1, max_length=4096, description="what to look for")
    k: int = Field(10, ge=1, le=100, description="how many hits")
    mode: RecallMode = "hybrid"
    kind: list[MemoryKind] | None = Field(None, min_length=1, max_length=4)
    source: list[str] | None = Field(None, min_length=1, max_length=32)
    tag: list[Tag] | None = Field(None, min_length=1, max_length=MAX_TAGS, description="all must match")
    since: float | None = Field(None, ge=0, le=1e11, description="unix time")
    until: float | None = Field(None, ge=0, le=1e11, description="unix time")

    def filters(self) -> RecallFilters:
        return RecallFilters(kinds=self.kind, sources=self.source, tags=self.tag, since=self.since, until=self.until)


class IngestRequest(Message):
    """A text or markdown document: chunked here, embedded, and stored; re-ingesting a path replaces it."""

    path: str = Field(min_length=1, max_length=1024, description="where the document came from; the re-ingest key")
    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS, pattern=r"\S",
                      description="the document's text; something besides white space")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class Ingested(Message):
    path: str
    chunks: int
    replaced: int
    embedded: bool


class Backfilled(Message):
    embedded: int
    stopped: str = Field("", description="why it stopped before every memory had a vector")


async def remember(ctx: Context, request: RememberRequest) -> Remembered:
    memory = MemoryIn(**request.model_dump())
    if not memory.source:
        memory = memory.model_copy(update={"source": f"user:{ctx.caller.subject}"})
    ident, embedded = await ctx.memory.remember(memory)
    return Remembered(id=ident, embedded=embedded)


async def search(ctx: Context, request: SearchRequest) -> RecallResponse:
    if request.since is not None and request.until is not None and request.since > request.until:
        return RecallResponse(hits=[], mode=request.mode, took_ms=0.0)  # an empty time range holds nothing
    try:
        filters = request.filters()
    except ValidationError as exc:
        raise CommandError.of(exc, where="query") from None
    return await ctx.memory.recall(request.q, mode=request.mode, k=request.k, filters=filters)


async def get(ctx: Context, request: MemoryId) -> MemoryRecord:
    return await ctx.peers.store.call(STORE_GET, request)


async def forget(ctx: Context, request: MemoryId) -> Forgotten:
    return await ctx.peers.store.call(STORE_FORGET, request)


async def stats(ctx: Context, _: Empty) -> StoreStats:
    return await ctx.peers.store.call(STORE_STATS)


async def document_owner(ctx: Context, request: IngestRequest) -> str | None:
    """Who first uploaded this path (None: nobody yet, or before owners were kept)."""
    return (await ctx.peers.store.call(STORE_OWNER, OwnerKey(resource="document", key=request.path))).owner


async def ingest(ctx: Context, request: IngestRequest) -> Ingested:
    owner = await ctx.peers.store.call(STORE_OWNER_CLAIM, OwnerClaim(resource="document", key=request.path,
                                                                     owner=ctx.caller.subject[:128]))
    if owner.owner != ctx.caller.subject and not role_allows(ctx.caller.role, Permission.ADMIN):
        # Claimed by someone else between the owner rule's check and here.
        raise CommandError("forbidden", Phrase("memory.document_not_yours", path=request.path[:80]), field="path")
    memory = ctx.config.memory
    chunks = chunk_text(request.text, memory.chunk_chars, memory.chunk_overlap)
    replaced, embedded = await ctx.memory.ingest(request.path, chunks, list(request.tags))
    return Ingested(path=request.path, chunks=len(chunks), replaced=replaced, embedded=embedded)


async def archive(ctx: Context, request: ArchiveRequest) -> AsyncIterator[ArchiveProgress]:
    async for progress in ctx.peers.store.stream(STORE_ARCHIVE, request, timeout_s=3600):
        yield progress


async def find_archived(ctx: Context, request: ArchiveQuery) -> ArchivedRecords:
    return await ctx.peers.store.call(STORE_ARCHIVE_FIND, request)


async def unarchive(ctx: Context, request: RestoreRequest) -> Restored:
    return await ctx.peers.store.call(STORE_RESTORE, request)


async def backup(ctx: Context, request: BackupRequest) -> BackupDone:
    return await ctx.peers.store.call(STORE_BACKUP, request, timeout_s=3600)


async def rotate_key(ctx: Context, _: Empty) -> KeyRotated:
    return await ctx.peers.store.call(STORE_ROTATE_KEY, timeout_s=3600)


async def backfill(ctx: Context, _: Empty) -> Backfilled:
    count, stopped = await ctx.memory.backfill()
    return Backfilled(embedded=count, stopped=stopped)


def _remembered(request: RememberRequest, reply: Remembered | None) -> dict[str, Any]:
    done = {"id": reply.id, "embedded": reply.embedded} if reply else {}
    return {"kind": request.kind, **done}


def _ingested(request: IngestRequest, reply: Ingested | None) -> dict[str, Any]:
    done = {"chunks": reply.chunks, "replaced": reply.replaced} if reply else {}
    return {"path": request.path[:256], **done}


def _backfilled(_request: Empty, reply: Backfilled | None) -> dict[str, Any] | None:
    """Nothing to embed (what the periodic job mostly finds) leaves no row."""
    return None if reply is not None and not reply.embedded else {"embedded": reply.embedded if reply else 0}


def _by_id(request: MemoryId, _reply: Any) -> dict[str, Any]:
    return {"id": request.id}


def _archived(_request: ArchiveRequest, reply: ArchiveProgress | None) -> dict[str, Any]:
    return {"archived": reply.done, "segments": reply.segments} if reply is not None else {}


def _unarchived(request: RestoreRequest, reply: Restored | None) -> dict[str, Any]:
    return {"ids": request.ids[:50], **({"restored": reply.restored} if reply else {})}


def _backed_up(request: BackupRequest, reply: BackupDone | None) -> dict[str, Any]:
    return {"path": request.path, **({"bytes": reply.bytes} if reply else {})}


def _rotated(_request: Empty, reply: KeyRotated | None) -> dict[str, Any]:
    return {"key_id": reply.key_id, "reencrypted": reply.reencrypted} if reply else {}


Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


def _route(method: Method, path: str, status: int = 200) -> tuple[HttpRoute, ...]:
    return (HttpRoute(method, f"/api/v1/memory{path}", status),)


COMMANDS: tuple[Command[Any, Any], ...] = (
    command("memory.remember", "Store one memory; the engine embeds it when it can.", RememberRequest, Remembered,
            Permission.OPERATOR, remember, effect=Effect.WRITE, http=_route("POST", "", 201), audit=_remembered,
            tool=Tool("remember", "Store a fact in the box's memory.", ("text", "kind", "tags"))),
    command("memory.search", "Hybrid, vector or text search over long-term memory.", SearchRequest,
            RecallResponse, Permission.VIEWER, search, effect=Effect.READ, http=_route("GET", "/search"),
            tool=Tool("search_memory", "Find what the box remembers about something (notes, events, documents).",
                      ("q", "k"))),
    command("memory.get", "One memory by id.", MemoryId, MemoryRecord, Permission.VIEWER, get, effect=Effect.READ,
            http=_route("GET", "/{id:[0-9]+}")),
    command("memory.forget", "Erase a memory's content; a tombstone with its id, kind and time stays.", MemoryId,
            Forgotten, Permission.ADMIN, forget, effect=Effect.WRITE, http=_route("DELETE", "/{id:[0-9]+}"),
            audit=_by_id),
    command("memory.stats", "Counts, sizes and the index in use.", Empty, StoreStats, Permission.VIEWER, stats,
            effect=Effect.READ,
            http=_route("GET", "/stats")),
    command("memory.ingest", "Store a text document as chunks; re-ingesting its path replaces them (one's own "
            "uploads; an admin's anyone's).",
            IngestRequest, Ingested, Permission.OPERATOR, ingest, effect=Effect.WRITE,
            http=(HttpRoute("POST", "/api/v1/memory/documents", 201, upload=("text", "path"),
                            max_body_bytes=MAX_DOCUMENT_CHARS + (64 << 10)),), audit=_ingested,
            owner=OwnRow("document", "path", document_owner, own=Permission.OPERATOR, others=Permission.ADMIN)),
    command("memory.archive", "Move old unpinned memories into compressed archive segments (streams progress).",
            ArchiveRequest, ArchiveProgress, Permission.OPERATOR, archive, streaming=True, effect=Effect.WRITE,
            http=_route("POST", "/archive"), audit=_archived),
    command("memory.find_archived", "Archived memories by time range and source.", ArchiveQuery, ArchivedRecords,
            Permission.VIEWER, find_archived, effect=Effect.READ, http=_route("GET", "/archive")),
    command("memory.unarchive", "Bring archived memories back (they come back pinned).", RestoreRequest, Restored,
            Permission.OPERATOR, unarchive, effect=Effect.WRITE, http=_route("POST", "/archive/restore"),
            audit=_unarchived),
    command("memory.backfill", "Embed memories stored while the engine was down.", Empty, Backfilled,
            Permission.OPERATOR, backfill, effect=Effect.WRITE, audit=_backfilled,
            surfaces=frozenset({"cli", "agent"})),
    command("memory.backup", "Online backup of the memory file to a path on the box.", BackupRequest, BackupDone,
            Permission.ADMIN, backup, effect=Effect.WRITE, surfaces=CONSOLE_ONLY,
            audit=_backed_up),
    command("memory.rotate_key", "Re-encrypt every sealed value under a new key.", Empty, KeyRotated,
            Permission.ADMIN, rotate_key, effect=Effect.WRITE, surfaces=CONSOLE_ONLY,
            audit=_rotated),
)
