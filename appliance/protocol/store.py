"""The store's memory messages and endpoints: long-term memory, ring, documents, archive, audit, backup."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from appliance.protocol.common import (
    MAX_TEXT_CHARS,
    BoundedText,
    ConversationId,
    Empty,
    Message,
    Tag,
    Vector,
    endpoint,
)

MemoryKind = Literal["event", "fact", "conversation", "document"]
MEMORY_KINDS: tuple[MemoryKind, ...] = ("event", "fact", "conversation", "document")
RecallMode = Literal["hybrid", "vector", "text"]

MAX_TAGS = 16
MAX_DOCUMENT_CHARS = 2 << 20
MAX_CHUNKS = 4096  # per document
BATCH_CHUNKS = 64  # per ingest call: 64 chunks with their vectors stay far below ipc.max_frame_bytes


class MemoryFields(Message):
    """A memory as a person or a device gives it: everything but its vector."""

    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    kind: MemoryKind = "event"
    source: str = Field("", max_length=256, description="device id or user the memory came from")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    importance: float = Field(0.5, ge=0.0, le=1.0)
    pinned: bool = Field(False, description="never moved to the archive")
    sensitive: bool = Field(False, description="text and metadata encrypted at rest; not in full-text search")
    created_at: float | None = Field(None, ge=0, le=1e11, description="unix time; default now")
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class MemoryIn(MemoryFields):
    embedding: Vector | None = None


class MemoryRecord(MemoryIn):
    id: int
    created_at: float  # always set on a stored record
    archived: bool = False


class MemoryId(Message):
    id: int = Field(ge=1, le=2**62)


class Forgotten(Message):
    id: int
    forgotten: bool


class RecallFilters(Message):
    """Every filter is optional; unknown fields are rejected by name (extra=forbid)."""

    kinds: list[MemoryKind] | None = Field(None, min_length=1, max_length=4)
    sources: list[str] | None = Field(None, min_length=1, max_length=32)
    since: float | None = Field(None, ge=0, le=1e11)
    until: float | None = Field(None, ge=0, le=1e11)
    tags: list[Tag] | None = Field(None, min_length=1, max_length=MAX_TAGS, description="all must match")

    @field_validator("sources")
    @classmethod
    def _short_sources(cls, value: list[str] | None) -> list[str] | None:
        for source in value or []:
            if len(source) > 256:
                raise ValueError("each source must be at most 256 characters")
        return value


    @model_validator(mode="after")
    def _ordered(self) -> RecallFilters:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until})")
        return self


class RecallRequest(Message):
    """A query as text (for BM25, and embedded by the engine before it reaches the store) or a vector."""

    query: str | None = Field(None, min_length=1, max_length=4096)
    embedding: Vector | None = None
    k: int = Field(10, ge=1, le=100)
    mode: RecallMode = "hybrid"
    filters: RecallFilters = RecallFilters()

    @model_validator(mode="after")
    def _has_query(self) -> RecallRequest:
        if self.mode == "vector" and self.embedding is None:
            raise ValueError("mode 'vector' needs an embedding")
        if self.mode == "text" and self.query is None:
            raise ValueError("mode 'text' needs a query")
        if self.query is None and self.embedding is None:
            raise ValueError("give a query text, an embedding, or both")
        return self


class RecallHit(Message):
    score: float
    similarity: float | None = Field(None, description="cosine similarity to the query vector")
    text_score: float | None = Field(None, description="BM25 relevance, normalised to 0..1")
    recency: float
    record: MemoryRecord


class RecallResponse(Message):
    hits: list[RecallHit]
    mode: RecallMode = Field(description="the mode the answer was found in")
    took_ms: float
    fallback: str | None = Field(None, description="why the answer is not in the mode asked for")


class RingEntryIn(Message):
    conversation: ConversationId = Field(description="conversation id")
    role: Literal["user", "assistant", "system", "tool"] = "user"
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class RingEntry(RingEntryIn):
    seq: int
    created_at: float


class RingRead(Message):
    conversation: ConversationId
    k: int = Field(20, ge=1, le=1000)


class RingEntries(Message):
    entries: list[RingEntry] = Field(description="oldest first")


class DocumentIn(Message):
    """Chunks of a text or markdown file, read and chunked by the caller (the store cannot read
    users' files), sent in batches: the batch with ``first_chunk`` 0 replaces what an earlier
    ingest of the same path stored, the others append."""

    path: str = Field(min_length=1, max_length=1024, description="where the file came from; re-ingest key")
    first_chunk: int = Field(0, ge=0, lt=MAX_CHUNKS, description="index of this batch's first chunk")
    chunks: list[BoundedText] = Field(min_length=1, max_length=BATCH_CHUNKS, description="appliance.chunking output")
    embeddings: list[Vector] | None = Field(None, description="one per chunk, when the engine is up")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


    @model_validator(mode="after")
    def _aligned(self) -> DocumentIn:
        if self.embeddings is not None and len(self.embeddings) != len(self.chunks):
            raise ValueError(f"{len(self.embeddings)} embeddings for {len(self.chunks)} chunks")
        return self


class DocumentStored(Message):
    path: str
    chunks: int
    replaced: int


class ArchiveRequest(Message):
    older_than_days: float | None = Field(None, ge=0, le=36_500, description="default memory.archive_after_days")


class ArchiveProgress(Message):
    done: int
    total: int
    segments: int = 0
    finished: bool = False
    raw_bytes: int = 0
    stored_bytes: int = 0


class ArchiveQuery(Message):
    since: float | None = Field(None, ge=0, le=1e11)
    until: float | None = Field(None, ge=0, le=1e11)
    source: str | None = Field(None, max_length=256)
    limit: int = Field(100, ge=1, le=1000)


class ArchivedRecords(Message):
    records: list[MemoryRecord]


class RestoreRequest(Message):
    ids: list[int] = Field(min_length=1, max_length=10_000)


class Restored(Message):
    restored: int


class AuditIn(Message):
    user_id: str = Field(min_length=1, max_length=128)
    action: str = Field(min_length=1, max_length=128)
    ip_address: str | None = Field(None, max_length=64)
    details: dict[str, JsonValue] = Field(default_factory=dict)


class AuditRow(AuditIn):
    id: int
    timestamp: float


class AuditQuery(Message):
    """Newest first. ``cursor`` is the ``next_cursor`` of the page before (the convention of every list)."""

    since: float | None = Field(None, ge=0, le=1e11)
    until: float | None = Field(None, ge=0, le=1e11)
    user: str | None = Field(None, min_length=1, max_length=128, description="exact user id")
    action: str | None = Field(None, min_length=1, max_length=128,
                               description="an exact action, or a prefix ending in '.' (memory.)")
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, pattern=r"^[0-9]{1,19}$")


class AuditPage(Message):
    items: list[AuditRow]
    next_cursor: str | None = None


class AuditVerdict(Message):
    ok: bool
    rows: int
    first_bad_id: int | None = None
    reason: str = ""


class BackupRequest(Message):
    path: str = Field(min_length=1, max_length=1024, description="absolute path the store process may write")


class BackupDone(Message):
    path: str
    bytes: int
    pages: int
    took_s: float


class StoreStats(Message):
    memories: int
    vectors: int
    forgotten: int
    archived: int
    segments: int
    ring_entries: int
    audit_rows: int
    file_bytes: int
    wal_bytes: int
    index: str
    schema_version: int


class UnembeddedRequest(Message):
    limit: int = Field(64, ge=1, le=256)


class UnembeddedItem(Message):
    id: int
    text: str


class Unembedded(Message):
    items: list[UnembeddedItem] = Field(description="memories stored without a vector, oldest first")


class EmbeddingsIn(Message):
    ids: list[int] = Field(min_length=1, max_length=256)
    embeddings: list[Vector] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _aligned(self) -> EmbeddingsIn:
        if len(self.ids) != len(self.embeddings):
            raise ValueError(f"{len(self.embeddings)} embeddings for {len(self.ids)} ids")
        return self


class EmbeddingsStored(Message):
    stored: int


class KeyRotated(Message):
    key_id: str
    reencrypted: int


OwnedResource = Literal["conversation", "document"]


class OwnerKey(Message):
    """A row without an owner column of its own: a chat conversation, an uploaded document's path."""

    resource: OwnedResource
    key: str = Field(min_length=1, max_length=1024)


class OwnerClaim(OwnerKey):
    owner: str = Field(min_length=1, max_length=128)


class OwnerOf(Message):
    owner: str | None = Field(description="whose it is; null: nobody has claimed it yet")


STORE_REMEMBER = endpoint("store", "remember", MemoryIn, MemoryId)
STORE_GET = endpoint("store", "get", MemoryId, MemoryRecord)
STORE_FORGET = endpoint("store", "forget", MemoryId, Forgotten)
STORE_RECALL = endpoint("store", "recall", RecallRequest, RecallResponse)
STORE_RING_APPEND = endpoint("store", "ring/append", RingEntryIn, RingEntry)
STORE_RING_READ = endpoint("store", "ring/read", RingRead, RingEntries)
STORE_INGEST = endpoint("store", "ingest", DocumentIn, DocumentStored)
STORE_ARCHIVE = endpoint("store", "archive", ArchiveRequest, ArchiveProgress, streaming=True)
STORE_ARCHIVE_FIND = endpoint("store", "archive/find", ArchiveQuery, ArchivedRecords)
STORE_RESTORE = endpoint("store", "archive/restore", RestoreRequest, Restored)
STORE_STATS = endpoint("store", "stats", Empty, StoreStats)
STORE_AUDIT_APPEND = endpoint("store", "audit/append", AuditIn, AuditRow)
STORE_AUDIT_VERIFY = endpoint("store", "audit/verify", Empty, AuditVerdict)
STORE_AUDIT_LIST = endpoint("store", "audit/list", AuditQuery, AuditPage)
STORE_BACKUP = endpoint("store", "backup", BackupRequest, BackupDone)
STORE_ROTATE_KEY = endpoint("store", "rotate-key", Empty, KeyRotated)
STORE_UNEMBEDDED = endpoint("store", "vectors/missing", UnembeddedRequest, Unembedded)
STORE_SET_VECTORS = endpoint("store", "vectors/set", EmbeddingsIn, EmbeddingsStored)
# Claim: the row becomes the claimant's unless someone holds it already; either way, its owner now.
STORE_OWNER_CLAIM = endpoint("store", "owners/claim", OwnerClaim, OwnerOf)
STORE_OWNER = endpoint("store", "owners/get", OwnerKey, OwnerOf)
