"""The store service: the memory database behind IPC.

All SQLite work runs on one dedicated thread, so the event loop never blocks on disk and the
connection is only ever used from the thread that owns it. Long jobs (archive, backup) run as
many short steps on that thread, so recall and remember are served between the steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import apsw

from appliance.config import ApplianceConfig
from appliance.ipc import deadline as ipc_deadline
from appliance.ipc.errors import BadRequest, DeadlinePassed, IpcError, NotFound, Unavailable
from appliance.ipc.errors import Conflict as IpcConflict
from appliance.ipc.server import IpcServer
from appliance.phrases import Phrase, said
from appliance.protocol.accounts import (
    ACCOUNTS_KEY_EXPIRY,
    ACCOUNTS_LOGIN_RESULT,
    ACCOUNTS_REFRESH_ISSUE,
    ACCOUNTS_REFRESH_REVOKE,
    ACCOUNTS_REFRESH_USE,
    ACCOUNTS_REVOCATIONS,
    ACCOUNTS_REVOKE,
    ACCOUNTS_TOKEN_CREATE,
    ACCOUNTS_TOKEN_REVOKE,
    ACCOUNTS_TOKENS,
    ACCOUNTS_USER_CREATE,
    ACCOUNTS_USER_GET,
    ACCOUNTS_USER_UPDATE,
    ACCOUNTS_USERS,
    AppTokens,
    LatestExpiry,
    Users,
)
from appliance.protocol.common import (
    Changed,
    Empty,
    MetricFamily,
    MetricSample,
    ServiceHealth,
    ServiceState,
    Store,
)
from appliance.protocol.devices import (
    STORE_AVAILABILITY,
    STORE_DEVICE,
    STORE_DEVICE_EVENTS,
    STORE_DEVICES,
    STORE_EVENTS,
    STORE_EVENTS_AFTER,
    STORE_OUTBOX_ADD,
    STORE_OUTBOX_DONE,
    STORE_OUTBOX_NEXT,
    STORE_OUTBOX_STATS,
    STORE_QUARANTINE,
    STORE_QUARANTINE_ADD,
    DeviceEvents,
    EventBatch,
    EventsStored,
    OutboxItem,
    OutboxNext,
)
from appliance.protocol.schedules import STORE_SCHEDULE_DELETE, STORE_SCHEDULE_PUT, STORE_SCHEDULES
from appliance.protocol.site import (
    STORE_ENTITIES,
    STORE_ENTITY,
    STORE_ENTITY_HISTORY,
    STORE_ENTITY_PUT,
    STORE_ENTITY_STATES,
    StatesStored,
)
from appliance.protocol.store import (
    STORE_ARCHIVE,
    STORE_ARCHIVE_FIND,
    STORE_AUDIT_APPEND,
    STORE_AUDIT_LIST,
    STORE_AUDIT_VERIFY,
    STORE_BACKUP,
    STORE_FORGET,
    STORE_GET,
    STORE_INGEST,
    STORE_OWNER,
    STORE_OWNER_CLAIM,
    STORE_RECALL,
    STORE_REMEMBER,
    STORE_RESTORE,
    STORE_RING_APPEND,
    STORE_RING_READ,
    STORE_ROTATE_KEY,
    STORE_SET_VECTORS,
    STORE_STATS,
    STORE_UNEMBEDDED,
    ArchivedRecords,
    ArchiveProgress,
    ArchiveQuery,
    ArchiveRequest,
    AuditIn,
    AuditRow,
    AuditVerdict,
    BackupDone,
    BackupRequest,
    DocumentIn,
    DocumentStored,
    EmbeddingsIn,
    EmbeddingsStored,
    Forgotten,
    KeyRotated,
    MemoryId,
    MemoryIn,
    MemoryRecord,
    OwnerOf,
    RecallRequest,
    RecallResponse,
    Restored,
    RestoreRequest,
    RingEntries,
    RingEntry,
    RingEntryIn,
    RingRead,
    StoreStats,
    Unembedded,
    UnembeddedItem,
    UnembeddedRequest,
)
from appliance.protocol.tasks import (
    STORE_SCHEDULE_FIRE,
    STORE_SCHEDULE_MARK,
    STORE_SCHEDULE_MARKS,
    STORE_TASK_CREATE,
    STORE_TASK_GET,
    STORE_TASK_NEXT,
    STORE_TASK_STEP,
    STORE_TASK_UPDATE,
    STORE_TASKS,
    STORE_TASKS_RECOVER,
    Fired,
    ScheduleMarks,
)
from appliance.runtime.notify import extending_start_timeout
from appliance.runtime.service import Service
from appliance.store.db import MemoryDB
from appliance.store.errors import Conflict, Missing, StoreError
from appliance.store.rollback import PRE_UPDATE_BACKUP, restore_after_rollback

T = TypeVar("T")
PURGE_INTERVAL_S = 60.0
_DONE = object()


def _overflow(db: MemoryDB, *, device: str, keep: int) -> int:
    return db.archive.overflow(device, keep)


class StoreService(Service[Store]):
    name = "store"

    db: MemoryDB | None = None
    _purger: asyncio.Task[None] | None = None
    _indexer: asyncio.Task[None] | None = None

    def __init__(self, config: ApplianceConfig) -> None:
        super().__init__(config)
        self._sqlite = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._job = asyncio.Lock()  # one archive or backup at a time
        self.over_quota: dict[str, int] = {}  # events each device had archived by its quota, since start
        self.skipped_late = 0  # requests not done: their callers had stopped waiting (ipc/deadline.py)
        self._skips_logged = (0, 0.0)  # the count when last logged, and when

    def register(self, ipc: IpcServer[Store]) -> None:
        ipc.add(STORE_REMEMBER, self.remember)
        ipc.add(STORE_GET, self.get)
        ipc.add(STORE_FORGET, self.forget)
        ipc.add(STORE_RECALL, self.recall)
        ipc.add(STORE_RING_APPEND, self.ring_append)
        ipc.add(STORE_RING_READ, self.ring_read)
        ipc.add(STORE_INGEST, self.ingest)
        ipc.add_stream(STORE_ARCHIVE, self.archive)
        ipc.add(STORE_ARCHIVE_FIND, self.archive_find)
        ipc.add(STORE_RESTORE, self.restore)
        ipc.add(STORE_STATS, self.stats)
        ipc.add(STORE_AUDIT_APPEND, self.audit_append)
        ipc.add(STORE_AUDIT_VERIFY, self.audit_verify)
        ipc.add(STORE_BACKUP, self.backup)
        ipc.add(STORE_ROTATE_KEY, self.rotate_key)
        ipc.add(STORE_UNEMBEDDED, self.unembedded)
        ipc.add(STORE_SET_VECTORS, self.set_vectors)
        ipc.add(STORE_AUDIT_LIST, lambda query: self._on_db(lambda db: db.audit.page(query)))
        self._register_accounts(ipc)
        self._register_devices(ipc)
        self._register_tasks(ipc)
        self._register_owners(ipc)
        self._register_site(ipc)

    def _register_accounts(self, ipc: IpcServer[Store]) -> None:
        """Accounts (appliance/store/accounts.py): each endpoint one call on the SQLite thread."""
        ipc.add(ACCOUNTS_USER_GET, lambda r: self._on_db(lambda db: db.accounts.user(r.username)))
        ipc.add(ACCOUNTS_USERS, lambda _: self._on_db(lambda db: Users(users=db.accounts.users())))
        ipc.add(ACCOUNTS_USER_CREATE, lambda r: self._on_db(lambda db: db.accounts.create_user(r)))
        ipc.add(ACCOUNTS_USER_UPDATE, lambda r: self._on_db(lambda db: db.accounts.update_user(r)))
        ipc.add(ACCOUNTS_LOGIN_RESULT, lambda r: self._on_db(lambda db: db.accounts.record_login(r.username, r.ok)))
        ipc.add(ACCOUNTS_REFRESH_ISSUE, lambda r: self._on_db(
            lambda db: Changed(changed=db.accounts.issue_refresh(r))))
        ipc.add(ACCOUNTS_REFRESH_USE, lambda r: self._on_db(lambda db: db.accounts.use_refresh(r.jti)))
        ipc.add(ACCOUNTS_REFRESH_REVOKE, lambda r: self._on_db(
            lambda db: Changed(changed=db.accounts.revoke_family(r.family))))
        ipc.add(ACCOUNTS_TOKEN_CREATE, lambda r: self._on_db(lambda db: db.accounts.create_token(r)))
        ipc.add(ACCOUNTS_TOKENS, lambda _: self._on_db(lambda db: AppTokens(tokens=db.accounts.tokens())))
        ipc.add(ACCOUNTS_TOKEN_REVOKE, lambda r: self._on_db(lambda db: db.accounts.revoke_token(r.jti)))
        ipc.add(ACCOUNTS_KEY_EXPIRY, lambda r: self._on_db(
            lambda db: LatestExpiry(expires_at=db.accounts.latest_expiry(r.kid))))
        ipc.add(ACCOUNTS_REVOKE, lambda r: self._on_db(
            lambda db: Changed(changed=db.accounts.add_revocation(r.jti, r.expires_at))))
        ipc.add(ACCOUNTS_REVOCATIONS, lambda r: self._on_db(lambda db: db.accounts.revocations(r.after)))

    async def _on_db(self, work: Callable[[MemoryDB], T]) -> T:
        db = self.db
        if db is None:
            raise Unavailable(Phrase("store.not_open"))
        deadline = ipc_deadline.current()  # read here: the SQLite thread does not see the request's context

        def unless_late(db: MemoryDB) -> T:
            if ipc_deadline.passed(deadline):
                self.skipped_late += 1  # only this one thread writes it
                raise DeadlinePassed("the caller stopped waiting before the store got to this request")
            return work(db)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._sqlite, unless_late, db)
        except DeadlinePassed:
            self._log_skips()
            raise
        except Missing as exc:
            raise NotFound(said(exc)) from None
        except Conflict as exc:
            raise IpcConflict(said(exc)) from None
        except StoreError as exc:
            raise BadRequest(said(exc)) from None

    def _log_skips(self) -> None:
        """A warning at most once a minute: each skip is a caller that timed out and logged it."""
        count, at = self._skips_logged
        if time.monotonic() - at >= 60:
            self.log.warning("the store fell behind: %d requests skipped since the last report because their "
                             "callers had stopped waiting (%d since start)", self.skipped_late - count,
                             self.skipped_late, extra={"SKIPPED_LATE": self.skipped_late})
            self._skips_logged = (self.skipped_late, time.monotonic())

    async def _steps(self, steps: Generator[T, None, None]) -> AsyncGenerator[T, None]:
        """Run a generator's steps one by one on the SQLite thread.

        If the caller goes away (or times out) the generator is closed on that thread too, so a
        half-made backup is removed and its SQLite handles are released at once.
        """
        try:
            while (item := await self._on_db(lambda _db: next(steps, _DONE))) is not _DONE:
                yield item  # type: ignore[misc]
        finally:
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._sqlite, steps.close))

    async def start(self) -> None:
        path = self.config.memory_dir / "memory.db"
        loop = asyncio.get_running_loop()
        self.set_state(self.state, Phrase("store.opening", path=str(path)))
        try:
            restored = await loop.run_in_executor(self._sqlite, restore_after_rollback, path,
                                                  self.config.paths.state_dir / PRE_UPDATE_BACKUP)
            if restored is not None:
                self.log.warning("%s", restored)
            # The index is rebuilt from the file at open: ~2.6 s per million memories from the page
            # cache, longer from a cold eMMC, so ask systemd for time while it runs.
            async with extending_start_timeout():
                self.db = await loop.run_in_executor(self._sqlite, functools.partial(
                    MemoryDB, path, self.config.memory, self.config.memory_key_path, self.config.security,
                    self.config.mqtt, vector_model=self.config.embedding_identity))
        except (StoreError, apsw.Error, OSError) as exc:
            # Stay up and say why: a restart loop would not fix a wrong file, a bad key or a full disk.
            self.set_state(ServiceState.DEGRADED, Phrase("store.cannot_open", path=str(path), why=str(exc)))
            return
        stats = await self._on_db(MemoryDB.stats)
        self._purger = asyncio.create_task(self._purge_forgotten(), name="purge-forgotten")
        self._indexer = asyncio.create_task(self._index_text(), name="index-text")
        self.set_state(ServiceState.READY, Phrase("store.ready", memories=stats.memories, archived=stats.archived),
                       self.db.longterm.describe_index())

    async def _index_text(self) -> None:
        """The full-text rebuild a migration left, a batch at a time between requests (textindex.py)."""
        rebuild = self.db.longterm.text_rebuild if self.db is not None else None
        if rebuild is None:
            return
        self.log.info("%s; resumable, searchable meanwhile", rebuild.describe())
        try:
            more = True
            while more:  # each batch is one unit of work on the SQLite thread: requests go between
                more = await self._on_db(MemoryDB.index_text)
        except (IpcError, apsw.Error) as exc:  # left for the next start, which resumes at the cursor
            self.log.error("the full-text rebuild stopped at memory %d: %s", rebuild.next_id, exc)
            return
        self.log.info("full-text index rebuilt: %d memories in %.1f s", rebuild.done,
                      time.monotonic() - rebuild.started)

    def health(self) -> ServiceHealth:
        """The state as set, plus the progress of a text index rebuild or a re-embedding (never logged)."""
        health = super().health()
        longterm = self.db.longterm if self.db is not None else None
        jobs = (longterm.text_rebuild, longterm.reembed) if longterm else ()
        work: list[str | Phrase] = [job.describe() for job in jobs if job]
        if self.skipped_late:
            work.append(Phrase("store.skipped_late", n=f"{self.skipped_late:,}"))
        if self.over_quota:
            most = sorted(self.over_quota.items(), key=lambda item: -item[1])[:3]
            work.append(Phrase("store.over_quota", quota=f"{self.config.mqtt.device_quota_events:,}",
                               n=f"{sum(self.over_quota.values()):,}", most=", ".join(f"{d} {n:,}" for d, n in most)))
        return health.extended(*work)

    def _register_devices(self, ipc: IpcServer[Store]) -> None:
        """Devices (appliance/store/devices.py): events, registry, quarantine, outbox."""
        max_items = self.config.mqtt.uplink.max_items

        async def ingest(batch: EventBatch) -> EventsStored:
            stored, duplicates = await self._on_db(lambda db: db.devices.ingest(batch.events))
            help_text = "device events by outcome (a duplicate is a redelivery already stored)"
            self.metrics.inc("appliance_store_device_events_total", help_text, stored, outcome="stored")
            self.metrics.inc("appliance_store_device_events_total", help_text, duplicates, outcome="duplicate")
            return EventsStored(stored=stored, duplicates=duplicates)

        async def next_item(request: OutboxNext) -> OutboxItem:
            item = await self._on_db(lambda db: db.devices.outbox_next(request.target))
            if item is None:
                raise NotFound(Phrase("store.outbox_empty", target=request.target))
            return item

        ipc.add(STORE_EVENTS, ingest)
        ipc.add(STORE_AVAILABILITY, lambda r: self._on_db(
            lambda db: Changed(changed=db.devices.availability(r.device, r.online, r.at))))
        ipc.add(STORE_DEVICES, lambda r: self._on_db(lambda db: db.devices.devices(r)))
        ipc.add(STORE_DEVICE, lambda r: self._on_db(lambda db: db.devices.device(r.device_id)))
        ipc.add(STORE_DEVICE_EVENTS, lambda r: self._on_db(
            lambda db: DeviceEvents(records=db.devices.recent_events(r.device_id, r.limit))))
        ipc.add(STORE_EVENTS_AFTER, lambda r: self._on_db(lambda db: db.devices.events_after(r)))
        ipc.add(STORE_QUARANTINE_ADD, lambda r: self._on_db(
            lambda db: Changed(changed=db.devices.quarantine(r))))
        ipc.add(STORE_QUARANTINE, lambda r: self._on_db(lambda db: db.devices.quarantined(r)))
        ipc.add(STORE_OUTBOX_ADD, lambda r: self._on_db(lambda db: db.devices.outbox_add(r, max_items)))
        ipc.add(STORE_OUTBOX_NEXT, next_item)
        ipc.add(STORE_OUTBOX_DONE, lambda r: self._on_db(lambda db: Changed(changed=db.devices.outbox_done(r))))
        ipc.add(STORE_OUTBOX_STATS, lambda _: self._on_db(lambda db: db.devices.outbox_stats()))

    def _register_site(self, ipc: IpcServer[Store]) -> None:
        """The site's entities (appliance/store/site.py): announced configs, states, history."""
        ipc.add(STORE_ENTITY_PUT, lambda r: self._on_db(lambda db: Changed(changed=db.site.put(r))))
        ipc.add(STORE_ENTITY_STATES, lambda r: self._on_db(lambda db: StatesStored(changed=db.site.states(r.states))))
        ipc.add(STORE_ENTITIES, lambda r: self._on_db(lambda db: db.site.entities(r)))
        ipc.add(STORE_ENTITY, lambda r: self._on_db(lambda db: db.site.entity(r.entity_id)))
        ipc.add(STORE_ENTITY_HISTORY, lambda r: self._on_db(lambda db: db.site.history(r)))

    def _register_owners(self, ipc: IpcServer[Store]) -> None:
        """Owners of conversations and uploaded documents (the command layer's owner rules)."""
        ipc.add(STORE_OWNER_CLAIM, lambda r: self._on_db(lambda db: OwnerOf(owner=db.claim(r.resource, r.key,
                                                                                         r.owner))))
        ipc.add(STORE_OWNER, lambda r: self._on_db(lambda db: OwnerOf(owner=db.owner(r.resource, r.key))))

    def _register_tasks(self, ipc: IpcServer[Store]) -> None:
        """Tasks (appliance/store/tasks.py): the durable queue, step logs, schedule marks."""
        ipc.add(STORE_TASK_CREATE, lambda r: self._on_db(lambda db: db.tasks.create(r)))
        ipc.add(STORE_TASK_GET, lambda r: self._on_db(lambda db: db.tasks.detail(r)))
        ipc.add(STORE_TASKS, lambda r: self._on_db(lambda db: db.tasks.list(r)))
        ipc.add(STORE_TASK_UPDATE, lambda r: self._on_db(lambda db: db.tasks.update(r)))
        ipc.add(STORE_TASK_STEP, lambda r: self._on_db(lambda db: Changed(changed=db.tasks.step(r))))
        ipc.add(STORE_TASK_NEXT, lambda _: self._on_db(lambda db: db.tasks.due()))
        ipc.add(STORE_TASKS_RECOVER, lambda request: self._on_db(lambda db: db.tasks.recover(request.kinds)))
        ipc.add(STORE_SCHEDULE_MARK, lambda r: self._on_db(lambda db: Changed(changed=db.tasks.mark(r.name,
                                                                                                r.last_fire))))
        ipc.add(STORE_SCHEDULE_FIRE, lambda r: self._on_db(lambda db: Fired(created=db.tasks.fire(r.fires))))
        ipc.add(STORE_SCHEDULE_MARKS, lambda _: self._on_db(lambda db: ScheduleMarks(marks=db.tasks.marks())))
        ipc.add(STORE_SCHEDULES, lambda _: self._on_db(lambda db: db.tasks.schedules()))
        ipc.add(STORE_SCHEDULE_PUT, lambda r: self._on_db(lambda db: db.tasks.put_schedule(r)))
        ipc.add(STORE_SCHEDULE_DELETE, lambda r: self._on_db(lambda db: Changed(changed=db.tasks.delete_schedule(
            r.name))))

    async def collect_metrics(self) -> list[MetricFamily]:
        if self.db is None:
            return []
        stats = await self._on_db(MemoryDB.stats)
        counts = {"memories": "memories (not archived, not forgotten)", "vectors": "memories with a vector",
                  "archived": "memories in archive segments", "forgotten": "forgotten memories (tombstones)",
                  "ring_entries": "short-term ring entries", "audit_rows": "audit log rows",
                  "file_bytes": "size of the memory file", "wal_bytes": "size of its write-ahead log"}
        values = stats.model_dump()
        return [MetricFamily(name=f"appliance_store_{name}", kind="gauge", help=text,
                             samples=[MetricSample(value=values[name])]) for name, text in counts.items()] + [
            MetricFamily(name="appliance_store_skipped_late_total", kind="counter",
                         help="requests not done because their callers had stopped waiting",
                         samples=[MetricSample(value=self.skipped_late)])]

    async def _purge_forgotten(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL_S)
            if self.db is not None and self.db.longterm.purge_due:
                await self._on_db(lambda db: db.longterm.purge())
                await self._on_db(MemoryDB.checkpoint)
            if self.db is not None:
                await self._enforce_device_quota()
                await self._on_db(lambda db: db.devices.prune())
                await self._on_db(lambda db: db.site.prune(self.config.site.history_days * 86_400))

    async def _enforce_device_quota(self) -> None:
        """mqtt.device_quota_events: a device's oldest events beyond it go to the archive, oldest first,
        a segment per unit of work (never while an archive run or a backup holds the job lock)."""
        quota = self.config.mqtt.device_quota_events
        if self._job.locked():
            return
        async with self._job:
            for device in await self._on_db(lambda db: db.devices_over_quota(quota)):
                moved = 0
                try:
                    while step := await self._on_db(functools.partial(_overflow, device=device, keep=quota)):
                        moved += step
                except (IpcError, apsw.Error) as exc:  # the minute loop goes on; the next round tries again
                    self.log.error("device %s: its events past the quota could not be archived: %s", device, exc)
                if moved:
                    self.over_quota[device] = self.over_quota.get(device, 0) + moved
                    self.log.warning("device %s holds more than %d events: its %d oldest went to the archive",
                                     device, quota, moved, extra={"DEVICE_ID": device})

    async def stop(self) -> None:
        for task in (self._purger, self._indexer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.db is not None:
            await asyncio.get_running_loop().run_in_executor(self._sqlite, self.db.close)
            self.db = None
        self._sqlite.shutdown(wait=True)

    async def remember(self, memory: MemoryIn) -> MemoryId:
        return MemoryId(id=await self._on_db(lambda db: db.longterm.remember(memory)))

    async def get(self, request: MemoryId) -> MemoryRecord:
        record = await self._on_db(lambda db: db.longterm.get(request.id))
        if record is None:
            raise NotFound(Phrase("memory.not_found", id=request.id))
        return record

    async def forget(self, request: MemoryId) -> Forgotten:
        done = await self._on_db(lambda db: db.longterm.forget(request.id))
        if done is None:
            raise NotFound(Phrase("memory.not_found", id=request.id))
        return Forgotten(id=request.id, forgotten=done)

    async def recall(self, request: RecallRequest) -> RecallResponse:
        return await self._on_db(lambda db: db.recall(request))

    async def ring_append(self, entry: RingEntryIn) -> RingEntry:
        return await self._on_db(lambda db: db.ring.append(entry))

    async def ring_read(self, request: RingRead) -> RingEntries:
        return RingEntries(entries=await self._on_db(lambda db: db.ring.read(request.conversation, request.k)))

    async def ingest(self, document: DocumentIn) -> DocumentStored:
        return await self._on_db(lambda db: db.longterm.ingest(document))

    async def archive(self, request: ArchiveRequest) -> AsyncGenerator[ArchiveProgress, None]:
        days = request.older_than_days
        older_than_s = (self.config.memory.archive_after_days if days is None else days) * 86_400
        if self.db is None:
            raise Unavailable(Phrase("store.not_open"))
        async with self._job:
            started = time.monotonic()
            last = None
            async for progress in self._steps(self.db.archive.steps(older_than_s)):
                last = progress
                yield progress
            if last is not None and last.segments:
                self.log.info("archived %d memories into %d segments in %.1f s (%d -> %d bytes)", last.done,
                              last.segments, time.monotonic() - started, last.raw_bytes, last.stored_bytes)

    async def archive_find(self, query: ArchiveQuery) -> ArchivedRecords:
        return ArchivedRecords(records=await self._on_db(lambda db: db.archive.find(query)))

    async def restore(self, request: RestoreRequest) -> Restored:
        return Restored(restored=await self._on_db(lambda db: db.archive.restore(request.ids)))

    async def stats(self, _: Empty) -> StoreStats:
        return await self._on_db(MemoryDB.stats)

    async def audit_append(self, entry: AuditIn) -> AuditRow:
        return await self._on_db(lambda db: db.audit.append(entry))

    async def audit_verify(self, _: Empty) -> AuditVerdict:
        return await self._on_db(lambda db: db.audit.verify())

    async def backup(self, request: BackupRequest) -> BackupDone:
        if self.db is None:
            raise Unavailable(Phrase("store.not_open"))
        target = Path(request.path)
        started = time.monotonic()
        async with self._job:
            async for _ in self._steps(self.db.backup_steps(target)):
                pass
        size = await self._on_db(lambda _db: target.stat().st_size)
        pages = await self._on_db(MemoryDB.page_count)
        self.log.info("backup written to %s (%d bytes)", target, size)
        return BackupDone(path=str(target), bytes=size, pages=pages, took_s=time.monotonic() - started)

    async def rotate_key(self, _: Empty) -> KeyRotated:
        rotated = await self._on_db(MemoryDB.rotate_key)
        self.log.info("memory key rotated to %s; %d values re-encrypted", rotated.key_id, rotated.reencrypted)
        return rotated

    async def unembedded(self, request: UnembeddedRequest) -> Unembedded:
        rows = await self._on_db(lambda db: db.longterm.unembedded(request.limit))
        return Unembedded(items=[UnembeddedItem(id=i, text=t) for i, t in rows])

    async def set_vectors(self, request: EmbeddingsIn) -> EmbeddingsStored:
        stored = await self._on_db(lambda db: db.longterm.set_vectors(request.ids, request.embeddings))
        return EmbeddingsStored(stored=stored)
