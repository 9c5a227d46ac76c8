"""The store service: the memory database behind IPC.

All SQLite work runs on one dedicated thread, so the event loop never blocks on disk and the
connection is only ever used from the thread that owns it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import apsw

from appliance.config import ApplianceConfig
from appliance.ipc.errors import BadRequest, NotFound, Unavailable
from appliance.ipc.messages import (
    STORE_GET,
    STORE_REMEMBER,
    STORE_SEARCH,
    MemoryId,
    MemoryIn,
    MemoryRecord,
    SearchHit,
    SearchRequest,
    SearchResponse,
    ServiceState,
)
from appliance.ipc.server import IpcServer
from appliance.runtime.service import Service
from appliance.store.db import MemoryDB, StoreError

T = TypeVar("T")


class StoreService(Service):
    name = "store"

    db: MemoryDB | None = None

    def __init__(self, config: ApplianceConfig) -> None:
        super().__init__(config)
        self._sqlite = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    def register(self, ipc: IpcServer) -> None:
        ipc.add(STORE_REMEMBER, self.remember)
        ipc.add(STORE_GET, self.get)
        ipc.add(STORE_SEARCH, self.search)

    async def _on_db(self, work: Callable[[MemoryDB], T]) -> T:
        db = self.db
        if db is None:
            raise Unavailable("the memory database is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._sqlite, work, db)
        except StoreError as exc:
            raise BadRequest(str(exc)) from None

    async def start(self) -> None:
        path = self.config.memory_dir / "memory.db"
        loop = asyncio.get_running_loop()
        try:
            self.db = await loop.run_in_executor(
                self._sqlite, MemoryDB, path, self.config.memory.vector_dim)
        except (StoreError, apsw.Error, OSError) as exc:
            # Stay up and say why: a restart loop would not fix a wrong file or a full disk.
            self.set_state(ServiceState.DEGRADED, f"cannot open {path}: {exc}")
            return
        count = await self._on_db(MemoryDB.count)
        self.set_state(ServiceState.READY, f"{count} memories in {path}")

    async def stop(self) -> None:
        if self.db is not None:
            await asyncio.get_running_loop().run_in_executor(self._sqlite, self.db.close)
            self.db = None
        self._sqlite.shutdown(wait=True)

    async def remember(self, memory: MemoryIn) -> MemoryId:
        return MemoryId(id=await self._on_db(lambda db: db.remember(memory)))

    async def get(self, request: MemoryId) -> MemoryRecord:
        record = await self._on_db(lambda db: db.get(request.id))
        if record is None:
            raise NotFound(f"no memory with id {request.id}")
        return record

    async def search(self, request: SearchRequest) -> SearchResponse:
        hits = await self._on_db(lambda db: db.search(request.embedding, request.k))
        return SearchResponse(hits=[SearchHit(distance=d, record=r) for d, r in hits])
