"""REST routes of the memory: ``POST /api/v1/memory`` and ``GET /api/v1/memory/search``.

Texts are embedded by the engine here, then handed to the store; if the engine is down the
memory is still stored and search falls back to full-text. Writing needs the operator or
admin role, searching any valid token. Every write is recorded in the audit log.
"""

from __future__ import annotations

import logging

from aiohttp import web
from multidict import MultiMapping
from pydantic import ValidationError

from appliance.api.app import CLAIMS_KEY, ApiError
from appliance.api.auth import Role
from appliance.ipc.client import IpcClient
from appliance.ipc.embedding import embed_or_none
from appliance.ipc.errors import IpcError
from appliance.protocol.common import Engine, Store
from appliance.protocol.store import (
    STORE_AUDIT_APPEND,
    STORE_RECALL,
    STORE_REMEMBER,
    AuditIn,
    MemoryIn,
    RecallFilters,
    RecallRequest,
)
from appliance.validation import describe_validation_error

SEARCH_PARAMS = {"q", "k", "mode", "kind", "source", "tag", "since", "until"}
WRITERS = {Role.ADMIN, Role.OPERATOR}


def _ipc_error(exc: IpcError) -> ApiError:
    return ApiError(exc.status, exc.code, str(exc))


def _one(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise ApiError(400, "bad_request", f"query parameter {name!r} given {len(values)} times; give it once")
    return values[0] if values else None


class MemoryRoutes:
    def __init__(self, store: IpcClient[Store], engine: IpcClient[Engine], log: logging.Logger, *,
                 auth_required: bool) -> None:
        self.store = store
        self.engine = engine
        self.log = log
        self.auth_required = auth_required

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/memory", self.post_memory)
        app.router.add_get("/api/v1/memory/search", self.search)

    async def post_memory(self, request: web.Request) -> web.Response:
        claims = request.get(CLAIMS_KEY)
        if self.auth_required and (claims is None or claims.role not in WRITERS):
            raise ApiError(403, "forbidden", "storing memories needs the operator or admin role")
        subject = claims.sub if claims else "anonymous"
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "too_large", "body exceeds api.max_body_bytes") from None
        try:
            memory = MemoryIn.model_validate_json(body)
        except ValidationError as exc:
            raise ApiError(400, "bad_request", f"body: {describe_validation_error(exc)}") from None
        if memory.embedding is not None:
            raise ApiError(400, "bad_request", "body: embedding: not accepted here; the engine embeds the text")
        if not memory.source:
            memory = memory.model_copy(update={"source": f"user:{subject}"})
        vectors = await embed_or_none(self.engine, [memory.text], self.log)
        if vectors is not None:
            memory = memory.model_copy(update={"embedding": vectors[0]})
        try:
            stored = await self.store.call(STORE_REMEMBER, memory)
            await self.store.call(STORE_AUDIT_APPEND, AuditIn(
                user_id=subject, action="memory.remember", ip_address=request.remote,
                details={"id": stored.id, "kind": memory.kind, "embedded": vectors is not None}))
        except IpcError as exc:
            raise _ipc_error(exc) from None
        return web.json_response({"id": stored.id, "embedded": vectors is not None}, status=201)

    async def search(self, request: web.Request) -> web.Response:
        query = request.query
        unknown = sorted(set(query) - SEARCH_PARAMS)
        if unknown:
            raise ApiError(400, "bad_request", f"unknown query parameter(s) {unknown}; "
                                               f"known: {sorted(SEARCH_PARAMS)}")
        text = _one(query, "q")
        if not text:
            raise ApiError(400, "bad_request", "query parameter 'q' (the search text) is required")
        try:
            filters = RecallFilters(
                kinds=query.getall("kind", None), sources=query.getall("source", None),
                tags=query.getall("tag", None), since=_one(query, "since"),
                until=_one(query, "until"))
            mode = _one(query, "mode") or "hybrid"
            recall = RecallRequest.model_validate({"query": text, "k": _one(query, "k") or 10, "mode": "text",
                                                   "filters": filters})
        except ValidationError as exc:
            raise ApiError(400, "bad_request", f"query: {describe_validation_error(exc)}") from None
        if mode not in ("hybrid", "vector", "text"):
            raise ApiError(400, "bad_request", f"mode {mode[:20]!r} must be hybrid, vector or text")
        if mode != "text":
            vectors = await embed_or_none(self.engine, [text], self.log)
            if vectors is not None:
                recall = recall.model_copy(update={"embedding": vectors[0], "mode": mode})
            elif mode == "vector":
                raise ApiError(503, "unavailable", "vector search needs the engine's embedding model, which is down")
        try:
            response = await self.store.call(STORE_RECALL, recall)
        except IpcError as exc:
            raise _ipc_error(exc) from None
        return web.json_response(response.model_dump(mode="json"))
