"""The agent service: periodic jobs: a heartbeat over the others and the daily archive run."""

from __future__ import annotations

import asyncio

from appliance.agent.periodic import Periodic
from appliance.ipc.embedding import embed_or_none
from appliance.ipc.errors import IpcError
from appliance.protocol.common import HEALTH, Agent, ServiceName, ServiceState
from appliance.protocol.services import BY_NAME
from appliance.protocol.store import (
    STORE_ARCHIVE,
    STORE_SET_VECTORS,
    STORE_UNEMBEDDED,
    ArchiveRequest,
    EmbeddingsIn,
    UnembeddedRequest,
)
from appliance.runtime.service import Service

WATCHED = BY_NAME["agent"].depends_on


class AgentService(Service[Agent]):
    name = "agent"

    periodic: Periodic | None = None
    beats = 0

    async def start(self) -> None:
        self.periodic = Periodic(self.log)
        self.periodic.every("heartbeat", self.config.agent.heartbeat_interval_s, self.heartbeat)
        self.periodic.every("archive", self.config.memory.archive_interval_s, self.archive)
        self.periodic.every("embed-backfill", self.config.agent.backfill_interval_s, self.backfill)

    async def stop(self) -> None:
        if self.periodic is not None:
            await self.periodic.stop()

    async def _state_of(self, name: ServiceName) -> str | None:
        """None when the peer is fine, else a short reason."""
        try:
            health = await self.peer(name).call(HEALTH, timeout_s=2.0)
        except IpcError as exc:
            return str(exc)
        return None if health.state is ServiceState.READY else f"{name} {health.state.value}"

    async def heartbeat(self) -> None:
        self.beats += 1
        problems = [p for p in await asyncio.gather(*(self._state_of(n) for n in WATCHED)) if p]
        self.log.debug("heartbeat %d", self.beats, extra={"HEARTBEAT": self.beats})
        if problems:
            self.set_state(ServiceState.DEGRADED, "; ".join(problems))
        else:
            self.set_state(ServiceState.READY, f"heartbeat every {self.config.agent.heartbeat_interval_s:g} s")

    async def archive(self) -> None:
        """Move memories older than memory.archive_after_days into the archive tier."""
        last = None
        async for progress in self.peer("store").stream(STORE_ARCHIVE, ArchiveRequest(), timeout_s=600):
            last = progress
        if last is not None and last.done:
            self.log.info("archive run: %d memories into %d segments", last.done, last.segments,
                          extra={"ARCHIVED": last.done})

    async def backfill(self) -> None:
        """Embed memories that were stored while the engine was down, a batch at a time."""
        total = 0
        while batch := (await self.peer("store").call(STORE_UNEMBEDDED, UnembeddedRequest(limit=64))).items:
            vectors = await embed_or_none(self.peer("engine"), [item.text for item in batch], self.log)
            if vectors is None:
                return  # the engine is still down; the next run tries again
            request = EmbeddingsIn(ids=[item.id for item in batch], embeddings=vectors)
            total += (await self.peer("store").call(STORE_SET_VECTORS, request)).stored
            if len(batch) < 64:
                break
        if total:
            self.log.info("embedded %d memories stored without a vector", total, extra={"BACKFILLED": total})
