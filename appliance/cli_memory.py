"""`appliance memory ...` and `appliance audit ...`: the memory store from the command line.

Everything goes through the running store over IPC (it is the only writer of the file),
except `memory restore`, which needs the store stopped, and `audit verify`, which reads the
file directly so that it works whether or not the store runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from appliance.chunking import chunk_text
from appliance.config import ApplianceConfig
from appliance.ipc.client import IpcClient
from appliance.ipc.embedding import embed_or_none
from appliance.ipc.errors import IpcError
from appliance.protocol.store import (
    BATCH_CHUNKS,
    MAX_CHUNKS,
    MAX_DOCUMENT_CHARS,
    MEMORY_KINDS,
    STORE_ARCHIVE,
    STORE_ARCHIVE_FIND,
    STORE_BACKUP,
    STORE_FORGET,
    STORE_INGEST,
    STORE_RECALL,
    STORE_REMEMBER,
    STORE_RESTORE,
    STORE_ROTATE_KEY,
    STORE_STATS,
    ArchiveQuery,
    ArchiveRequest,
    BackupRequest,
    DocumentIn,
    MemoryId,
    MemoryIn,
    RecallFilters,
    RecallRequest,
    RestoreRequest,
)
from appliance.validation import describe_validation_error

T = TypeVar("T")


class CliError(Exception):
    """Printed as one line; exit status 1 (2 for bad input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _timestamp(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither unix seconds nor an ISO 8601 time") from None


def add_parsers(commands: Any) -> None:
    memory = commands.add_parser("memory", help="the memory store: remember, recall, archive, back up")
    actions = memory.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("stats", help="counts, sizes and the index in use")
    remember = actions.add_parser("remember", help="store one memory (embedded by the engine when it is up)")
    remember.add_argument("text")
    remember.add_argument("--kind", choices=MEMORY_KINDS, default="fact")
    remember.add_argument("--source", default="cli")
    remember.add_argument("--tag", action="append", default=[], dest="tags")
    remember.add_argument("--sensitive", action="store_true", help="encrypt the text at rest")
    remember.add_argument("--pinned", action="store_true", help="never archive it")
    recall = actions.add_parser("recall", help="hybrid search")
    recall.add_argument("query")
    recall.add_argument("-k", type=int, default=5)
    recall.add_argument("--mode", choices=["hybrid", "vector", "text"], default="hybrid")
    recall.add_argument("--kind", action="append", choices=MEMORY_KINDS, dest="kinds")
    recall.add_argument("--source", action="append", dest="sources")
    recall.add_argument("--tag", action="append", dest="tags")
    recall.add_argument("--since", type=_timestamp, help="unix seconds or ISO 8601")
    recall.add_argument("--until", type=_timestamp)
    forget = actions.add_parser("forget", help="erase one memory's content (a tombstone stays)")
    forget.add_argument("id", type=int)
    ingest = actions.add_parser("ingest", help="store a text or markdown file as chunks; re-ingest replaces")
    ingest.add_argument("path", type=Path)
    ingest.add_argument("--tag", action="append", default=[], dest="tags")
    archive = actions.add_parser("archive", help="move old unpinned memories into compressed archive segments")
    archive.add_argument("--older-than-days", type=float, default=None)
    find = actions.add_parser("find-archived", help="archived memories by time range and source")
    find.add_argument("--since", type=_timestamp)
    find.add_argument("--until", type=_timestamp)
    find.add_argument("--source")
    find.add_argument("--limit", type=int, default=20)
    unarchive = actions.add_parser("unarchive", help="bring archived memories back (they come back pinned)")
    unarchive.add_argument("ids", type=int, nargs="+")
    backup = actions.add_parser("backup", help="online backup of the memory file while the store serves")
    backup.add_argument("path", type=Path)
    restore = actions.add_parser("restore", help="replace the memory file with a backup (store stopped)")
    restore.add_argument("path", type=Path)
    actions.add_parser("rotate-key", help="re-encrypt every sealed value under a new key")

    audit = commands.add_parser("audit", help="the audit log")
    audit_actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    audit_actions.add_parser("verify", help="check the hash chain; exit 1 naming the first bad row")


def _print(model: BaseModel | dict[str, Any]) -> None:
    data = model.model_dump(mode="json") if isinstance(model, BaseModel) else model
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _build(factory: Callable[..., T], **fields: Any) -> T:
    try:
        return factory(**fields)
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc), code=2) from None


class _Clients:
    def __init__(self, config: ApplianceConfig) -> None:
        self.store = IpcClient("store", config.socket_path("store"), config.ipc.timeout_s)
        self.engine = IpcClient("engine", config.socket_path("engine"), config.ipc.timeout_s)

    async def close(self) -> None:
        await self.store.close()
        await self.engine.close()


async def _archive(clients: _Clients, request: ArchiveRequest) -> None:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="memories", file=sys.stderr, disable=None)
    last = None
    async for progress in clients.store.stream(STORE_ARCHIVE, request, timeout_s=3600):
        bar.total = progress.total
        bar.update(progress.done - bar.n)
        last = progress
    bar.close()
    if last is not None:
        ratio = last.raw_bytes / last.stored_bytes if last.stored_bytes else 0.0
        sys.stdout.write(f"archived {last.done} memories into {last.segments} segments; "
                         f"{last.raw_bytes} -> {last.stored_bytes} bytes ({ratio:.2f}x)\n")


async def _memory(config: ApplianceConfig, args: argparse.Namespace, clients: _Clients) -> None:
    store, log = clients.store, _log()
    action = args.action
    if action == "stats":
        _print(await store.call(STORE_STATS))
    elif action == "remember":
        vectors = await embed_or_none(clients.engine, [args.text], log)
        memory = _build(MemoryIn, text=args.text, kind=args.kind, source=args.source, tags=args.tags,
                        sensitive=args.sensitive, pinned=args.pinned, embedding=vectors[0] if vectors else None)
        _print(await store.call(STORE_REMEMBER, memory))
    elif action == "recall":
        vectors = None if args.mode == "text" else await embed_or_none(clients.engine, [args.query], log)
        filters = _build(RecallFilters, kinds=args.kinds, sources=args.sources, tags=args.tags,
                         since=args.since, until=args.until)
        mode = args.mode if vectors or args.mode == "text" else "text"
        request = _build(RecallRequest, query=args.query, embedding=vectors[0] if vectors else None, k=args.k,
                         mode=mode, filters=filters)
        _print(await store.call(STORE_RECALL, request))
    elif action == "forget":
        _print(await store.call(STORE_FORGET, _build(MemoryId, id=args.id)))
    elif action == "ingest":
        await _ingest(config, args, clients)
    elif action == "archive":
        await _archive(clients, _build(ArchiveRequest, older_than_days=args.older_than_days))
    elif action == "find-archived":
        query = _build(ArchiveQuery, since=args.since, until=args.until, source=args.source, limit=args.limit)
        _print(await store.call(STORE_ARCHIVE_FIND, query))
    elif action == "unarchive":
        _print(await store.call(STORE_RESTORE, _build(RestoreRequest, ids=args.ids)))
    elif action == "backup":
        _print(await store.call(STORE_BACKUP, _build(BackupRequest, path=str(args.path)), timeout_s=3600))
    elif action == "rotate-key":
        _print(await store.call(STORE_ROTATE_KEY, timeout_s=3600))


def _read_document(path: Path) -> tuple[str, str]:
    """The file's absolute path and its text, checked before anything is sent."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", code=2) from None
    if len(raw) > MAX_DOCUMENT_CHARS:
        raise CliError(f"{path} is {len(raw)} bytes; the limit is {MAX_DOCUMENT_CHARS}", code=2)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})", code=2) from None
    return str(path.resolve()), text


async def _ingest(config: ApplianceConfig, args: argparse.Namespace, clients: _Clients) -> None:
    where, text = args.document
    chunks = chunk_text(text, config.memory.chunk_chars, config.memory.chunk_overlap)
    if not chunks:
        raise CliError(f"{where} holds no text", code=2)
    if len(chunks) > MAX_CHUNKS:
        raise CliError(f"{where} makes {len(chunks)} chunks, more than {MAX_CHUNKS}; raise memory.chunk_chars "
                       "or split the file", code=2)
    vectors = await embed_or_none(clients.engine, chunks, _log())
    replaced = 0
    for start in range(0, len(chunks), BATCH_CHUNKS):
        batch = chunks[start : start + BATCH_CHUNKS]
        document = _build(DocumentIn, path=where, first_chunk=start, chunks=batch, tags=args.tags,
                          embeddings=vectors[start : start + BATCH_CHUNKS] if vectors else None)
        replaced += (await clients.store.call(STORE_INGEST, document, timeout_s=600)).replaced
    _print({"path": where, "chunks": len(chunks), "replaced": replaced, "embedded": vectors is not None})


def _log() -> logging.Logger:
    return logging.getLogger("appliance.cli")


def _run_async(config: ApplianceConfig, work: Callable[[_Clients], Awaitable[None]]) -> int:
    async def main() -> None:
        clients = _Clients(config)
        try:
            await work(clients)
        finally:
            await clients.close()

    try:
        asyncio.run(main())
    except IpcError as exc:
        raise CliError(str(exc)) from None
    return 0


def run(config: ApplianceConfig, args: argparse.Namespace) -> int:
    from appliance.store import offline

    try:
        if args.command == "audit":
            verdict = offline.verify_audit(config)
            _print(verdict)
            if not verdict.ok:
                raise CliError(f"audit chain broken at row {verdict.first_bad_id}: {verdict.reason}")
            return 0
        if args.action == "restore":
            restored = offline.restore_backup(config, args.path)
            sys.stdout.write(f"restored {config.memory_dir / 'memory.db'} from {args.path}: {restored}\n")
            return 0
        if args.action == "ingest":
            args.document = _read_document(args.path)
        if args.action == "backup":
            args.path = args.path.resolve()
        return _run_async(config, lambda clients: _memory(config, args, clients))
    except offline.OfflineError as exc:
        raise CliError(str(exc), code=exc.code) from None
